"""CAMPPlus x-vector speaker encoder of S3Gen (`speaker_encoder.` in the checkpoint).

Pipeline: Kaldi-style log-mel fbank (re-implemented on torch, matching
`torchaudio.compliance.kaldi.fbank` defaults) minus its time mean -> 2-D conv front
("head") -> TDNN -> three densely connected CAM blocks with transit layers -> mean/std
pooling -> 1x1 projection + non-affine BatchNorm = 192-d embedding (not normalised).

Attribute names below are fixed by the official state-dict keys; everything else is ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-5


# --------------------------------------------------------------------------- front-end


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank options; the defaults are the ones CAMPPlus was trained with."""

    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemph: float = 0.97
    povey_power: float = 0.85  # Povey window = symmetric Hann ** 0.85
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means offset from Nyquist


def _frame_sizes(sample_rate: int, cfg: FbankConfig) -> tuple[int, int, int]:
    """-> (window samples, shift samples, FFT size). Same float arithmetic as Kaldi/torchaudio."""
    win = int(sample_rate * cfg.frame_length_ms * 0.001)
    hop = int(sample_rate * cfg.frame_shift_ms * 0.001)
    n_fft = 1 << max(win - 1, 0).bit_length()  # round up to a power of two
    return win, hop, n_fft


