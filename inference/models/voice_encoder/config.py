from dataclasses import dataclass


@dataclass(frozen=True)
class VoiceEncoderConfig:
    """GE2E-style speaker encoder of Chatterbox (40-bin power mel at 16 kHz, 3-layer LSTM)."""

    sample_rate: int = 16000
    num_mels: int = 40
    n_fft: int = 400
    hop_size: int = 160
    win_size: int = 400
    fmin: float = 0.0
    fmax: float = 8000.0
    hidden_size: int = 256
    embed_size: int = 256
    num_layers: int = 3
    partial_frames: int = 160  # 1.6 s windows
    rate: float = 1.3  # windows per second of speech
    min_coverage: float = 0.8  # keep a last, partly padded window when it covers this much
    trim_top_db: float = 20.0
