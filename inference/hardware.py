"""The hardware line that benchmarks and evaluation reports print beside their numbers."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def hardware(device: str) -> str:
    if on_gpu(device):
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 1e9:.1f} GB total; torch {torch.__version__}"
    return (f"{cpu_name()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}")
