"""The `tiny` preset: the real architecture at toy size with deterministic synthetic weights.

It exercises every code path offline (tests, demos, CI). Its output is NOT speech: the weights
are random, so nothing it produces says anything about synthesis quality.
"""
from __future__ import annotations

import torch

from .conditionals import Conditionals
from .models.t3 import T3, T3Cond, T3Config
from .models.tokenizers import EnTokenizer, MTLTokenizer, build_char_tokenizer
from .models.voice_encoder import VoiceEncoder
from .synthetic import fill_synthetic

PRESETS = ("tiny", "tiny-multilingual")
WARNING = "tiny preset: random weights, the output is not intelligible speech"


def tiny_t3(multilingual: bool = False) -> T3:
    return fill_synthetic(T3(T3Config.tiny(multilingual), init_weights=False)).eval()


def tiny_voice_encoder() -> VoiceEncoder:
    return fill_synthetic(VoiceEncoder()).eval()


def tiny_tokenizer(multilingual: bool = False):
    cfg = T3Config.tiny(multilingual)
    tok = build_char_tokenizer(cfg.text_vocab_size, language_tags=multilingual)
    return MTLTokenizer(tok) if multilingual else EnTokenizer(tok)


def tiny_conditionals(cfg: T3Config) -> Conditionals:
    """A fixed synthetic voice (seeded), standing in for the official built-in `conds.pt`."""
    g = torch.Generator().manual_seed(0)
    speaker = torch.rand(1, 256, generator=g)
    prompt = torch.randint(0, cfg.start_speech_token, (1, cfg.speech_cond_prompt_len), generator=g)
    t3 = T3Cond(speaker_emb=speaker / speaker.norm(), cond_prompt_speech_tokens=prompt,
                emotion_adv=torch.full((1, 1, 1), 0.5))
    return Conditionals(t3, {})
