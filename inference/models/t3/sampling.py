"""Per-step logits processing of T3 decoding, in each reference's order.

Llama T3: cfg combine -> [alignment analyzer] -> repetition penalty (history includes the start token)
-> temperature -> min-p -> top-p -> softmax.
GPT-2 T3 (Turbo, Nano): temperature -> top-k -> top-p -> repetition penalty (on the surviving logits) -> softmax;
no guidance, no min-p. The filters are transformers' own logits processors.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor
from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from ..limits import check_limits


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults are those the English `generate` uses (each family's own: inference/families.py); allowed values:
    `inference/models/limits.py`. `top_k` (0: off) is used by the GPT-2 T3 only."""

    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.05
    repetition_penalty: float = 1.2
    cfg_weight: float = 0.5
    max_new_tokens: int = 1000
    top_k: int = 0

    def __post_init__(self):
        check_limits(vars(self))


SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingConfig))  # what `generate` and friends take as **sampling


def logits_pipeline(t3_cfg, cfg: SamplingConfig, guard: Callable[[Tensor], Tensor] | None = None):
    """The pipeline of the T3 design `t3_cfg` describes."""
    return TurboLogitsPipeline(cfg) if t3_cfg.is_gpt2 else LogitsPipeline(cfg, guard)


class LogitsPipeline:
    """Turns a (cond, uncond) pair of speech logits into the sampling distribution.

    `trace`, when given, receives every intermediate (parity checks compare them one by one).
    """

    def __init__(self, cfg: SamplingConfig, guard: Callable[[Tensor], Tensor] | None = None):
        self.cfg = cfg
        self.guard = guard  # the alignment analyzer's step, multilingual only
        self.repetition = RepetitionPenaltyLogitsProcessor(penalty=float(cfg.repetition_penalty))
        self.min_p = MinPLogitsWarper(min_p=cfg.min_p)
        self.top_p = TopPLogitsWarper(top_p=cfg.top_p)

    def __call__(self, cond: Tensor, uncond: Tensor | None, history: Tensor, trace: dict | None = None) -> Tensor:
        """cond/uncond (1, V), history (1, n) token ids so far -> probs (1, V)."""
        stages = {}
        logits = cond if uncond is None else cond + self.cfg.cfg_weight * (cond - uncond)
        stages["cfg_logits"] = logits
        if self.guard is not None:
            logits = self.guard(logits)
            stages["after_alignment_guard"] = logits
        logits = self.repetition(history, logits)
        stages["after_repetition_penalty"] = logits
        if self.cfg.temperature != 1.0:
            logits = logits / self.cfg.temperature
        stages["after_temperature"] = logits
        logits = self.min_p(history, logits)
        stages["after_min_p"] = logits
        logits = self.top_p(history, logits)
        stages["after_top_p"] = logits
        probs = torch.softmax(logits, dim=-1)
        stages["probs"] = probs
        if trace is not None:
            trace.update(stages)
        return probs


class TurboLogitsPipeline:
    """GPT-2 T3's chain; each stage runs only when active, as in the reference (temperature 1, top_k 0, top_p 1
    and penalty 1 are skipped). Same call as LogitsPipeline; `uncond` must be None (no guidance)."""

    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg
        self.stages: list[tuple[str, Callable[[Tensor, Tensor], Tensor] | None]] = [
            ("after_temperature", (lambda h, x: x / cfg.temperature) if cfg.temperature != 1.0 else None),
            ("after_top_k", TopKLogitsWarper(cfg.top_k) if cfg.top_k > 0 else None),
            ("after_top_p", TopPLogitsWarper(cfg.top_p) if cfg.top_p < 1.0 else None),
            ("after_repetition_penalty", RepetitionPenaltyLogitsProcessor(float(cfg.repetition_penalty))
             if cfg.repetition_penalty != 1.0 else None),
        ]

    def __call__(self, cond: Tensor, uncond: Tensor | None, history: Tensor, trace: dict | None = None) -> Tensor:
        if uncond is not None:
            raise ValueError("Turbo/Nano T3 has no classifier-free guidance")
        logits, stages = cond, {}
        for name, stage in self.stages:
            if stage is not None:
                logits = stage(history, logits)
            stages[name] = logits
        probs = torch.softmax(logits, dim=-1)
        stages["processed_logits"], stages["probs"] = logits, probs
        if trace is not None:
            trace.update(stages)
        return probs
