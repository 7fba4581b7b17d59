"""Speech tokens -> 80-bin mel: conformer encoder, then conditional flow matching continuing the prompt mel in
the prompt's voice. Two solvers: the original 10 Euler steps with classifier-free guidance, and the meanflow
variant's 2 mean-velocity steps without guidance (Turbo, Nano)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conformer import UpsampleConformerEncoder
from .decoder import ConditionalDecoder

SPEECH_VOCAB = 6561
TOKEN_MEL_RATIO = 2  # 25 Hz tokens -> 50 Hz mel frames
LOOKAHEAD_TOKENS = 3


@dataclass(frozen=True)
class FlowConfig:
    n_timesteps: int = 10
    cfg_rate: float = 0.7
    temperature: float = 1.0
    meanflow: bool = False  # mean-velocity estimator (time_embed_mixer) and MeanFlowMatching's solver

    @classmethod
    def distilled_meanflow(cls) -> "FlowConfig":
        """Turbo / Nano: 2 steps, no guidance (the model was distilled from guided outputs)."""
        return cls(n_timesteps=2, cfg_rate=0.0, meanflow=True)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Draw on the generator's device: the global RNG (no generator) is the CPU one, as the goldens' draws."""
    return generator.device if generator is not None else torch.device("cpu")


class FlowMatching(nn.Module):
    def __init__(self, cfg: FlowConfig = FlowConfig()):
        super().__init__()
        self.cfg = cfg
        self.estimator = ConditionalDecoder(meanflow=cfg.meanflow)

    def time_span(self, device, n_steps: int | None = None) -> Tensor:
        t = torch.linspace(0, 1, (n_steps or self.cfg.n_timesteps) + 1, device=device, dtype=torch.float32)
        return 1 - torch.cos(t * 0.5 * torch.pi)  # cosine schedule: small steps near the noise

    def start_noise(self, frames: int, new_frames: int, generator: torch.Generator | None = None) -> Tensor:
        """ODE start (1, 80, frames), one draw. `new_frames` (the generated part) only matters for meanflow."""
        return torch.randn(1, 80, frames, generator=generator, device=_draw_device(generator))

    def forward(self, noise: Tensor, mask: Tensor, mu: Tensor, spks: Tensor, cond: Tensor,
                trace: dict | None = None, n_steps: int | None = None) -> Tensor:
        """Integrate from noise (B=1, 80, T) to mel. Each step runs the estimator on a conditional and an
        unconditional row (mu, spks, cond zeroed) and extrapolates away from the unconditional one."""
        t_span = self.time_span(noise.device, n_steps)
        x = noise * self.cfg.temperature
        t, dt = t_span[0:1], t_span[1] - t_span[0]
        zeros = torch.zeros_like
        xs, ts = [], []
        for step in range(1, len(t_span)):
            xs.append(x)
            ts.append(t)
            v = self.estimator(torch.cat([x, x]), torch.cat([mask, mask]), torch.cat([mu, zeros(mu)]),
                               torch.cat([t, t]), torch.cat([spks, zeros(spks)]), torch.cat([cond, zeros(cond)]))
            v = v.float()  # the ODE state stays float32 when the estimator runs under autocast
            if trace is not None and step == 1:
                trace["estimator_out_step0"] = v
            v_cond, v_uncond = v.chunk(2)
            x = x + dt * ((1.0 + self.cfg.cfg_rate) * v_cond - self.cfg.cfg_rate * v_uncond)
            t = t + dt  # accumulated like the reference, so fed times can differ from t_span in the last bit
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        if trace is not None:
            trace["ode_x_in"] = torch.cat(xs)
            trace["ode_t"] = torch.cat(ts)
        return x


