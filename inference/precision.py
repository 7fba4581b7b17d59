"""Reduced-precision T3 and S3Gen, chosen by the user for speed (README, "Speed"; accuracy in bench/RESULTS.md).

float32 stays the default and the parity path. The others trade a measured amount of accuracy for speed:
  - T3 "bfloat16" / "float16": the weights cast. On a CPU, bfloat16 pays off where the CPU has bfloat16
    instructions (avx512_bf16 or AMX); elsewhere it is emulated and slower.
  - T3 "int8" (CPU only): every linear layer (transformer, conditioning encoder, heads) quantized to int8 per
    output channel, activations quantized on the fly (torch's dynamic quantization, run by fbgemm). Decoding
    one token reads every weight once, so a quarter of the bytes is most of the speed-up. Embeddings stay
    float32. The least accurate choice (bench/RESULTS.md: keeping the heads in float32 did not help). A LoRA
    adapter must be applied before this: quantized layers cannot be trained or merged.
  - S3Gen "bfloat16": the flow's conformer and estimator, and the vocoder's filter convolutions, run under
    autocast; the ODE state, F0, harmonic source and STFTs stay float32. With the 10-step flow the flow is
    nearly all of S3Gen's time; with Turbo's 2-step meanflow the vocoder is about half.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

T3_DTYPES = ("float32", "bfloat16", "float16", "int8")
S3GEN_DTYPES = ("float32", "bfloat16")


def check_dtypes(t3_dtype: str, s3gen_dtype: str) -> None:
    if t3_dtype not in T3_DTYPES:
        raise ValueError(f"t3_dtype must be one of {', '.join(T3_DTYPES)}, got {t3_dtype!r}")
    if s3gen_dtype not in S3GEN_DTYPES:
        raise ValueError(f"s3gen_dtype must be one of {', '.join(S3GEN_DTYPES)}, got {s3gen_dtype!r}")


def set_t3_dtype(t3: nn.Module, dtype: str) -> nn.Module:
    """Cast or quantize T3 in place (int8 swaps its linear layers, so use the returned module)."""
    check_dtypes(dtype, "float32")
    if dtype != "int8":
        return t3.to(getattr(torch, dtype))
    device = next(t3.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"t3_dtype int8 runs on the CPU only (fbgemm); on {device.type} use bfloat16")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ValueError("t3_dtype int8 needs torch's fbgemm engine (x86); this build has "
                         f"{', '.join(torch.backends.quantized.supported_engines)}")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    conv1d_to_linear(t3)
    with warnings.catch_warnings(), quantized_engine("fbgemm"):
        warnings.simplefilter("ignore")  # torch's deprecation notice points to torchao, which is not a dependency
        return quantize_dynamic(t3.float(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=True)


@torch.no_grad()
def conv1d_to_linear(module: nn.Module) -> None:
    """GPT-2's projections are transformers `Conv1D` (x @ W + b, W stored [in, out]); dynamic quantization knows
    nn.Linear only, so each becomes the equivalent Linear (W transposed) first."""
    from transformers.pytorch_utils import Conv1D

    for name, child in list(module.named_modules()):
        if isinstance(child, Conv1D):
            n_in, n_out = child.weight.shape
            linear = nn.Linear(n_in, n_out, device=child.weight.device, dtype=child.weight.dtype)
            linear.weight.copy_(child.weight.t())
            linear.bias.copy_(child.bias)
            parent_name, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, attr, linear)


@contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """torch's quantized engine for the block only. The engine matters when weights are packed: each packed
    weight keeps its backend, so the process-wide setting can be restored right after."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def set_s3gen_dtype(s3gen, dtype: str) -> None:
    """S3Gen's flow and vocoder filter in float32 or under bfloat16 autocast (S3Gen.set_flow_dtype)."""
    check_dtypes("float32", dtype)
    s3gen.set_flow_dtype(getattr(torch, dtype))
