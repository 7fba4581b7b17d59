from .config import VoiceEncoderConfig
from .model import VoiceEncoder

__all__ = ["VoiceEncoder", "VoiceEncoderConfig"]
