"""Official checkpoint files: names, strict loading with readable errors, saving in the same layout."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelFiles:
    """File names of one model family inside a checkpoint folder (as in the official HF repo)."""

    t3: str
    ve: str
    s3gen: str
    tokenizer: str
    conds: str = "conds.pt"
    extra: tuple[str, ...] = ()

    def all(self) -> list[str]:
        return [self.t3, self.ve, self.s3gen, self.tokenizer, self.conds, *self.extra]


def find_weights(folder: Path, name: str) -> Path:
    """`name` in `folder`, or the same file saved in the other format (.safetensors <-> .pt)."""
    path = folder / name
    if not path.is_file():
        other = path.with_suffix(".pt" if path.suffix == ".safetensors" else ".safetensors")
        if other.is_file():
            return other
    return path


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not fit the module it is loaded into."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {e}. The file may be truncated or of another format; "
                              "download it again.") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], (list, tuple)):
        state = state["model"][0]  # legacy training wrapper
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                may_be_missing: Callable[[str], bool] = lambda key: False, ignore_unexpected: bool = False) -> None:
    """load_state_dict(strict=True), but failing with one message that lists every problem.

    `may_be_missing(key)` names entries a file may lack (constants the module rebuilds itself);
    `ignore_unexpected` logs unknown keys instead of failing (the official English S3Gen load is lenient).
    A module's `unused_checkpoint_keys` (key -> shape) must be in the file with that shape and are then dropped.
    """
    expected = {**module.state_dict(), **unused_entries(module, device="meta")}
    missing = [k for k in sorted(set(expected) - set(state)) if not may_be_missing(k)]
    unexpected = sorted(set(state) - set(expected))
    if unexpected and ignore_unexpected:
        log.warning("%s: ignoring %d unknown keys: %s", source, len(unexpected), _listing(unexpected))
        state = {k: v for k, v in state.items() if k in expected}
        unexpected = []
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_listing(mismatched, 6)}")
        raise CheckpointError("\n".join(lines))
    unused = unused_entries(module, device="meta")
    module.load_state_dict({k: v for k, v in state.items() if k not in unused}, strict=False)  # missing: allowed


def unused_entries(module: nn.Module, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Zero tensors for the keys the official files hold but the module does not use (GPT-2 T3's `tfmr.wte`)."""
    shapes = getattr(module, "unused_checkpoint_keys", {})
    dtype = next(module.parameters()).dtype if shapes else torch.float32
    return {k: torch.zeros(shape, dtype=dtype, device=device) for k, shape in shapes.items()}


def load_module(module: nn.Module, path: str | Path, remap: Callable[[dict], dict] | None = None,
                **options) -> nn.Module:
    state = read_state_dict(path)
    load_strict(module, remap(state) if remap else state, str(path), **options)
    return module


def save_module(module: nn.Module, path: str | Path) -> None:
    """Writes the state dict in the format the file name implies (.safetensors or torch .pt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    state.update(unused_entries(module))  # so that the reference's strict loader takes our files too
    tmp = path.with_name(path.name + ".partial")
    try:
        if path.suffix == ".safetensors":
            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files readable by their owner only
    os.replace(tmp, path)  # a crash never leaves a half-written checkpoint under the real name


def download_model(files: ModelFiles, repo_id: str, revision: str = "main") -> Path:
    """Fetch (or find in the HF cache) the files of a model repository; honours HF_HUB_OFFLINE."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=files.all(),
                                   token=os.getenv("HF_TOKEN"))
    except Exception as e:
        raise CheckpointError(
            f"could not get {repo_id} from the Hugging Face Hub ({type(e).__name__}: {e}).\n"
            f"Without network access, copy these files into a folder and pass it instead of the repo id "
            f"(--model /path/to/folder, or from_local(folder)): {', '.join(files.all()[:4])}, and those of "
            f"{', '.join(files.all()[4:])} that the repository has") from e
    return Path(folder)
