"""The model families, as data: what differs between them is described here, and nowhere else.

A family is its T3 (backbone configuration, official and tiny), its checkpoint file names, its text tokenizer and
language rule, its S3Gen variant and its default sampling. Loading (inference/loading.py), the facade, the server,
training and evaluation read these descriptions instead of branching on the family's name, so a new family is a
new `Family` plus the modules that differ.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .checkpoints import ModelFiles
from .models.s3gen.s3gen import S3Gen
from .models.t3 import SamplingConfig, T3Config
from .models.tokenizers import EnTokenizer, MTLTokenizer, TextError, build_char_tokenizer, normalize_text
from .models.tokenizers.languages import check_language
from .models.tokenizers.synthetic_bpe import synthetic_bpe_tokenizer
from .models.tokenizers.turbo import BpeTokenizer, turbo_punc_norm
from .voice import NANO_VOICE, ORIGINAL_VOICE, TURBO_VOICE, VoiceRules

# the reasons a family gives for refusing a setting it has no use for
NO_GUIDANCE = "it has no classifier-free guidance"
NOT_USED = "its T3 has no {name}"


@dataclass(frozen=True)
class Decoding:
    """How a loaded model decodes where versions of one family differ (multilingual v2 and v3, kit 7.11).

    alignment_guard: the multilingual alignment analyzer (reference fork; upstream removed it).
    trim_last_token: cut the last speech token's 40 ms from the audio (upstream, for multilingual).
    """

    alignment_guard: bool = False
    trim_last_token: bool = False
    repetition_penalty: float | None = None  # None: the family's


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
    sampling: SamplingConfig  # the reference's defaults for this family
    needs_language: bool  # the text is encoded with a language tag
    # the reference loads the English s3gen.safetensors with strict=False: unknown keys are logged, not refused
    lenient_s3gen: bool = False
    build_s3gen: Callable[[], S3Gen] = S3Gen
    normalize: Callable[[str], str] = normalize_text
    voice: VoiceRules = ORIGINAL_VOICE
    # settings this family's models do not use -> why; refused when given a value other than off (0)
    unused: dict[str, str] = field(default_factory=lambda: {"top_k": NOT_USED.format(name="top-k filter")})
    decoding: Decoding = Decoding()
    # speech tokens appended before S3Gen (Turbo: three silence tokens, so the audio does not end abruptly)
    tail_tokens: tuple[int, ...] = ()
    # StreamConfig defaults of this family's streams, where they differ from StreamConfig's (bench/RESULTS.md)
    stream: dict = field(default_factory=dict)
    size: str = ""  # for tables and --help
    purpose: str = ""

    @property
    def synthetic_preset(self) -> str:
        """The preset with the official sizes and synthetic weights: what benchmarks time (no speech either)."""
        return f"synthetic-{self.name}"

    @property
    def repetition_penalty(self) -> float:
        return self.sampling.repetition_penalty

    def check_settings(self, **given) -> None:
        """Refuse, with the reason, a setting this family does not use (None and 0 are 'not set')."""
        for name, value in given.items():
            if name in self.unused and value not in (None, 0, 0.0):
                raise ValueError(f"{name}={value} does not apply to the {self.name} model: {self.unused[name]}. "
                                 f"Leave it unset (or 0).")

    def encode(self, tokenizer, text: str, language_id: str | None) -> list[int]:
        """Normalised text -> token ids (no start/stop), after this family's language rule."""
        if self.needs_language:
            if not language_id:
                raise TextError(f"the {self.name} model needs language_id (e.g. 'fr')")
            return tokenizer.encode(text, check_language(language_id))
        if language_id not in (None, "", "en"):
            raise TextError(f"the {self.name} model cannot speak language {language_id!r}; use the multilingual "
                            "model (--model with the multilingual checkpoint)")
        return tokenizer.encode(text)


def _char_tokenizer(cfg: T3Config, multilingual: bool):
    tok = build_char_tokenizer(cfg.text_vocab_size, language_tags=multilingual)
    return MTLTokenizer(tok) if multilingual else EnTokenizer(tok)


@functools.cache
def _tiny_bpe() -> BpeTokenizer:
    return synthetic_bpe_tokenizer()


ENGLISH = Family(
    name="english", repo_id="ResembleAI/chatterbox",
    files=ModelFiles(t3="t3_cfg.safetensors", ve="ve.safetensors", s3gen="s3gen.safetensors",
                     tokenizer="tokenizer.json"),
    t3=T3Config.english(), tiny_t3=T3Config.tiny(), preset="tiny",
    read_tokenizer=EnTokenizer.from_file, tiny_tokenizer=lambda: _char_tokenizer(T3Config.tiny(), False),
    sampling=SamplingConfig(), needs_language=False, lenient_s3gen=True,
    size="0.5B (Llama T3) + 10-step S3Gen", purpose="English, emotion exaggeration, the original model")

MULTILINGUAL = Family(
    name="multilingual", repo_id="ResembleAI/chatterbox",
    files=ModelFiles(t3="t3_mtl23ls_v2.safetensors", ve="ve.pt", s3gen="s3gen.pt",
                     tokenizer="grapheme_mtl_merged_expanded_v1.json", extra=("Cangjie5_TC.json",)),
    t3=T3Config.multilingual(), tiny_t3=T3Config.tiny(multilingual=True), preset="tiny-multilingual",
    read_tokenizer=MTLTokenizer.from_file, tiny_tokenizer=lambda: _char_tokenizer(T3Config.tiny(True), True),
    sampling=SamplingConfig(repetition_penalty=2.0), needs_language=True, decoding=Decoding(alignment_guard=True),
    size="0.5B (Llama T3) + 10-step S3Gen", purpose="23 languages (v2, or v3 with t3_model=v3)")

