"""S3 speech tokenizer v2: 16 kHz waveform -> 25 Hz discrete speech tokens (FSQ, 3**8 = 6561 codes).

Pipeline: 128-band log10 mel at 100 frames/s -> two stride-2 convolutions (25 frames/s) -> six
pre-norm transformer blocks whose attention carries rotary positions and an FSMN memory branch ->
Linear(1280 -> 8) -> each of the 8 dims rounded to {-1, 0, 1} -> base-3 digits of the token id.

Parameter and buffer names follow the `tokenizer.` subtree of the official S3Gen checkpoint.

Long input: the whole utterance is encoded in one pass (attention spans every frame). The
s3tokenizer package instead splits utterances over 30 s (3000 mel frames) into overlapping 30 s
windows and merges their tokens, so tokens of audio longer than 30 s differ from the reference.

Numerics: mel bins 7-8 decades below a frame's loudest bin keep the float32 FFT's rounding; MKL's
AVX-512 FFT kernels move them by ~3e-5 after the log compared with its generic path (which the
goldens used), well inside the kit's tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

WaveLike = Union[Tensor, np.ndarray]


@dataclass(frozen=True)
class S3TokenizerConfig:
    sample_rate: int = 16_000
    n_fft: int = 400
    hop: int = 160  # 100 mel frames per second
    n_mels: int = 128
    log_dynamic_range: float = 8.0  # decades kept below the loudest mel bin
    width: int = 1280
    heads: int = 20
    layers: int = 6
    mlp_ratio: int = 4
    fsmn_kernel: int = 31
    rope_theta: float = 10_000.0
    # s3tokenizer 0.2.0 (what the goldens and the released weights use); 0.3.0 switched to 1e-5.
    attn_norm_eps: float = 1e-6
    mlp_norm_eps: float = 1e-5
    fsq_dims: int = 8
    fsq_levels: int = 3
    fsq_shrink: float = 0.999  # applied to tanh before rounding; as float32 it is 0.9990000128746033

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def codebook_size(self) -> int:
        return self.fsq_levels ** self.fsq_dims

    @property
    def mel_frames_per_token(self) -> int:
        return 4  # two stride-2 convolutions


def slaney_mel_bank(cfg: S3TokenizerConfig) -> Tensor:
    """(n_mels, n_fft // 2 + 1) librosa Slaney filters over 0 .. sample_rate / 2."""
    bank = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                               fmin=0.0, fmax=cfg.sample_rate / 2)
    return torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))


def strided_length(lengths: Tensor) -> Tensor:
    """Frames left after a kernel-3, stride-2, padding-1 convolution."""
    return (lengths - 1) // 2 + 1


def valid_mask(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) bool, True on real frames."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def rotary_tables(length: int, head_dim: int, theta: float, device=None) -> tuple[Tensor, Tensor]:
    """cos/sin of shape (length, head_dim); the two halves of a head share one frequency list."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angle = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    angle = torch.cat([angle, angle], dim=-1)
    return angle.cos(), angle.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split rotary embedding. x: (B, T, H, D); cos/sin: (T, D)."""
    first, second = x.chunk(2, dim=-1)
    swapped = torch.cat([-second, first], dim=-1)
    return x * cos[:, None, :] + swapped * sin[:, None, :]


