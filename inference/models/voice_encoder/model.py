"""Speaker embedding network: LSTM over 1.6 s mel windows, mean of the L2-normalised window outputs."""
from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import VoiceEncoderConfig
from .melspec import power_mel


def window_layout(n_frames: int, step: int, cfg: VoiceEncoderConfig) -> tuple[int, int]:
    """-> (number of windows, frames needed). A trailing window is kept if enough of it is real."""
    win = cfg.partial_frames
    n, rest = divmod(max(n_frames - win + step, 0), step)
    if n == 0 or (rest + win - step) / win >= cfg.min_coverage:
        n += 1
    return n, win + step * (n - 1)


@dataclass
class EmbeddingTrace:
    """Intermediates of one utterance, for parity checks and debugging."""

    trim_interval: tuple[int, int]
    mel: np.ndarray  # (frames, mels)
    partials: Tensor  # (windows, partial_frames, mels)
    partial_embeds: Tensor  # (windows, embed)


class VoiceEncoder(nn.Module):
    def __init__(self, cfg: VoiceEncoderConfig = VoiceEncoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.num_mels, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.embed_size)
        # Trained GE2E similarity scale/offset; unused at inference but part of the checkpoint.
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    def forward(self, mels: Tensor) -> Tensor:
        """(B, partial_frames, mels) -> (B, embed) L2-normalised window embeddings."""
        _, (hidden, _) = self.lstm(mels)
        return F.normalize(F.relu(self.proj(hidden[-1])), dim=1)

    def partials(self, mel: np.ndarray) -> Tensor:
        cfg = self.cfg
        step = int(np.round(cfg.sample_rate / cfg.rate / cfg.partial_frames))
        n, needed = window_layout(len(mel), step, cfg)
        if needed > len(mel):
            mel = np.concatenate([mel, np.zeros((needed - len(mel), cfg.num_mels), dtype=mel.dtype)])
        mel = torch.from_numpy(np.ascontiguousarray(mel[:needed], dtype=np.float32))
        return torch.stack([mel[i * step:i * step + cfg.partial_frames] for i in range(n)])

    @torch.inference_mode()
    def embed_utterance(self, wav: np.ndarray, sample_rate: int, trace: list | None = None) -> Tensor:
        """Mono waveform -> (embed,) L2-normalised utterance embedding.

        Leading/trailing silence is trimmed (top_db) first; an utterance with no sound left is an error.
        """
        cfg = self.cfg
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite samples")
        if sample_rate != cfg.sample_rate:
            wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=cfg.sample_rate)
        if not np.abs(wav).max(initial=0.0) > 0:
            raise ValueError("waveform is silent; cannot compute a speaker embedding")
        trimmed, interval = librosa.effects.trim(wav, top_db=cfg.trim_top_db)
        mel = power_mel(trimmed, cfg)
        windows = self.partials(mel)
        embeds = self(windows.to(self.device)).cpu()
        if trace is not None:
            trace.append(EmbeddingTrace((int(interval[0]), int(interval[1])), mel, windows, embeds))
        return F.normalize(embeds.mean(dim=0), dim=0)

    def embed_speaker(self, wavs: list[np.ndarray], sample_rate: int) -> Tensor:
        """Several utterances of one voice -> (1, embed), the mean of their utterance embeddings.

        Like the reference, the mean is not re-normalised: T3 was trained on exactly this vector.
        """
        return torch.stack([self.embed_utterance(w, sample_rate) for w in wavs]).mean(dim=0, keepdim=True)
