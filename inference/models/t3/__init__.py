from .cond_enc import T3Cond
from .config import T3Config
from .model import T3, T3Output
from .sampling import SamplingConfig

__all__ = ["T3", "T3Cond", "T3Config", "T3Output", "SamplingConfig"]
