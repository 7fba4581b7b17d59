"""Continuous batching of T3 decoding: the requests in flight share one backbone call per step.

Decoding one token reads every weight of the backbone once, so on a GPU (and on a CPU, where memory bandwidth
bounds small matmuls) a step for many rows costs little more than a step for one. Each request keeps what makes
its tokens its own: its conditional/unconditional row pair, sampling settings, random generator, token history,
alignment guard and stop event. Llama T3 decodes a conditional/unconditional row pair per request, GPT-2 T3
(Turbo, Nano) one row. It joins after a prefill of its own, which is exactly the first step of
`T3.generate_tokens`, and leaves at the step where it stops. Rows then differ in length: the shared KV cache is
left-padded, with a padding mask and each row's own positions, so a request decodes the same tokens batched as
alone (up to the float rounding of a batched matmul).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from ..models.t3 import T3, SamplingConfig, T3Cond
from ..models.t3.alignment import AlignmentGuard
from ..models.t3.attention import set_observer
from ..models.t3.sampling import LogitsPipeline, TurboLogitsPipeline, logits_pipeline


@dataclass(eq=False)
class Decoding:
    """One request to decode. `emit` receives every token (the stop token included when produced), then None once
    the request is over: stopped, capped by `max_new_tokens`, or `stop` set by its owner."""

    cond: T3Cond
    text_tokens: Tensor  # (1, Lt) with start/stop text tokens
    sampling: SamplingConfig
    emit: Callable[[int | None], None]
    generator: torch.Generator | None = None
    stop: threading.Event | None = None
    history: list[int] = field(default_factory=list)
    rows: int = 1  # 2 with classifier-free guidance
    length: int = 0  # positions of this request in the KV cache
    guard: AlignmentGuard | None = None
    pipeline: LogitsPipeline | TurboLogitsPipeline | None = None
    room: int | None = None  # tokens it may emit before its positions run out (T3.speech_room)

    @property
    def emitted(self) -> int:
        return len(self.history) - 1


class T3Batcher:
    """Owns the shared KV cache; `add` and `step` must be called from one thread (the decoding loop)."""

    def __init__(self, t3: T3):
        self.t3 = t3
        self.active: list[Decoding] = []
        self.cache: DynamicCache | None = None
        self.mask: Tensor | None = None  # (rows, cache length): 1 where a row has a real position
        self.steps = 0  # batched steps run (benchmarks divide tokens by them)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.active)

    @torch.inference_mode()
    def add(self, d: Decoding) -> None:
        """Prefill `d` alone, emit its first token, and let it join the batch unless it is already over."""
        t3, cfg = self.t3, self.t3.cfg
        use_cfg = d.sampling.cfg_weight > 0
        d.rows = 2 if use_cfg else 1
        text = torch.atleast_2d(d.text_tokens).long().to(t3.device)[:1]
        embeds, text_slice = t3.decoding_prompt(d.cond, text, use_cfg)
        if t3.alignment_guard:
            d.guard = AlignmentGuard(t3.tfmr, cfg.alignment_heads, text_slice, cfg.stop_speech_token, observe=False)
        d.pipeline = logits_pipeline(cfg, d.sampling,
                                     guard=(lambda x: d.guard.step(x, d.history[-1])) if d.guard else None)
        d.history = [cfg.start_speech_token]
        d.room = t3.speech_room(embeds.shape[1])
        d.length = embeds.shape[1]
        cache, embeds = t3.start_cache(embeds, text_slice)
        hidden = self._forward([(d, 0, 0)], inputs_embeds=embeds, cache=cache, use_cache=True)
        if self._choose(d, hidden[:, -1]):
            return
        self._join(d, cache)

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every request in the batch."""
        if not self.active:
            return
        t3 = self.t3
        embeds = torch.cat([t3.embed_speech(torch.full((d.rows, 1), d.history[-1], device=t3.device),
                                            offset=d.emitted) for d in self.active])
        positions = torch.tensor([[d.length] for d in self.active for _ in range(d.rows)], device=t3.device)
        width = self.mask.shape[1]
        self.mask = F.pad(self.mask, (0, 1), value=1)
        observed, row = [], 0
        for d in self.active:
            observed.append((d, row, width - d.length))
            row += d.rows
        hidden = self._forward(observed, inputs_embeds=embeds, attention_mask=self.mask, position_ids=positions,
                               cache=self.cache, use_cache=True)
        self.steps += 1
        leaving, row = [], 0
        for d in list(self.active):
            d.length += 1
            if self._choose(d, hidden[row:row + d.rows, -1]):
                leaving.append(d)
            row += d.rows
        if leaving:
            self._leave(leaving)

    def reset(self) -> list[Decoding]:
        """Empty the batch after a failed step; returns the requests that were in it (their owners fail them)."""
        dropped, self.active, self.cache, self.mask = self.active, [], None, None
        return dropped

    # ------------------------------------------------------------------ internals
    def _forward(self, observed: list[tuple[Decoding, int, int]], **inputs) -> Tensor:
        """The backbone call; the guarded heads' attention maps go to each request's guard (its row, its padding)."""
        guarded = [(d.guard, row, pad) for d, row, pad in observed if d.guard is not None]
        if guarded:
            modules = {layer: self.t3.tfmr.layers[layer].self_attn for layer, _ in self.t3.cfg.alignment_heads}
            for layer, module in modules.items():
                set_observer(module, lambda probs, layer=layer: [g.take(layer, probs, r, p) for g, r, p in guarded])
        try:
            return self.t3.tfmr(**inputs).last_hidden_state
        finally:
            if guarded:
                for module in modules.values():
                    set_observer(module, None)

    def _choose(self, d: Decoding, hidden: Tensor) -> bool:
        """Sample `d`'s next token from its rows' last hidden states and emit it; True when `d` is over."""
        t3 = self.t3
        logits = t3.speech_head(hidden).float()  # (rows, V)
        # as T3.generate_tokens: GPT-2 T3 penalises the start token at the first step only
        seen = d.history[1:] if t3.cfg.is_gpt2 and len(d.history) > 1 else d.history
        probs = d.pipeline(logits[:1], logits[1:2] if d.rows == 2 else None, torch.tensor([seen], device=t3.device))
        token = int(torch.multinomial(probs, 1, generator=d.generator))
        d.history.append(token)
        d.emit(token)
        over = t3.decoding_over(token, d.emitted, d.sampling, d.room) or (d.stop is not None and d.stop.is_set())
        if over:
            d.emit(None)
        return over

    def _join(self, d: Decoding, cache: DynamicCache) -> None:
        """Append `d`'s rows to the shared cache, left-padding whichever side is shorter."""
        new_mask = torch.ones(d.rows, d.length, dtype=torch.long, device=self.t3.device)
        if self.cache is None:
            self.cache, self.mask, self.active = cache, new_mask, [d]
            return
        width = max(self.mask.shape[1], d.length)
        pad_old, pad_new = width - self.mask.shape[1], width - d.length
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([F.pad(old.keys, (0, 0, pad_old, 0)), F.pad(new.keys, (0, 0, pad_new, 0))])
            old.values = torch.cat([F.pad(old.values, (0, 0, pad_old, 0)), F.pad(new.values, (0, 0, pad_new, 0))])
        self.mask = torch.cat([F.pad(self.mask, (pad_old, 0)), F.pad(new_mask, (pad_new, 0))])
        self.active.append(d)

    def _leave(self, leaving: list[Decoding]) -> None:
        """Drop the rows of requests that are over, and the padding columns no remaining row needs."""
        keep, row = [], 0
        for d in self.active:
            if d not in leaving:
                keep.extend(range(row, row + d.rows))
            row += d.rows
        self.active = [d for d in self.active if d not in leaving]
        if not self.active:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, device=self.t3.device)
        mask = self.mask[index]
        lead = int(mask.any(0).long().argmax())  # columns before the longest remaining row starts
        self.mask = mask[:, lead:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, lead:]
            layer.values = layer.values[index, :, lead:]