class MeanFlowMatching(FlowMatching):
    """The meanflow solver: the estimator gives the mean velocity over a whole step [t, r], so a few plain Euler
    steps on a linear grid reach the mel; one conditional estimator call per step, no guidance."""

    def time_span(self, device, n_steps: int | None = None) -> Tensor:
        return torch.linspace(0, 1, (n_steps or self.cfg.n_timesteps) + 1, device=device, dtype=torch.float32)

    def start_noise(self, frames: int, new_frames: int, generator: torch.Generator | None = None) -> Tensor:
        """ODE start (1, 80, frames) in the reference's draw order: first (1, 80, new_frames) for the generated
        frames, then all `frames`, whose last `new_frames` columns the first draw replaces. Without finalize the
        encoder output is 6 frames shorter but new_frames is not, so the first draw reaches into the prompt."""
        device = _draw_device(generator)
        new = torch.randn(1, 80, new_frames, generator=generator, device=device)
        noise = torch.randn(1, 80, frames, generator=generator, device=device)
        keep = min(new_frames, frames)
        noise[:, :, frames - keep:] = new[:, :, new_frames - keep:]
        return noise

    def forward(self, noise: Tensor, mask: Tensor, mu: Tensor, spks: Tensor, cond: Tensor,
                trace: dict | None = None, n_steps: int | None = None) -> Tensor:
        """Integrate from noise (B, 80, T) to mel: x += (r - t) * v(x, t, r) for each step [t, r]."""
        t_span = self.time_span(noise.device, n_steps)
        batch = noise.shape[0]
        x = noise
        steps = []  # (x, t, r, v) per step, for the trace
        for t, r in zip(t_span[:-1], t_span[1:]):  # 0-dim times
            t_in, r_in = t.expand(batch), r.expand(batch)
            v = self.estimator(x, mask, mu, t_in, spks, cond, r_in).float()  # float32 under autocast too
            steps.append((x, t_in, r_in, v))
            x = x + (r - t) * v
        if trace is not None:
            xs, ts, rs, vs = (torch.cat(column) for column in zip(*steps))
            trace.update(ode_x_in=xs, ode_t=ts, ode_r=rs, estimator_out=vs)
        return x


class TokenToMel(nn.Module):
    """S3Gen's `flow` subtree."""

    def __init__(self, cfg: FlowConfig = FlowConfig()):
        super().__init__()
        self.input_embedding = nn.Embedding(SPEECH_VOCAB, 512)
        self.spk_embed_affine_layer = nn.Linear(192, 80)
        self.encoder = UpsampleConformerEncoder()
        self.encoder_proj = nn.Linear(512, 80)
        self.decoder = (MeanFlowMatching if cfg.meanflow else FlowMatching)(cfg)

    @torch.inference_mode()
    def inference(self, tokens: Tensor, prompt_token: Tensor, prompt_feat: Tensor, embedding: Tensor,
                  noise: Tensor | None = None, generator: torch.Generator | None = None, finalize: bool = True,
                  trace: dict | None = None, n_steps: int | None = None) -> Tensor:
        """tokens (1, N), prompt_token (1, P), prompt_feat (1, F, 80), embedding (1, 192) -> mel (1, 80, T-F).

        T = 2 (P + N) encoder frames; the first F are the prompt. With `finalize=False` (streaming) the
        last 3 tokens' frames are dropped: they have not seen their look-ahead yet. `noise` (1, 80, >=T)
        is the ODE start; otherwise it is drawn from `generator` (the global RNG without one). `n_steps`
        overrides the solver's step count (10 with guidance; 2 for meanflow).
        """
        if tokens.shape[0] != 1:
            raise ValueError("flow inference takes one utterance at a time")
        spks = self.spk_embed_affine_layer(F.normalize(embedding, dim=1)).float()  # (1, 80)
        ids = torch.cat([prompt_token, tokens], dim=1).clamp(0, SPEECH_VOCAB - 1)
        lengths = torch.tensor([ids.shape[1]], device=ids.device)
        h, _ = self.encoder(self.input_embedding(ids), lengths)  # (1, T, 512)
        if not finalize:
            h = h[:, : -LOOKAHEAD_TOKENS * TOKEN_MEL_RATIO]
        n_prompt = prompt_feat.shape[1]
        frames = h.shape[1]
        if frames <= n_prompt:
            raise ValueError(f"no frames to generate: {frames} encoder frames, {n_prompt} prompt frames")
        mu = self.encoder_proj(h).transpose(1, 2).float()  # (1, 80, T); float32 under autocast too
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = prompt_feat.transpose(1, 2)
        mask = torch.ones(1, 1, frames, device=mu.device, dtype=mu.dtype)
        if noise is None:
            noise = self.decoder.start_noise(frames, TOKEN_MEL_RATIO * tokens.shape[1], generator)
            noise = noise.to(mu.device, mu.dtype)
        elif noise.shape[-1] < frames:
            raise ValueError(f"noise has {noise.shape[-1]} frames, {frames} needed")
        if trace is not None:
            trace.update(spks=spks, mu=mu)
        mel = self.decoder(noise[:, :, :frames], mask, mu, spks, cond, trace, n_steps=n_steps)
        return mel[:, :, n_prompt:]
