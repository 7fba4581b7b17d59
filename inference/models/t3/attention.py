"""SDPA attention for the Llama backbone that can also report the attention map of chosen layers.

The multilingual alignment analyzer needs the attention probabilities of three heads. Asking
transformers for `output_attentions` switches every layer to the slow eager path; instead each layer
runs SDPA and only layers with a registered observer additionally compute their probabilities.
"""
from __future__ import annotations

from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_IMPLEMENTATION = "t3_sdpa"

# Observer signature: fn(probs) with probs of shape (B, heads, q_len, kv_len).
Observer = Callable[[torch.Tensor], None]


def attention_probs(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """Softmax attention map, with the causal mask rebuilt when SDPA was told `is_causal` instead of a mask."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, q, kv)
    q_len, kv_len = scores.shape[-2:]
    if mask is None:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device).tril(kv_len - q_len)
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def _t3_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    out = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    observer: Observer | None = getattr(module, "t3_attention_observer", None)
    if observer is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
        observer(attention_probs(query, key, mask, scaling if scaling is not None else module.scaling))
    return out


AttentionInterface.register(ATTENTION_IMPLEMENTATION, _t3_sdpa)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def set_observer(layer_attention: torch.nn.Module, observer: Observer | None) -> None:
    layer_attention.t3_attention_observer = observer
