"""Deterministic synthetic weights (parity kit, section 4), used by parity checks and the tiny preset.

Every tensor gets its own CPU generator seeded with crc32(key), so a key's values do not depend on
which other keys exist (a 2-layer model shares its tensors with the 30-layer one).
"""
from __future__ import annotations

import math
import zlib

import torch
from torch import nn

# Scaled after drawing, so the synthetic vocoder is neither silent nor clipped.
MULTIPLIERS = {
    "mel2wav.f0_predictor.classifier.weight": 100.0,
    "mel2wav.conv_post.parametrizations.weight.original0": 0.1,
}
# Constant buffers that keep the value the module computed.
KEEP = {"tokenizer._mel_filters", "tokenizer.window"}


def synthetic_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return torch.ones(shape)
    if key.endswith("running_mean"):
        return torch.zeros(shape)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) <= 1:
        # 1-D ".weight"s are norm gains and ".alpha" are Snake parameters: centred on 1.
        x = 1.0 + 0.1 * x if key.endswith((".weight", ".alpha")) else 0.02 * x
    else:
        x = x / math.sqrt(math.prod(shape[1:]))
    return x * MULTIPLIERS.get(key, 1.0)


@torch.no_grad()
def fill_synthetic(module: nn.Module, prefix: str = "") -> nn.Module:
    """Overwrite every state-dict entry of `module` (except constant buffers) in place.

    `prefix` is the module's path inside its checkpoint (e.g. "mel2wav."): seeds use the full key.
    """
    state = module.state_dict()
    for key, value in sorted(state.items()):
        if prefix + key in KEEP:
            continue
        value.copy_(synthetic_tensor(prefix + key, tuple(value.shape)))
    return module
