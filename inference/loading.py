"""Model sources -> the parts of a model: a preset, a folder in the official layout, or a Hugging Face repo id.

Every command resolves `--model` here, with one rule for each question ("is it a preset, a folder, a repo id?",
"which family?"), and loads strictly: a file with missing, unexpected or mis-shaped keys fails with one message
listing them (inference/checkpoints.py).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import presets
from .checkpoints import CheckpointError, download_model, find_weights, load_module, save_module
from .conditionals import Conditionals
from .families import (FAMILIES, MULTILINGUAL, PRESETS, Family, family_named, family_of_folder, family_of_preset,
                       multilingual_t3_file)
from .models.s3gen.hifigan import remap_weight_norm_keys
from .models.tokenizers.turbo import BpeTokenizer
from .models.s3gen.s3gen import S3Gen
from .models.t3 import T3, T3Config
from .models.voice_encoder import VoiceEncoder
from .synthetic import fill_synthetic

# Written beside the weights only when T3 is not of its family's official size (the tiny preset, experiments).
T3_CONFIG_FILE = "t3_config.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ModelParts:
    """What a model is made of, before the facade puts it on a device."""

    t3: T3
    s3gen: S3Gen
    ve: VoiceEncoder
    tokenizer: object
    conds: Conditionals | None = None


def is_repo_id(model: str | Path) -> bool:
    """'owner/name' that is not a path on this machine."""
    text = str(model)
    return bool(_REPO_ID.match(text)) and not Path(text).expanduser().exists()


def describe_source(model: str | Path) -> str:
    """'preset', 'folder' or 'repo'; a ValueError naming the three choices otherwise."""
    if str(model) in PRESETS:
        return "preset"
    if Path(model).expanduser().exists():
        return "folder"
    if is_repo_id(model):
        return "repo"
    raise FileNotFoundError(f"--model {str(model)!r} is neither a preset ({', '.join(PRESETS)}), an existing folder, "
                            "nor a Hugging Face repo id (owner/name)")


def family_for(model: str | Path, multilingual: bool = False, family: str | None = None) -> Family:
    """The family a source holds: `family` when named; a preset's own ('tiny' is every family's: the multilingual
    one with `multilingual`); a folder's by its T3 file (a LoRA adapter's: its recorded base's); a repo id (not downloaded yet) by the official repository
    it names, else English unless `multilingual`. A named family that contradicts the folder's files is refused."""
    named = family_named(family) if family else (FAMILIES["multilingual"] if multilingual else None)
    if (preset := family_of_preset(str(model))) is not None:
        if named is not None and preset.name == "english":
            return family_of_preset(named.preset)
        if family and named is not preset:
            raise ValueError(f"the preset {model} is the {preset.name} model, not {family}")
        return preset
    folder = Path(model).expanduser()
    found = family_of_folder(folder) if folder.is_dir() else None
    if found is None and folder.is_dir():  # a LoRA adapter folder: the family of the base it records
        from .adapters import is_adapter, read_base_identity

        recorded = (read_base_identity(folder) or {}).get("family") if is_adapter(folder) else None
        found = FAMILIES.get(recorded)
    if found is not None:
        if family and found is not named:
            raise ValueError(f"{folder} holds a {found.name} model ({found.files.t3}), not {family}")
        return found
    by_repo = {f.repo_id.lower(): f for f in FAMILIES.values() if f.repo_id != FAMILIES["english"].repo_id}
    return named or by_repo.get(str(model).lower()) or FAMILIES["english"]


def constant_buffer(key: str) -> bool:
    """S3Gen entries a file may lack because the module rebuilds them (the English load is lenient)."""
    return key in ("tokenizer._mel_filters", "tokenizer.window") or key.endswith("num_batches_tracked")


def read_t3_config(family: Family, folder: Path) -> T3Config:
    sidecar = folder / T3_CONFIG_FILE
    if not sidecar.is_file():
        return family.t3
    try:
        fields = json.loads(sidecar.read_text())
        fields["alignment_heads"] = tuple(tuple(h) for h in fields.get("alignment_heads", ()))
        return T3Config(**fields)
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{sidecar} is not a valid T3 config: {e}") from e