class FSMNAttention(nn.Module):
    """Multi-head self-attention plus a depthwise-convolution memory over the values."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.query = nn.Linear(w, w)
        self.key = nn.Linear(w, w, bias=False)
        self.value = nn.Linear(w, w)
        self.out = nn.Linear(w, w)
        self.fsmn_block = nn.Conv1d(w, w, cfg.fsmn_kernel, groups=w, bias=False)
        left = (cfg.fsmn_kernel - 1) // 2
        self.fsmn_pad = (left, cfg.fsmn_kernel - 1 - left)

    def memory(self, v: Tensor, keep: Tensor) -> Tensor:
        """v: (B, T, C), keep: (B, T, 1) float. Padding never leaks into real frames."""
        v = v * keep
        conv = self.fsmn_block(F.pad(v.transpose(1, 2), self.fsmn_pad)).transpose(1, 2)
        return (conv + v) * keep

    def forward(self, x: Tensor, keep: Tensor, key_bias: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, c = x.shape
        h = self.heads
        d = c // h
        q = rotate(self.query(x).view(b, t, h, d), cos, sin)
        k = rotate(self.key(x).view(b, t, h, d), cos, sin)
        v = self.value(x)
        mem = self.memory(v, keep)

        # Scaling q and k by d**-0.25 each (rather than the scores by d**-0.5) matches the reference rounding.
        scale = d ** -0.25
        q = q.transpose(1, 2) * scale  # (B, H, T, D)
        k = k.permute(0, 2, 3, 1) * scale  # (B, H, D, T)
        scores = q @ k + key_bias  # (B, H, T, T)
        weights = scores.softmax(dim=-1)
        ctx = (weights @ v.view(b, t, h, d).transpose(1, 2)).transpose(1, 2).reshape(b, t, c)
        return self.out(ctx) + mem


class EncoderBlock(nn.Module):
    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.attn = FSMNAttention(cfg)
        self.attn_ln = nn.LayerNorm(cfg.width, eps=cfg.attn_norm_eps)
        hidden = cfg.width * cfg.mlp_ratio
        self.mlp = nn.Sequential(nn.Linear(cfg.width, hidden), nn.GELU(), nn.Linear(hidden, cfg.width))
        self.mlp_ln = nn.LayerNorm(cfg.width, eps=cfg.mlp_norm_eps)

    def forward(self, x: Tensor, keep: Tensor, key_bias: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x), keep, key_bias, cos, sin)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """(B, n_mels, T) log-mel -> (B, ceil(T / 4), width) hidden states."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.layers))

    def forward(self, mel: Tensor, mel_lens: Tensor) -> tuple[Tensor, Tensor]:
        lens = mel_lens
        x = mel
        for conv in (self.conv1, self.conv2):
            # Zero the padding so a short item's last real frames see the same zeros as when alone.
            x = F.gelu(conv(x * valid_mask(lens, x.shape[-1])[:, None, :].to(x.dtype)))
            lens = strided_length(lens)
        x = x.transpose(1, 2)  # (B, T', width)

        real = valid_mask(lens, x.shape[1])
        keep = real[:, :, None].to(x.dtype)
        # Large finite negative (not -inf) so padded query rows stay finite.
        key_bias = torch.zeros(real.shape, dtype=x.dtype, device=x.device).masked_fill(~real, -1e10)
        key_bias = key_bias[:, None, None, :]
        cos, sin = rotary_tables(x.shape[1], self.cfg.head_dim, self.cfg.rope_theta, x.device)
        for block in self.blocks:
            x = block(x, keep, key_bias, cos, sin)
        return x, lens


