"""HiFT vocoder: 80-bin log-mel at 50 frames/s -> 24 kHz waveform.

A neural source-filter design: an F0 predictor drives a noisy harmonic (sine) excitation, whose short-time
spectrum is injected into a HiFi-GAN style upsampling network; the network ends in a tiny STFT
(n_fft 16, hop 4) whose magnitude and phase are inverted to samples.

All randomness (initial harmonic phases and the Gaussian noise of the source) is an explicit input or comes
from an explicit `torch.Generator`, so recorded draws can be replayed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from .f0_predictor import F0Predictor, F0PredictorConfig


@dataclass(frozen=True)
class HiFTConfig:
    """Defaults are the configuration of Chatterbox's S3Gen vocoder (`mel2wav.` in the checkpoint)."""

    sample_rate: int = 24000
    in_channels: int = 80
    base_channels: int = 512
    num_harmonics: int = 9  # fundamental + 8 overtones
    sine_amp: float = 0.1
    voiced_noise_std: float = 0.003  # unvoiced samples get sine_amp / 3 instead
    voiced_threshold: float = 10.0  # Hz
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernels: tuple[int, ...] = (16, 11, 7)
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    source_resblock_kernels: tuple[int, ...] = (7, 7, 11)  # one per upsampling stage
    source_resblock_dilations: tuple[int, ...] = (1, 3, 5)
    n_fft: int = 16
    hop: int = 4
    lrelu_slope: float = 0.1  # inside the stages; the last activation uses PyTorch's default 0.01
    audio_limit: float = 0.99
    f0: F0PredictorConfig = field(default_factory=F0PredictorConfig)

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsample_rates) * self.hop  # 480: 24 kHz / 50 Hz

    @property
    def spec_channels(self) -> int:
        return self.n_fft + 2  # (n_fft // 2 + 1) bins, real and imaginary parts


class VocoderOutput(NamedTuple):
    wav: Tensor  # (B, N) with N = T * samples_per_frame
    source: Tensor  # (B, 1, N) excitation fed to the filter network
    f0: Tensor  # (B, T) Hz
    uv: Tensor  # (B, 1, N) 1.0 where voiced


def remap_weight_norm_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename old-style weight-norm entries (`X.weight_g` / `X.weight_v`) to the parametrization names
    (`X.parametrizations.weight.original0` / `.original1`) our modules use; other keys pass unchanged."""
    renames = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = key
        for old, new in renames.items():
            if key.endswith(old):
                new_key = key[: -len(old)] + new
        if new_key in out:
            raise ValueError(f"state dict holds {new_key!r} twice (old and new weight-norm spelling)")
        out[new_key] = value
    return out


class Snake(nn.Module):
    """Per-channel periodic activation x + sin(alpha x)^2 / alpha (alpha stored linearly, not as a log)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


