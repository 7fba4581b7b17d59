"""The model families, as data: what differs between them is described here, and nowhere else.

A family is its T3 (backbone configuration, official and tiny), its checkpoint file names, its text tokenizer and
language rule, its S3Gen variant and its default sampling. Loading (inference/loading.py), the facade, the server,
training and evaluation read these descriptions instead of branching on the family's name, so a new family is a
new `Family` plus the modules that differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .checkpoints import ModelFiles
from .models.s3gen.s3gen import S3Gen
from .models.t3 import T3Config
from .models.tokenizers import EnTokenizer, MTLTokenizer, TextError, build_char_tokenizer
from .models.tokenizers.languages import check_language


@dataclass(frozen=True)
class Family:
    name: str  # recorded in adapters' chatterbox_base.json ("family")
    repo_id: str  # the official Hugging Face repository
    files: ModelFiles
    t3: T3Config  # the official size; other sizes travel in t3_config.json beside the weights
    tiny_t3: T3Config  # the preset's toy size
    preset: str  # name of the preset with synthetic weights
    read_tokenizer: Callable[[Path], object]  # the tokenizer file -> tokenizer
    tiny_tokenizer: Callable[[], object]
    repetition_penalty: float  # the reference's default for this family
    needs_language: bool  # the text is encoded with a language tag
    # the reference loads the English s3gen.safetensors with strict=False: unknown keys are logged, not refused
    lenient_s3gen: bool = False
    build_s3gen: Callable[[], S3Gen] = S3Gen

    def encode(self, tokenizer, text: str, language_id: str | None) -> list[int]:
        """Normalised text -> token ids (no start/stop), after this family's language rule."""
        if self.needs_language:
            if not language_id:
                raise TextError(f"the {self.name} model needs language_id (e.g. 'fr')")
            return tokenizer.encode(text, check_language(language_id))
        if language_id not in (None, "en"):
            raise TextError(f"the {self.name} model cannot speak language {language_id!r}; use the multilingual "
                            "model (--model with the multilingual checkpoint)")
        return tokenizer.encode(text)


def _char_tokenizer(cfg: T3Config, multilingual: bool):
    tok = build_char_tokenizer(cfg.text_vocab_size, language_tags=multilingual)
    return MTLTokenizer(tok) if multilingual else EnTokenizer(tok)


ENGLISH = Family(
    name="english", repo_id="ResembleAI/chatterbox",
    files=ModelFiles(t3="t3_cfg.safetensors", ve="ve.safetensors", s3gen="s3gen.safetensors",
                     tokenizer="tokenizer.json"),
    t3=T3Config.english(), tiny_t3=T3Config.tiny(), preset="tiny",
    read_tokenizer=EnTokenizer.from_file, tiny_tokenizer=lambda: _char_tokenizer(T3Config.tiny(), False),
    repetition_penalty=1.2, needs_language=False, lenient_s3gen=True)

MULTILINGUAL = Family(
    name="multilingual", repo_id="ResembleAI/chatterbox",
    files=ModelFiles(t3="t3_mtl23ls_v2.safetensors", ve="ve.pt", s3gen="s3gen.pt",
                     tokenizer="grapheme_mtl_merged_expanded_v1.json", extra=("Cangjie5_TC.json",)),
    t3=T3Config.multilingual(), tiny_t3=T3Config.tiny(multilingual=True), preset="tiny-multilingual",
    read_tokenizer=MTLTokenizer.from_file, tiny_tokenizer=lambda: _char_tokenizer(T3Config.tiny(True), True),
    repetition_penalty=2.0, needs_language=True)

FAMILIES: dict[str, Family] = {f.name: f for f in (ENGLISH, MULTILINGUAL)}
PRESETS: tuple[str, ...] = tuple(f.preset for f in FAMILIES.values())


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_preset(name: str) -> Family | None:
    return next((f for f in FAMILIES.values() if f.preset == name), None)


def family_of_folder(folder: Path) -> Family | None:
    """The family whose T3 file the folder holds (either format: .safetensors or .pt)."""
    from .checkpoints import find_weights

    for family in FAMILIES.values():
        if find_weights(folder, family.files.t3).is_file():
            return family
    return None