class FSQProjection(nn.Module):
    """Linear(width -> 8) whose outputs are squashed and rounded to 3 levels each."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.project_down = nn.Linear(cfg.width, cfg.fsq_dims)

    def digits(self, proj: Tensor) -> Tensor:
        """(..., 8) projection -> (..., 8) int64 digits in {0, 1, 2}; torch.round is half-to-even."""
        half = (self.cfg.fsq_levels - 1) // 2
        return torch.round(torch.tanh(proj) * self.cfg.fsq_shrink).long() + half

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """-> (tokens (...,) int64, projection (..., 8))."""
        proj = self.project_down(hidden)
        place = self.cfg.fsq_levels ** torch.arange(self.cfg.fsq_dims, device=proj.device)
        return (self.digits(proj) * place).sum(dim=-1), proj


class FSQuantizer(nn.Module):
    """Holder kept only so parameter names read `quantizer._codebook.project_down.*`."""

    def __init__(self, cfg: S3TokenizerConfig):
        super().__init__()
        self._codebook = FSQProjection(cfg)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        return self._codebook(hidden)


def _as_waveforms(wavs) -> list[Tensor]:
    """Accept a list of 1-D waves (or (1, N) rows), or a 2-D (B, N) tensor/array of equal-length rows."""
    if isinstance(wavs, (Tensor, np.ndarray)):
        if wavs.ndim != 2:
            raise ValueError(f"pass a list of 1-D waveforms or a 2-D (batch, samples) array, got shape {tuple(wavs.shape)}")
        wavs = list(wavs)
    if not isinstance(wavs, Sequence) or len(wavs) == 0:
        raise ValueError("expected a non-empty list of 16 kHz waveforms")
    out = []
    for i, w in enumerate(wavs):
        w = torch.as_tensor(w)
        if w.ndim == 2 and w.shape[0] == 1:
            w = w[0]
        if w.ndim != 1:
            raise ValueError(f"waveform {i}: expected 1-D samples, got shape {tuple(w.shape)}")
        if not w.is_floating_point():
            raise ValueError(f"waveform {i}: expected float samples in [-1, 1], got {w.dtype}")
        out.append(w.float())
    return out


class S3Tokenizer(nn.Module):
    """16 kHz speech -> 25 Hz token ids in [0, 6561)."""

    def __init__(self, cfg: S3TokenizerConfig = S3TokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        # Both constants are in the official checkpoint (persistent buffers).
        self.register_buffer("_mel_filters", slaney_mel_bank(cfg))
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True))
        self.encoder = AudioEncoder(cfg)
        self.quantizer = FSQuantizer(cfg)

    @property
    def device(self) -> torch.device:
        return self.window.device

    @torch.no_grad()
    def reset_constants(self) -> None:
        """Recompute the mel bank and window, e.g. after a non-strict load from a file lacking them."""
        self._mel_filters.copy_(slaney_mel_bank(self.cfg))
        self.window.copy_(torch.hann_window(self.cfg.n_fft, periodic=True))

    def log_mel(self, wav: Tensor) -> Tensor:
        """(N,) samples -> (n_mels, N // hop) normalised log10 mel (the STFT's final frame is dropped)."""
        min_len = self.cfg.n_fft // 2 + 1  # reflect padding of the centred STFT needs this many
        if wav.ndim != 1 or wav.numel() < min_len:
            raise ValueError(f"waveform needs at least {min_len} samples (got shape {tuple(wav.shape)})")
        spec = torch.stft(wav.to(self.device), self.cfg.n_fft, self.cfg.hop, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec[:, :-1].abs() ** 2  # (freq, frames)
        log_spec = torch.log10((self._mel_filters @ power).clamp(min=1e-10))
        log_spec = torch.maximum(log_spec, log_spec.max() - self.cfg.log_dynamic_range)
        return (log_spec + 4.0) / 4.0

    def encode(self, mels: Tensor, mel_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n_mels, T) padded log-mels -> ((B, T', width) hidden, (B,) token lengths)."""
        return self.encoder(mels, mel_lens)

    def quantize(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T', width) -> ((B, T') int64 tokens, (B, T', 8) FSQ projection before tanh)."""
        return self.quantizer(hidden)

    @torch.no_grad()
    def forward(self, wavs: Sequence[WaveLike] | Tensor, max_len: int | None = None,
                trace: dict | None = None) -> tuple[Tensor, Tensor]:
        """Tokenise a batch of 16 kHz waveforms of any lengths.

        max_len: keep at most this many tokens per item (the log-mel is cut to 4 * max_len frames first).
        trace: if a dict, receives `log_mel` (B, n_mels, T), `mel_lens`, `encoder_out` (B, T', width)
        and `fsq_proj` (B, T', 8); entries past an item's length are padding.
        Returns (tokens (B, T') int64, zero past each length; token_lens (B,) int64).
        """
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer))
                                    or max_len <= 0):
            raise ValueError(f"max_len must be a positive integer or None, got {max_len!r}")
        waves = _as_waveforms(wavs)
        for i, w in enumerate(waves):
            if w.numel() == 0:
                raise ValueError(f"waveform {i} is empty")
            if not torch.isfinite(w).all():
                raise ValueError(f"waveform {i} contains NaN or infinite samples")

        mels = []
        for w in waves:
            mel = self.log_mel(w)
            if max_len is not None:
                mel = mel[:, : self.cfg.mel_frames_per_token * int(max_len)]
            mels.append(mel)
        mel_lens = torch.tensor([m.shape[1] for m in mels], dtype=torch.long, device=self.device)
        batch = torch.zeros(len(mels), self.cfg.n_mels, int(mel_lens.max()), device=self.device)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[1]] = m

        hidden, token_lens = self.encode(batch, mel_lens)
        tokens, proj = self.quantize(hidden)
        tokens = tokens.masked_fill(~valid_mask(token_lens, tokens.shape[1]), 0)
        if trace is not None:
            trace.update(log_mel=batch, mel_lens=mel_lens, encoder_out=hidden, fsq_proj=proj)
        return tokens, token_lens
