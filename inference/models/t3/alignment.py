"""Online text-speech alignment guard for multilingual decoding.

A few attention heads of the backbone follow the text monotonically while speech is generated. From
their averaged map we estimate the text position of each new speech frame and:
  * forbid the stop token while the estimate is more than 3 text tokens from the end;
  * force the stop token on a long tail (the last tokens attended too long), on attention
    that jumps back into earlier text after completion, or when the same speech token was given
    twice in a row.
This reproduces the reference's heuristics, thresholds included.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from .attention import set_observer

log = logging.getLogger(__name__)

FORCE = 2.0**15


class AlignmentGuard:
    def __init__(self, backbone, heads: tuple, text_slice: tuple[int, int], eos_id: int, observe: bool = True):
        """`observe=False` leaves the attention hooks to the caller, who hands each map to `take` (batched
        decoding, where one hook serves the guards of every request in the batch)."""
        self.heads = tuple(heads)
        self.text_start, self.text_end = text_slice
        self.eos_id = eos_id
        self.alignment = torch.zeros(0, self.text_end - self.text_start)  # (frames, text tokens)
        self.frame = 0
        self.text_position = 0
        self.complete = False
        self.completed_at: int | None = None
        self.recent_tokens: list[int] = []
        self._maps: dict[tuple[int, int], Tensor] = {}
        self._layers = {layer: backbone.layers[layer].self_attn for layer, _ in self.heads} if observe else {}
        for layer, module in self._layers.items():
            set_observer(module, lambda probs, layer=layer: self.take(layer, probs))

    def take(self, layer: int, probs: Tensor, row: int = 0, pad: int = 0) -> None:
        """Keep this layer's maps of the guarded heads: `row` is the request's conditional row in the batch, `pad`
        the key positions of left padding before its sequence."""
        for l, head in self.heads:
            if l == layer:
                self._maps[(layer, head)] = probs[row, head, :, pad:].detach().float().cpu()  # (q, kv)

    def close(self) -> None:
        for module in self._layers.values():
            set_observer(module, None)

    def step(self, logits: Tensor, last_token: int) -> Tensor:
        attn = torch.stack([self._maps[h] for h in self.heads]).mean(dim=0)  # (q, kv)
        s, e = self.text_start, self.text_end
        chunk = (attn[e:, s:e] if self.frame == 0 else attn[:, s:e]).clone()  # first call: the speech rows
        chunk[:, self.frame + 1:] = 0
        self.alignment = torch.cat((self.alignment, chunk), dim=0)
        a = self.alignment
        n_text = a.shape[1]

        position = int(chunk[-1].argmax())
        if -4 < position - self.text_position < 7:
            self.text_position = position
        self.complete = self.complete or self.text_position >= n_text - 3
        if self.complete and self.completed_at is None:
            self.completed_at = a.shape[0]

        long_tail = self.complete and bool(a[self.completed_at:, -3:].sum(dim=0).max() >= 5)
        jumped_back = self.complete and bool(a[self.completed_at:, :-5].max(dim=1).values.sum() > 5)

        self.recent_tokens = (self.recent_tokens + [int(last_token)])[-8:]
        repeated = len(self.recent_tokens) >= 3 and self.recent_tokens[-1] == self.recent_tokens[-2]

        logits = logits.clone()
        if position < n_text - 3 and n_text > 5:
            logits[..., self.eos_id] = -FORCE
        if long_tail or jumped_back or repeated:
            log.info("alignment guard forces stop (long_tail=%s, jumped_back=%s, repeated=%s)",
                     long_tail, jumped_back, repeated)
            logits = torch.full_like(logits, -FORCE)
            logits[..., self.eos_id] = FORCE
        self.frame += 1
        return logits