# Turbo and Nano share everything but T3's size (kit 3.5-3.6, 7.8-7.10)
_GPT2_FILES = dict(ve="ve.safetensors", s3gen="s3gen_meanflow.safetensors", tokenizer="tokenizer_config.json",
                   extra=("vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json",
                          "added_tokens.json"))
_GPT2_COMMON = dict(
    read_tokenizer=lambda path: BpeTokenizer.from_folder(Path(path).parent), tiny_tokenizer=_tiny_bpe,
    sampling=SamplingConfig(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, min_p=0.0,
                            cfg_weight=0.0, max_new_tokens=1001),
    needs_language=False, build_s3gen=functools.partial(S3Gen, meanflow=True), normalize=turbo_punc_norm,
    tail_tokens=(4299, 4299, 4299),
    # With 2 flow steps, the voice prompt is most of each chunk's S3Gen work: a chunk decodes the last 2 s of it
    # (not up to 10 s) and 20 emitted tokens (not 50) as left context. Measured on 2 CPU cores with a 10 s voice:
    # S3Gen's time per streamed second -40%; the mel's cost beside one-shot is in bench/RESULTS.md.
    stream=dict(prompt_tokens=50, left_context=20),
    unused={"cfg_weight": NO_GUIDANCE, "min_p": NOT_USED.format(name="min-p filter"),
            "exaggeration": NOT_USED.format(name="emotion conditioning")})

TURBO = Family(
    name="turbo", repo_id="ResembleAI/chatterbox-turbo", files=ModelFiles(t3="t3_turbo_v1.safetensors", **_GPT2_FILES),
    t3=T3Config.turbo(), tiny_t3=T3Config.tiny_turbo(4096), preset="tiny-turbo", voice=TURBO_VOICE, **_GPT2_COMMON,
    size="350M (GPT-2 medium T3) + 2-step meanflow S3Gen",
    purpose="English voice agents: low latency, paralinguistic tags ([laugh], [cough], ...)")

NANO = Family(
    name="nano", repo_id="ResembleAI/chatterbox-nano", files=ModelFiles(t3="t3_nano_v1.safetensors", **_GPT2_FILES),
    t3=T3Config.nano(), tiny_t3=T3Config.tiny_turbo(4096), preset="tiny-nano", voice=NANO_VOICE, **_GPT2_COMMON,
    size="110M (GPT-2 small T3) + 2-step meanflow S3Gen", purpose="English on a CPU or a device; Turbo's design")

FAMILIES: dict[str, Family] = {f.name: f for f in (ENGLISH, MULTILINGUAL, TURBO, NANO)}
PRESETS: tuple[str, ...] = tuple(f.preset for f in FAMILIES.values()) + tuple(
    f.synthetic_preset for f in FAMILIES.values())


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_preset(name: str) -> Family | None:
    return next((f for f in FAMILIES.values() if name in (f.preset, f.synthetic_preset)), None)


def is_full_size_preset(name: str) -> bool:
    return any(name == f.synthetic_preset for f in FAMILIES.values())


def family_of_folder(folder: Path) -> Family | None:
    """The family whose T3 file the folder holds (either format: .safetensors or .pt); multilingual v3 and
    single-language packs by their tokenizer beside a T3 file of another name."""
    from .checkpoints import find_weights

    for family in FAMILIES.values():
        if find_weights(folder, family.files.t3).is_file():
            return family
    if (folder / MULTILINGUAL.files.tokenizer).is_file() and multilingual_t3_files(folder):
        return MULTILINGUAL
    return None


MULTILINGUAL_T3 = {"v2": "t3_mtl23ls_v2.safetensors", "v3": "t3_mtl23ls_v3.safetensors"}


def multilingual_t3_files(folder: Path) -> list[str]:
    """T3 files a multilingual folder may hold under other names (v3, single-language packs): any `t3_*` file that
    is not another family's."""
    others = {f.files.t3 for f in FAMILIES.values() if f is not MULTILINGUAL}
    return sorted(p.name for p in folder.glob("t3_*.safetensors") if p.name not in others)


def multilingual_t3_file(t3_model: str | None, folder: Path | None = None) -> str:
    """`t3_model` as upstream takes it: None or "" (v2, or the folder's only T3 file), "v2", "v3", the file names
    without extension, or any `<file>.safetensors` (a single-language pack)."""
    if not t3_model:
        found = multilingual_t3_files(folder) if folder is not None else []
        return found[0] if len(found) == 1 else MULTILINGUAL_T3["v2"]
    name = MULTILINGUAL_T3.get(t3_model) or MULTILINGUAL_T3.get(t3_model.removeprefix("t3_mtl23ls_"))
    if name:
        return name
    if t3_model.endswith(".safetensors") and "/" not in t3_model:
        return t3_model
    raise ValueError(f"t3_model must be v2, v3 or a <file>.safetensors in the model folder, got {t3_model!r}")


def multilingual_decoding(t3_file: str) -> Decoding:
    """v2 keeps the reference fork's decoding; v3 and the packs trained from it decode as upstream does now."""
    if t3_file == MULTILINGUAL_T3["v2"]:
        return MULTILINGUAL.decoding
    return Decoding(alignment_guard=False, trim_last_token=True, repetition_penalty=1.2)