def read_s3gen(family: Family, folder: Path) -> S3Gen:
    return load_module(family.build_s3gen(), find_weights(folder, family.files.s3gen), remap=remap_weight_norm_keys,
                       may_be_missing=constant_buffer, ignore_unexpected=family.lenient_s3gen)


def read_folder(family: Family, folder: str | Path, t3_model: str | None = None) -> ModelParts:
    """A folder in the official layout (also what our training writes). `t3_model` picks the multilingual T3 file
    (families.multilingual_t3_file)."""
    folder, files = Path(folder), family.files
    if family is MULTILINGUAL:
        files = dataclasses.replace(files, t3=multilingual_t3_file(t3_model, folder))
    elif t3_model:
        raise ValueError(f"t3_model applies to the multilingual model only, not to {family.name}")
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    missing = [f for f in (files.t3, files.s3gen, files.ve) if not find_weights(folder, f).is_file()]
    missing += [] if (folder / files.tokenizer).is_file() else [files.tokenizer]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (expected the official layout: "
                                f"{', '.join(files.all())})")
    t3 = load_module(T3(read_t3_config(family, folder), init_weights=False), find_weights(folder, files.t3))
    ve = load_module(VoiceEncoder(), find_weights(folder, files.ve))
    try:
        tokenizer = family.read_tokenizer(folder / files.tokenizer)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the tokenizer in {folder}: {e}") from e
    if tokenizer.vocab_size > t3.cfg.text_vocab_size:
        raise CheckpointError(f"{files.tokenizer} has {tokenizer.vocab_size} tokens but T3 only "
                              f"{t3.cfg.text_vocab_size} text embeddings")
    conds = Conditionals.load(folder / files.conds) if (folder / files.conds).is_file() else None
    return ModelParts(t3, read_s3gen(family, folder), ve, tokenizer, conds)


def download(family: Family, repo_id: str | None = None, revision: str = "main", t3_model: str | None = None) -> Path:
    files = family.files
    if family is MULTILINGUAL:  # only the T3 file asked for, as upstream
        files = dataclasses.replace(files, t3=multilingual_t3_file(t3_model))
    return download_model(files, repo_id or family.repo_id, revision)


def build_preset(family: Family, full_size: bool = False) -> ModelParts:
    """The real architecture with deterministic synthetic weights: no intelligible speech. T3 at toy size, or at
    the official size (`full_size`: the synthetic-<family> presets, for timing). The tokenizer is the tiny
    preset's either way (no official vocabulary is available here); its ids fit every family's T3."""
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten
        t3 = T3(family.t3 if full_size else family.tiny_t3, init_weights=False)
    return ModelParts(fill_synthetic(t3).eval(), presets.synthetic_s3gen(family), presets.tiny_voice_encoder(),
                      family.tiny_tokenizer())


def write_folder(parts: ModelParts, family: Family, folder: str | Path) -> Path:
    """The official layout, plus t3_config.json when T3 is not of the family's official size."""
    folder, files = Path(folder), family.files
    folder.mkdir(parents=True, exist_ok=True)
    save_module(parts.t3, folder / files.t3)
    save_module(parts.ve, folder / files.ve)
    save_module(parts.s3gen, folder / files.s3gen)
    # a grapheme tokenizer is one file; GPT-2's BPE is the files AutoTokenizer reads from the folder
    parts.tokenizer.save(folder if isinstance(parts.tokenizer, BpeTokenizer) else folder / files.tokenizer)
    if parts.conds is not None:
        parts.conds.save(folder / files.conds)
    if parts.t3.cfg != family.t3:
        (folder / T3_CONFIG_FILE).write_text(json.dumps(asdict(parts.t3.cfg), indent=1))
    else:
        (folder / T3_CONFIG_FILE).unlink(missing_ok=True)
    return folder
