"""The multilingual model's languages and the script-specific rewriting each one was trained with."""
from __future__ import annotations

import importlib
import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from .normalize import TextError

SUPPORTED_LANGUAGES: dict[str, str] = {
    "ar": "Arabic",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "sv": "Swedish",
    "sw": "Swahili",
    "tr": "Turkish",
    "zh": "Chinese",
}

CANGJIE_FILE = "Cangjie5_TC.json"

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
_JAMO_LEAD, _JAMO_VOWEL, _JAMO_TAIL = 0x1100, 0x1161, 0x11A7
_SYLLABLES_PER_LEAD, _TAILS_PER_VOWEL = 588, 28


class MissingLanguagePackageError(TextError):
    """An optional per-language package is not installed."""


def check_language(language_id: str) -> str:
    """Return the canonical (lower-case) code; the model only knows the tags it was trained with."""
    code = language_id.lower() if isinstance(language_id, str) else language_id
    if code not in SUPPORTED_LANGUAGES:
        raise TextError(
            f"unsupported language {language_id!r}; supported codes: {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return code


# Optional packages that no extra can pull in, with how to get them instead.
_NOT_ON_PYPI = {"ru": "it is not on PyPI; install the russian_text_stresser project from its source "
                      "(extra [ru] is a placeholder)"}


def _import(module: str, language_id: str, package: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = package or module.split(".")[0]
        how = _NOT_ON_PYPI.get(language_id, f"pip install 'chatterbox-workbench[{language_id}]'")
        raise MissingLanguagePackageError(
            f"{SUPPORTED_LANGUAGES[language_id]} text needs the {package!r} package: {how}"
        ) from err


def decompose_hangul(text: str) -> str:
    """Split syllable blocks into conjoining Jamo, the units the Korean vocabulary holds."""
    out = []
    for ch in text:
        code = ord(ch)
        if not _HANGUL_FIRST <= code <= _HANGUL_LAST:
            out.append(ch)
            continue
        base = code - _HANGUL_FIRST
        out.append(chr(_JAMO_LEAD + base // _SYLLABLES_PER_LEAD))
        out.append(chr(_JAMO_VOWEL + (base % _SYLLABLES_PER_LEAD) // _TAILS_PER_VOWEL))
        if base % _TAILS_PER_VOWEL:
            out.append(chr(_JAMO_TAIL + base % _TAILS_PER_VOWEL))
    return "".join(out).strip()


@lru_cache(maxsize=1)
def _kakasi():
    return _import("pykakasi", "ja").kakasi()


def _has_kanji(text: str) -> bool:
    return any(0x4E00 <= ord(c) <= 0x9FFF for c in text)


def kanji_to_hiragana(text: str) -> str:
    """Spell kanji phonetically; the Japanese vocabulary covers kana, not the full kanji set."""
    out = []
    for item in _kakasi().convert(text):
        orig = item["orig"]
        if _has_kanji(orig):
            hira = item["hira"]
            # は/へ read as particles (wa/e) when a word starts with them; a space keeps them apart.
            out.append(" " + hira if hira[:1] in ("は", "へ") else hira)
        else:
            out.append(orig)  # only kanji needs a reading; kana and the rest stay as written
    return unicodedata.normalize("NFKD", "".join(out))


@lru_cache(maxsize=1)
def _pkuseg():
    return _import("spacy_pkuseg", "zh").pkuseg()


@lru_cache(maxsize=8)
def _cangjie_tables(folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    path = folder / CANGJIE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Chinese text needs {CANGJIE_FILE} in the model folder {folder}")
    glyph_to_code: dict[str, str] = {}
    code_to_glyphs: dict[str, list[str]] = {}
    for entry in json.loads(path.read_text(encoding="utf-8")):
        fields = entry.split("\t")
        if len(fields) < 2:
            continue
        glyph, code = fields[0], fields[1]
        glyph_to_code[glyph] = code
        code_to_glyphs.setdefault(code, []).append(glyph)
    return glyph_to_code, code_to_glyphs


def chinese_to_cangjie(text: str, model_dir: Path | None) -> str:
    """Spell each Han glyph by its Cangjie keys so a small vocabulary covers thousands of glyphs.

    Glyphs sharing a code are told apart by their rank among that code's glyphs.
    """
    segmenter = _pkuseg()
    if model_dir is None:
        raise FileNotFoundError(f"Chinese text needs {CANGJIE_FILE} from the model folder, but none was given")
    glyph_to_code, code_to_glyphs = _cangjie_tables(Path(model_dir).resolve())
    text = " ".join(segmenter.cut(text))
    out = []
    for ch in text:
        code = glyph_to_code.get(ch) if unicodedata.category(ch) == "Lo" else None
        if code is None:
            out.append(ch)
            continue
        rank = code_to_glyphs[code].index(ch)
        keys = code + (str(rank) if rank > 0 else "")
        out.append("".join(f"[cj_{k}]" for k in keys) + "[cj_.]")
    return "".join(out)


@lru_cache(maxsize=1)
def _dicta():
    return _import("dicta_onnx", "he").Dicta()


def add_hebrew_diacritics(text: str) -> str:
    """Restore niqqud; unpointed Hebrew leaves vowels ambiguous."""
    return _dicta().add_diacritics(text)


@lru_cache(maxsize=1)
def _stresser():
    module = _import("russian_text_stresser.text_stresser", "ru", package="russian_text_stresser")
    return module.RussianTextStresser()


def add_russian_stress(text: str) -> str:
    """Mark word stress, which Russian spelling does not show."""
    return _stresser().stress_text(text)


def prepare_text(text: str, language_id: str, model_dir: Path | None = None) -> str:
    """Apply the rewriting the multilingual model saw for this language (after lowercase and NFKD)."""
    code = check_language(language_id)
    if code == "ko":
        return decompose_hangul(text)
    if code == "ja":
        return kanji_to_hiragana(text)
    if code == "zh":
        return chinese_to_cangjie(text, model_dir)
    if code == "he":
        return add_hebrew_diacritics(text)
    if code == "ru":
        return add_russian_stress(text)
    return text