def _kaldi_mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float) -> Tensor:
    """(num_bins, n_fft // 2 + 1) triangular filters, equally spaced on Kaldi's mel scale.

    The Nyquist column is zero: Kaldi builds its banks over the first n_fft/2 bins only.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"bad mel range [{low_freq}, {high}] Hz for sample rate {sample_rate}")
    lo_mel = 1127.0 * math.log(1.0 + low_freq / 700.0)
    hi_mel = 1127.0 * math.log(1.0 + high / 700.0)
    step = (hi_mel - lo_mel) / (num_bins + 1)
    # float32 throughout, like the reference front-end (bins near the log floor are rounding-sensitive).
    edges = lo_mel + step * torch.arange(num_bins + 2, dtype=torch.float32, device="cpu")  # left/centre/right points
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float32, device="cpu") * (sample_rate / n_fft))[None, :]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    banks = torch.minimum(rising, falling).clamp_min(0.0)
    return F.pad(banks, (0, 1))


@lru_cache(maxsize=8)
def _povey_window(length: int, power: float) -> Tensor:
    return torch.hann_window(length, periodic=False, dtype=torch.float32, device="cpu").pow(power)


def kaldi_fbank(wav: Tensor, sample_rate: int = 16000, num_mel_bins: int = 80,
                cfg: FbankConfig = FbankConfig()) -> Tensor:
    """(N,) float waveform (any scale; used as given) -> (frames, num_mel_bins) log mel energies.

    Equivalent to `torchaudio.compliance.kaldi.fbank(wav[None], num_mel_bins=...)` with every
    other option at its default: snip_edges, no dither, DC removal, pre-emphasis, Povey window,
    power spectrum, log with a float-eps floor, no energy column.
    """
    wav = torch.as_tensor(wav)
    if wav.dim() != 1:
        raise ValueError(f"kaldi_fbank expects a 1-D waveform, got shape {tuple(wav.shape)}")
    win, hop, n_fft = _frame_sizes(sample_rate, cfg)
    if wav.numel() < win:
        raise ValueError(f"waveform has {wav.numel()} samples; at least one {cfg.frame_length_ms:g} ms frame "
                         f"({win} samples at {sample_rate} Hz) is needed")
    frames = wav.to(torch.float32).unfold(0, win, hop)  # (n_frames, win), only whole frames
    frames = frames - frames.mean(dim=1, keepdim=True)
    # Pre-emphasis inside each frame; the first sample is paired with itself.
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - cfg.preemph * previous) * _povey_window(win, cfg.povey_power).to(frames.device)
    spectrum = torch.fft.rfft(frames, n=n_fft)  # zero-padded to n_fft on the right
    power = spectrum.real.square() + spectrum.imag.square()
    banks = kaldi_mel_banks(num_mel_bins, n_fft, sample_rate, cfg.low_freq, cfg.high_freq).to(power.device)
    energies = power @ banks.T
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


# --------------------------------------------------------------------------- network


@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80
    embedding_size: int = 192
    head_channels: int = 32  # 2-D conv channels; the head folds feat_dim / 8 freq rows into them
    init_channels: int = 128
    growth_rate: int = 32  # channels each dense layer adds
    bottleneck_mult: int = 4  # dense-layer bottleneck = bottleneck_mult * growth_rate
    block_layers: tuple[int, ...] = (12, 24, 16)
    block_dilations: tuple[int, ...] = (1, 2, 2)
    kernel_size: int = 3
    segment_frames: int = 100  # CAM segment-pooling length
    sample_rate: int = 16000


class BnRelu(nn.Module):
    """BatchNorm1d (+ ReLU). Holds its norm as `.batchnorm` to match the checkpoint keys."""

    def __init__(self, channels: int, relu: bool = True, affine: bool = True):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, eps=BN_EPS, affine=affine)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.batchnorm(x)
        return F.relu(x) if self.relu else x


class ResBlock2d(nn.Module):
    """Two 3x3 convs with a residual; stride applies to the frequency axis only."""

    def __init__(self, in_ch: int, out_ch: int, freq_stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=(freq_stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        # Projection path only when the shape changes (keys shortcut.0 / shortcut.1).
        self.shortcut: nn.Module | None = None
        if freq_stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=(freq_stride, 1), bias=False),
                                          nn.BatchNorm2d(out_ch, eps=BN_EPS))

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + skip)


class ConvHead(nn.Module):
    """2-D front: (B, F, T) -> (B, C * F/8, T). Frequency is downsampled 8x, time kept."""

    def __init__(self, channels: int, feat_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.layer1 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
        self.layer2 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.out_channels = channels * math.ceil(math.ceil(math.ceil(feat_dim / 2) / 2) / 2)

    def forward(self, feats: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(feats.unsqueeze(1))))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))  # (B, C, F/8, T)
        return x.flatten(1, 2)


class TDNN(nn.Module):
    """Strided 1-D conv with 'same'-style padding, then BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.nonlinear = BnRelu(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlinear(self.linear(x))


class ContextMask(nn.Module):
    """Context-aware masking: a local dilated conv gated by a sigmoid of utterance + segment context."""

    def __init__(self, channels: int, out_ch: int, kernel: int, dilation: int, segment: int):
        super().__init__()
        self.segment = segment
        self.linear_local = nn.Conv1d(channels, out_ch, kernel, padding=(kernel // 2) * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(channels, channels // 2, 1)
        self.linear2 = nn.Conv1d(channels // 2, out_ch, 1)

    def segment_means(self, x: Tensor) -> Tensor:
        """Mean over consecutive `segment`-frame chunks (last chunk may be short), broadcast back per frame."""
        t = x.shape[-1]
        pooled = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)  # partial chunk: own length
        return pooled.repeat_interleave(self.segment, dim=-1)[..., :t]

    def forward(self, x: Tensor) -> Tensor:
        context = x.mean(dim=-1, keepdim=True) + self.segment_means(x)
        gate = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * gate


class DenseLayer(nn.Module):
    """BN-ReLU -> 1x1 bottleneck -> BN-ReLU -> context-masked conv, producing `growth` new channels."""

    def __init__(self, in_ch: int, growth: int, bottleneck: int, kernel: int, dilation: int, segment: int):
        super().__init__()
        self.nonlinear1 = BnRelu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bottleneck, 1, bias=False)
        self.nonlinear2 = BnRelu(bottleneck)
        self.cam_layer = ContextMask(bottleneck, growth, kernel, dilation, segment)

    def forward(self, x: Tensor) -> Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class DenseBlock(nn.Module):
    """Each layer sees the concatenation of the block input and all earlier layer outputs."""

    def __init__(self, n_layers: int, in_ch: int, growth: int, bottleneck: int, kernel: int, dilation: int,
                 segment: int):
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"tdnnd{i + 1}",
                            DenseLayer(in_ch + i * growth, growth, bottleneck, kernel, dilation, segment))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transit(nn.Module):
    """BN-ReLU then a 1x1 conv that compresses the channels between dense blocks."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.nonlinear = BnRelu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.nonlinear(x))


class Embedding(nn.Module):
    """Pooled statistics -> embedding: 1x1 conv (a linear map) and a BatchNorm without affine."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = BnRelu(out_ch, relu=False, affine=False)

    def forward(self, stats: Tensor) -> Tensor:
        return self.nonlinear(self.linear(stats.unsqueeze(-1))).squeeze(-1)


def mean_std_pool(x: Tensor) -> Tensor:
    """(B, C, T) -> (B, 2C): time mean and unbiased time standard deviation."""
    return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class XVectorTrunk(nn.Module):
    """Everything after the 2-D head; children named as in the checkpoint (`xvector.*`)."""

    def __init__(self, in_ch: int, cfg: CAMPPlusConfig):
        super().__init__()
        self.tdnn = TDNN(in_ch, cfg.init_channels, kernel=5, stride=2)
        ch = cfg.init_channels
        bottleneck = cfg.bottleneck_mult * cfg.growth_rate
        for i, (n_layers, dilation) in enumerate(zip(cfg.block_layers, cfg.block_dilations), start=1):
            self.add_module(f"block{i}", DenseBlock(n_layers, ch, cfg.growth_rate, bottleneck, cfg.kernel_size,
                                                    dilation, cfg.segment_frames))
            ch += n_layers * cfg.growth_rate
            self.add_module(f"transit{i}", Transit(ch, ch // 2))
            ch //= 2
        self.out_nonlinear = BnRelu(ch)
        self.dense = Embedding(2 * ch, cfg.embedding_size)
        self.n_blocks = len(cfg.block_layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.tdnn(x)
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        return self.dense(mean_std_pool(self.out_nonlinear(x)))


def _as_waveforms(wavs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(wavs, Tensor):
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, N) or (N,), got {tuple(wavs.shape)}")
        items = list(wavs)
    else:
        items = [torch.as_tensor(w) for w in wavs]
    if not items:
        raise ValueError("no waveforms given")
    for i, w in enumerate(items):
        if w.dim() != 1:
            raise ValueError(f"waveform {i} must be 1-D, got shape {tuple(w.shape)}")
        if w.numel() == 0:
            raise ValueError(f"waveform {i} is empty")
    return items


class CAMPPlus(nn.Module):
    """CAM++ speaker verification network producing S3Gen's 192-d x-vector."""

    MIN_FRAMES = 3  # the stride-2 TDNN must leave >= 2 frames for an unbiased std

    def __init__(self, cfg: CAMPPlusConfig = CAMPPlusConfig()):
        super().__init__()
        self.cfg = cfg
        self.head = ConvHead(cfg.head_channels, cfg.feat_dim)
        self.xvector = XVectorTrunk(self.head.out_channels, cfg)

    def forward(self, feats: Tensor) -> Tensor:
        """(B, T, feat_dim) mean-normalised fbank -> (B, embedding_size)."""
        if feats.dim() != 3 or feats.shape[-1] != self.cfg.feat_dim:
            raise ValueError(f"expected features (B, T, {self.cfg.feat_dim}), got {tuple(feats.shape)}")
        if feats.shape[1] < self.MIN_FRAMES:
            raise ValueError(f"{feats.shape[1]} fbank frames is too short for an x-vector "
                             f"(need {self.MIN_FRAMES}, i.e. about 45 ms of 16 kHz audio)")
        return self.xvector(self.head(feats.transpose(1, 2)))

    def features(self, wavs: Tensor | Sequence[Tensor]) -> Tensor:
        """Waveforms at 16 kHz -> (B, T_max, feat_dim) fbank minus its time mean, zero-padded at the end."""
        feats = []
        for w in _as_waveforms(wavs):
            fb = kaldi_fbank(w.to(torch.float32), self.cfg.sample_rate, self.cfg.feat_dim)
            feats.append(fb - fb.mean(dim=0, keepdim=True))
        return nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=0.0)

    @torch.no_grad()
    def inference(self, wav_16k: Tensor | Sequence[Tensor]) -> Tensor:
        """(B, N) tensor or list of (N_i,) waveforms in [-1, 1] at 16 kHz -> (B, embedding_size)."""
        feats = self.features(wav_16k)
        return self.forward(feats.to(self.xvector.dense.linear.weight.device))
