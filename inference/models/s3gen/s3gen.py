"""S3Gen: the official checkpoint's four parts under one module (keys `tokenizer.`, `speaker_encoder.`,
`flow.`, `mel2wav.`), with the reference-voice embedding and token-to-waveform synthesis.

`S3Gen(meanflow=True)` is the Turbo / Nano variant (s3gen_meanflow.safetensors): one more estimator key and a
2-step solver without guidance; everything else, weights included, is shared with the original."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..audio import AudioError, resample
from ..rates import S3_SR, S3GEN_SR
from .flow import FlowConfig, TokenToMel
from .hifigan import HiFTGenerator
from .mel import mel_24k
from .s3tokenizer import S3Tokenizer
from .xvector import CAMPPlus

FADE_SAMPLES = 480  # the vocoder's first frame is noise-like: silence it, then fade in over 20 ms


def trim_fade(device) -> Tensor:
    ramp = (torch.cos(torch.linspace(torch.pi, 0, FADE_SAMPLES, device=device)) + 1) / 2
    return torch.cat([torch.zeros(FADE_SAMPLES, device=device), ramp])


@dataclass
class RefDict:
    """A voice for S3Gen (the `gen` part of conds.pt). prompt_feat has 2 frames per prompt token."""

    prompt_token: Tensor  # (1, P) int64
    prompt_token_len: Tensor  # (1,)
    prompt_feat: Tensor  # (1, F, 80) 24 kHz log-mel
    embedding: Tensor  # (1, 192) x-vector
    prompt_feat_len: Tensor | None = None

    def as_dict(self) -> dict:
        return dict(prompt_token=self.prompt_token, prompt_token_len=self.prompt_token_len,
                    prompt_feat=self.prompt_feat, prompt_feat_len=self.prompt_feat_len, embedding=self.embedding)

    @classmethod
    def from_dict(cls, d: dict) -> "RefDict":
        return cls(d["prompt_token"], d["prompt_token_len"], d["prompt_feat"], d["embedding"], d.get("prompt_feat_len"))


class S3Gen(nn.Module):
    def __init__(self, meanflow: bool = False):
        super().__init__()
        self.meanflow = meanflow
        self.tokenizer = S3Tokenizer()
        self.speaker_encoder = CAMPPlus()
        self.flow = TokenToMel(FlowConfig.distilled_meanflow() if meanflow else FlowConfig())
        self.mel2wav = HiFTGenerator()
        self.flow_dtype = torch.float32  # bfloat16: the flow under autocast (set_flow_dtype)

    def set_flow_dtype(self, dtype: torch.dtype) -> None:
        """float32 (the parity path) or bfloat16: the flow's conformer and estimator, and the vocoder's filter
        convolutions, then run under autocast; the ODE state, the F0, the harmonic source and the STFTs stay
        float32 (the vocoder is half of a meanflow S3Gen's time: bfloat16 makes it 1.5x faster on avx512_bf16)."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"the flow runs in float32 or bfloat16, not {dtype}")
        self.flow_dtype = dtype
        self.mel2wav.filter_dtype = dtype

    @property
    def device(self) -> torch.device:
        return self.flow.input_embedding.weight.device

    @torch.inference_mode()
    def embed_ref(self, wav: Tensor | np.ndarray, sample_rate: int) -> RefDict:
        """Reference clip (any rate, mono) -> prompt tokens, prompt mel and x-vector."""
        wav = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav).float()
        wav = torch.atleast_2d(wav).to(self.device)
        if wav.shape[0] != 1:
            raise AudioError(f"embed_ref takes one mono clip, got shape {tuple(wav.shape)}")
        if wav.shape[1] < sample_rate // 2:
            raise AudioError(f"reference is {wav.shape[1] / sample_rate:.2f} s long; at least 0.5 s is needed")
        wav_24 = resample(wav, sample_rate, S3GEN_SR)
        wav_16 = resample(wav, sample_rate, S3_SR)
        prompt_feat = mel_24k(wav_24)  # (1, F, 80)
        embedding = self.speaker_encoder.inference(wav_16)
        tokens, lens = self.tokenizer([wav_16[0]])
        if prompt_feat.shape[1] != 2 * tokens.shape[1]:
            # unpadded audio: keep the mel, cut tokens to match it (an odd frame count loses one frame later)
            tokens = tokens[:, : prompt_feat.shape[1] // 2]
            lens = torch.tensor([tokens.shape[1]], device=tokens.device)
        return RefDict(tokens, lens, prompt_feat, embedding)

    @torch.inference_mode()
    def flow_inference(self, speech_tokens: Tensor, ref: RefDict, noise: Tensor | None = None,
                       generator: torch.Generator | None = None, finalize: bool = True,
                       n_timesteps: int | None = None) -> Tensor:
        """(1, N) tokens -> (1, 80, frames) mel continuing the reference voice. n_timesteps: solver steps
        (default 10, or 2 for meanflow)."""
        tokens = torch.atleast_2d(speech_tokens).long().to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.flow_dtype == torch.bfloat16):
            mel = self.flow.inference(tokens, ref.prompt_token.to(self.device), ref.prompt_feat.to(self.device),
                                      ref.embedding.to(self.device), noise=noise, generator=generator,
                                      finalize=finalize, n_steps=n_timesteps)
        return mel.float()

    @torch.inference_mode()
    def inference(self, speech_tokens: Tensor, ref: RefDict, generator: torch.Generator | None = None,
                  flow_noise: Tensor | None = None, sine_phase: Tensor | None = None,
                  sine_noise: Tensor | None = None, fade_in: bool = True, n_timesteps: int | None = None) -> Tensor:
        """Speech tokens -> (1, samples) 24 kHz waveform. The random draws can be passed explicitly; the others
        come from `generator` (the global RNG without one) in the reference's order: flow, then vocoder."""
        mel = self.flow_inference(speech_tokens, ref, noise=flow_noise, generator=generator, n_timesteps=n_timesteps)
        return self.vocode(mel, generator, sine_phase, sine_noise, fade_in)

    @torch.inference_mode()
    def vocode(self, mel: Tensor, generator: torch.Generator | None = None, sine_phase: Tensor | None = None,
               sine_noise: Tensor | None = None, fade_in: bool = True) -> Tensor:
        """mel (1, 80, T) -> (1, T * 480) waveform, the start of an utterance faded in."""
        wav, _ = self.mel2wav.inference(mel, phase=sine_phase, noise=sine_noise, generator=generator)
        if fade_in:
            n = min(2 * FADE_SAMPLES, wav.shape[1])
            wav = wav.clone()
            wav[:, :n] *= trim_fade(wav.device)[:n]
        return wav