class SnakeResBlock(nn.Module):
    """Per dilation: snake -> dilated conv -> snake -> conv, added back to the running signal."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()

        def conv(dilation: int) -> nn.Module:
            pad = dilation * (kernel - 1) // 2  # keeps the length
            return weight_norm(nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=pad))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            x = conv2(act2(conv1(act1(x)))) + x
        return x


class HarmonicMerge(nn.Module):
    """Learned mix of the harmonic stack into one excitation channel, squashed by tanh."""

    def __init__(self, num_harmonics: int):
        super().__init__()
        self.l_linear = nn.Linear(num_harmonics, 1)

    def forward(self, harmonics: Tensor) -> Tensor:
        """(B, H, N) -> (B, 1, N)."""
        return torch.tanh(self.l_linear(harmonics.transpose(1, 2))).transpose(1, 2)


def draw_source_randomness(batch: int, n_samples: int, cfg: HiFTConfig,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """-> (phase (B, H, 1) uniform in [-pi, pi) with harmonic 0 at 0, noise (B, H, N) standard normal).

    Drawn in the reference's order (phases, then noise), so a generator seeded like the reference's global
    RNG reproduces its draws. Tensors live on the generator's device (CPU without one).
    """
    device = generator.device if generator is not None else None
    u = torch.rand((batch, cfg.num_harmonics, 1), generator=generator, device=device)
    phase = u * (2 * math.pi) - math.pi
    phase[:, 0] = 0.0  # the fundamental starts at phase 0
    noise = torch.randn((batch, cfg.num_harmonics, n_samples), generator=generator, device=device)
    return phase, noise


def harmonic_excitation(f0: Tensor, phase: Tensor, noise: Tensor, cfg: HiFTConfig) -> tuple[Tensor, Tensor]:
    """Sample-rate F0 (B, N) -> (noisy harmonic stack (B, H, N), voiced flag (B, 1, N)).

    Phase is integrated in float64: a float32 running sum over a second of audio drifts by ~1e-3 cycles.
    """
    k = torch.arange(1, cfg.num_harmonics + 1, dtype=f0.dtype, device=f0.device)[None, :, None]
    cycles_per_sample = f0[:, None, :] * k / cfg.sample_rate  # (B, H, N)
    cycles = torch.cumsum(cycles_per_sample.double(), dim=-1).to(f0.dtype) % 1
    sines = cfg.sine_amp * torch.sin(2 * math.pi * cycles + phase)
    uv = (f0[:, None, :] > cfg.voiced_threshold).to(f0.dtype)
    noise_amp = uv * cfg.voiced_noise_std + (1 - uv) * (cfg.sine_amp / 3)
    return sines * uv + noise_amp * noise, uv


def hann_window(n: int, like: Tensor) -> Tensor:
    """Periodic Hann window computed in float64 then rounded (matches scipy's window to the bit)."""
    return torch.hann_window(n, periodic=True, dtype=torch.float64, device=like.device).to(like.dtype)


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig = HiFTConfig()):
        super().__init__()
        n_stages = len(cfg.upsample_rates)
        if not (len(cfg.upsample_kernels) == len(cfg.source_resblock_kernels) == n_stages):
            raise ValueError("upsample_rates, upsample_kernels and source_resblock_kernels need one entry per stage")
        self.cfg = cfg
        # bfloat16: the filter network's convolutions under autocast (S3Gen.set_flow_dtype); the F0, the source,
        # the STFTs and the output stay float32
        self.filter_dtype = torch.float32
        self.f0_predictor = F0Predictor(cfg.f0)
        self.m_source = HarmonicMerge(cfg.num_harmonics)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, cfg.base_channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = cfg.base_channels
        for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels)):
            out_channels = cfg.base_channels >> (i + 1)
            self.ups.append(weight_norm(
                nn.ConvTranspose1d(channels, out_channels, kernel, rate, padding=(kernel - rate) // 2)))
            # The source spectrum is at STFT-frame rate; bring it down to this stage's rate.
            stride = math.prod(cfg.upsample_rates[i + 1:])
            if stride == 1:
                self.source_downs.append(nn.Conv1d(cfg.spec_channels, out_channels, 1))
            else:
                self.source_downs.append(
                    nn.Conv1d(cfg.spec_channels, out_channels, 2 * stride, stride, padding=stride // 2))
            self.source_resblocks.append(
                SnakeResBlock(out_channels, cfg.source_resblock_kernels[i], cfg.source_resblock_dilations))
            for k in cfg.resblock_kernels:
                self.resblocks.append(SnakeResBlock(out_channels, k, cfg.resblock_dilations))
            channels = out_channels
        self.conv_post = weight_norm(nn.Conv1d(channels, cfg.spec_channels, 7, padding=3))

    # --- stages -------------------------------------------------------------------------------------------

    def predict_f0(self, mel: Tensor) -> Tensor:
        """(B, 80, T) -> (B, T) F0 in Hz."""
        return self.f0_predictor(mel)

    def source(self, f0: Tensor, phase: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Frame F0 (B, T) -> (excitation (B, 1, N), voiced flag (B, 1, N)); F0 is held over each frame."""
        f0_samples = f0.repeat_interleave(self.cfg.samples_per_frame, dim=-1)  # (B, N)
        harmonics, uv = harmonic_excitation(f0_samples, phase, noise, self.cfg)
        return self.m_source(harmonics), uv

    def _source_spectrum(self, excitation: Tensor) -> Tensor:
        """(B, 1, N) -> (B, n_fft + 2, N / hop + 1): real parts, then imaginary parts."""
        n_fft = self.cfg.n_fft
        spec = torch.stft(excitation.squeeze(1), n_fft, self.cfg.hop, n_fft, window=hann_window(n_fft, excitation),
                          center=True, pad_mode="reflect", return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)

    def _filter(self, mel: Tensor, source_spec: Tensor) -> Tensor:
        """The convolutions: mel and the source's spectrum -> log-magnitude and phase channels."""
        cfg = self.cfg
        n_res = len(cfg.resblock_kernels)
        x = self.conv_pre(mel)
        last = len(self.ups) - 1
        for i, (up, down, source_block) in enumerate(zip(self.ups, self.source_downs, self.source_resblocks)):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == last:
                # T * 480 / hop frames so far; the centred STFT has one more, so mirror one in at the front.
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + source_block(down(source_spec))
            blocks = self.resblocks[i * n_res:(i + 1) * n_res]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / n_res
        return self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as trained

    def decode(self, mel: Tensor, excitation: Tensor) -> Tensor:
        """Filter network: mel (B, 80, T) + excitation (B, 1, N) -> waveform (B, N)."""
        cfg = self.cfg
        source_spec = self._source_spectrum(excitation)
        with torch.autocast(mel.device.type, dtype=torch.bfloat16, enabled=self.filter_dtype == torch.bfloat16):
            x = self._filter(mel, source_spec).float()
        n_bins = cfg.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :n_bins]).clamp(max=100.0)
        angle = torch.sin(x[:, n_bins:])  # the network's phase channels pass through a sine
        spec = torch.complex(magnitude * torch.cos(angle), magnitude * torch.sin(angle))
        wav = torch.istft(spec, cfg.n_fft, cfg.hop, cfg.n_fft, window=hann_window(cfg.n_fft, magnitude),
                          center=True, length=excitation.shape[-1])
        return wav.clamp(-cfg.audio_limit, cfg.audio_limit)

    # --- entry points -------------------------------------------------------------------------------------

    def _check_inputs(self, mel: Tensor, phase: Tensor | None, noise: Tensor | None,
                      cache_source: Tensor | None) -> None:
        cfg = self.cfg
        if not isinstance(mel, Tensor) or mel.dim() != 3 or mel.shape[1] != cfg.in_channels or mel.shape[2] < 1:
            shape = tuple(mel.shape) if isinstance(mel, Tensor) else type(mel).__name__
            raise ValueError(f"mel must have shape (batch, {cfg.in_channels}, frames >= 1), got {shape}")
        if not mel.is_floating_point():
            raise ValueError(f"mel must be a floating-point tensor, got {mel.dtype}")
        if not torch.isfinite(mel).all():
            raise ValueError("mel contains NaN or infinite values")
        batch, n_samples = mel.shape[0], mel.shape[2] * cfg.samples_per_frame
        expected = {"phase": (batch, cfg.num_harmonics, 1), "noise": (batch, cfg.num_harmonics, n_samples)}
        for name, value in (("phase", phase), ("noise", noise)):
            if value is not None and tuple(value.shape) != expected[name]:
                raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(value.shape)}")
        if cache_source is not None and (cache_source.dim() != 3 or cache_source.shape[:2] != (batch, 1)
                                         or cache_source.shape[2] > n_samples):
            raise ValueError(f"cache_source must have shape ({batch}, 1, <= {n_samples}), "
                             f"got {tuple(cache_source.shape)}")

    def forward(self, mel: Tensor, phase: Tensor | None = None, noise: Tensor | None = None,
                generator: torch.Generator | None = None, cache_source: Tensor | None = None) -> VocoderOutput:
        """mel (B, 80, T) -> VocoderOutput with N = T * 480 samples.

        `phase` (B, 9, 1) and `noise` (B, 9, N) are the source's random draws; whichever is missing is drawn
        from `generator` (or the global RNG). `cache_source` (B, 1, M) overrides the first M excitation
        samples, so consecutive streamed chunks share a continuous source.
        """
        self._check_inputs(mel, phase, noise, cache_source)
        cfg = self.cfg
        batch, n_samples = mel.shape[0], mel.shape[2] * cfg.samples_per_frame
        if phase is None or noise is None:
            drawn_phase, drawn_noise = draw_source_randomness(batch, n_samples, cfg, generator)
            phase = drawn_phase if phase is None else phase
            noise = drawn_noise if noise is None else noise
        phase = phase.to(device=mel.device, dtype=mel.dtype)
        noise = noise.to(device=mel.device, dtype=mel.dtype)
        f0 = self.predict_f0(mel)
        excitation, uv = self.source(f0, phase, noise)
        if cache_source is not None and cache_source.shape[2] > 0:
            excitation = excitation.clone()
            excitation[:, :, :cache_source.shape[2]] = cache_source.to(excitation)
        wav = self.decode(mel, excitation)
        return VocoderOutput(wav, excitation, f0, uv)

    @torch.inference_mode()
    def synthesize(self, mel: Tensor, phase: Tensor | None = None, noise: Tensor | None = None,
                   generator: torch.Generator | None = None, cache_source: Tensor | None = None) -> VocoderOutput:
        """`forward` without autograd, with each weight-normed weight computed once per call."""
        with parametrize.cached():
            return self(mel, phase, noise, generator, cache_source)

    def inference(self, mel: Tensor, phase: Tensor | None = None, noise: Tensor | None = None,
                  generator: torch.Generator | None = None,
                  cache_source: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """mel (B, 80, T) -> (wav (B, T * 480), source (B, 1, T * 480))."""
        out = self.synthesize(mel, phase, noise, generator, cache_source)
        return out.wav, out.source
