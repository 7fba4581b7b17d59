"""The voice's keys and values, computed once: GPT-2 T3's input starts with the voice's conditioning (speaker
projection and prompt speech tokens, ~376 positions for Turbo and Nano) and only then the text, so under a causal
mask the backbone's keys and values of those positions are the same for every text spoken in that voice. Running
them for each request was most of the time to the first token (Nano, 2 CPU cores: 0.50 s, 0.08 s reused).
"""
from __future__ import annotations

import threading

import torch
from torch import Tensor, nn
from transformers import DynamicCache


def _version(p: Tensor) -> int:
    try:
        return p._version
    except RuntimeError:  # made under inference_mode: such a tensor cannot be changed in place outside it
        return -1


def _weights_fingerprint(backbone: nn.Module) -> tuple:
    """Changes when a weight is replaced (quantization, a deep copy) or modified in place (a merged adapter)."""
    return tuple((id(p), _version(p)) for p in backbone.parameters())


class VoicePrefixCache:
    """The backbone's keys and values of the last few conditioning prefixes, by their exact embeddings."""

    def __init__(self, entries: int = 4):
        self.entries = entries
        self._items: list[tuple[Tensor, tuple, list[tuple[Tensor, Tensor]]]] = []  # most recent first
        self._lock = threading.Lock()  # generate_stream's T3 thread and the caller may both decode
        self.hits = self.misses = 0

    def cache_for(self, backbone: nn.Module, prefix: Tensor) -> DynamicCache:
        """A fresh cache holding `prefix`'s (rows, L, D) keys and values; decoding appends to it without touching
        the stored tensors (the cache concatenates into new ones)."""
        fingerprint = _weights_fingerprint(backbone)
        with self._lock:
            layers = self._find(prefix, fingerprint)
        if layers is None:
            self.misses += 1
            cache = DynamicCache(config=backbone.config)
            backbone(inputs_embeds=prefix, cache=cache, use_cache=True)
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            with self._lock:
                self._items.insert(0, (prefix.clone(), fingerprint, layers))
                del self._items[self.entries:]
        else:
            self.hits += 1
        cache = DynamicCache(config=backbone.config)
        for index, (keys, values) in enumerate(layers):
            cache.update(keys, values, index)
        return cache

    def _find(self, prefix: Tensor, fingerprint: tuple) -> list[tuple[Tensor, Tensor]] | None:
        for i, (stored, stored_fingerprint, layers) in enumerate(self._items):
            if stored_fingerprint == fingerprint and stored.shape == prefix.shape and stored.dtype == prefix.dtype \
                    and stored.device == prefix.device and torch.equal(stored, prefix):
                self._items.insert(0, self._items.pop(i))
                return layers
        return None

    def __deepcopy__(self, memo: dict) -> "VoicePrefixCache":
        """A copied T3 has weights of its own: it starts with an empty cache (and a lock of its own)."""
        return VoicePrefixCache(self.entries)

    def __reduce__(self):
        return VoicePrefixCache, (self.entries,)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
