"""The test sentences an evaluation speaks, from the sets shipped in `evaluation/sentences/` or a user file.

Shipped sets: `harvard_en` (Harvard lists 1-5, 50 sentences, public domain) and one set of 10 everyday
sentences per other language of the multilingual model, named by its code (`fr`, `zh`, ...).

A sentence file is UTF-8 text, one sentence a line; `#` comments and blank lines are skipped. Either
every line is `id<TAB>text`, or no line has a tab and the line number serves as id. Every sentence id
is `<set>-<line id>`, where a user file's set name is its stem: `harvard_en-01.01`, `fr-03`, `mine-7`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.models.tokenizers.languages import SUPPORTED_LANGUAGES

DATA_DIR = Path(__file__).with_name("sentences")
HARVARD = "harvard_en"

# Built-in set name -> the language its text is in.
SET_LANGUAGE: dict[str, str] = {HARVARD: "en", **{code: code for code in SUPPORTED_LANGUAGES if code != "en"}}
BUILTIN: tuple[str, ...] = tuple(SET_LANGUAGE)
DEFAULT_SET: dict[str, str] = {language: name for name, language in SET_LANGUAGE.items()}

# Synthesis splits longer text into pieces (`max_chars_per_call`); a test sentence must be one piece,
# or the WER would score the joins.
MAX_CHARS = 300


class SentenceSetError(ValueError):
    """A sentence set cannot be used; the message names the set, the line or the id."""


@dataclass(frozen=True)
class Sentence:
    id: str
    text: str


def load_sentences(spec: str, language: str, limit: int | None = None) -> list[Sentence]:
    """The sentences `spec` names, in file order, the first `limit` of them if given.

    `spec` is "default" (the built-in set for `language`), a built-in set name (see BUILTIN; it must be
    in `language`), or a path to a `.txt` file (its language is the caller's word).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SentenceSetError(f"limit must be a positive whole number or None, got {limit!r}")
    code = language.lower() if isinstance(language, str) else language
    if spec == "default":
        if code not in DEFAULT_SET:
            raise SentenceSetError(f"no built-in sentence set for language {language!r}; built-in sets exist "
                                   f"for: {', '.join(sorted(DEFAULT_SET))}. Give a sentence file instead.")
        spec = DEFAULT_SET[code]
    if spec in SET_LANGUAGE:
        if SET_LANGUAGE[spec] != code:
            raise SentenceSetError(f"built-in sentence set {spec!r} is {SUPPORTED_LANGUAGES[SET_LANGUAGE[spec]]} "
                                   f"text, but the language is {language!r}")
        sentences = _read(DATA_DIR / f"{spec}.txt", spec)
    else:
        sentences = _read(_user_file(spec), Path(spec).stem)
    return sentences[:limit]


def _user_file(spec: str) -> Path:
    spec = str(spec)  # a Path works too
    path = Path(spec)
    looks_like_path = path.suffix != "" or "/" in spec or "\\" in spec or path.exists()
    if not looks_like_path:
        raise SentenceSetError(f"unknown sentence set {spec!r}; built-in sets: default, {', '.join(BUILTIN)}; "
                               "or give the path of a .txt file")
    if not path.is_file():
        raise FileNotFoundError(f"sentence file not found: {path}")
    if path.suffix.lower() != ".txt":
        raise SentenceSetError(f"sentence file {path} must be a .txt file (id<TAB>text or one sentence a line)")
    return path


def _read(path: Path, name: str) -> list[Sentence]:
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SentenceSetError(f"{path} is not UTF-8 text: {err}") from err
    lines = [(number, line) for number, line in enumerate(raw.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise SentenceSetError(f"sentence set {name!r} ({path}) has no sentences")
    tabbed = any("\t" in line for _, line in lines)

    sentences: list[Sentence] = []
    seen: dict[str, int] = {}
    for number, line in lines:
        where = f"{path}, line {number}"
        if tabbed:
            line_id, _, text = line.partition("\t")
            line_id, text = line_id.strip(), " ".join(text.split())
            if not line_id:
                raise SentenceSetError(f"{where}: the text has no id before the tab")
            if not text:
                raise SentenceSetError(f"{where}: id {line_id!r} has no text (the file uses id<TAB>text lines)")
        else:
            line_id, text = str(number), " ".join(line.split())
        sentence_id = f"{name}-{line_id}"
        if line_id in seen:
            raise SentenceSetError(f"{where}: duplicate id {sentence_id!r} (first on line {seen[line_id]})")
        seen[line_id] = number
        if len(text) > MAX_CHARS:
            raise SentenceSetError(f"{where}: sentence {sentence_id!r} is {len(text)} characters long; "
                                   f"the limit is {MAX_CHARS}, split it")
        sentences.append(Sentence(sentence_id, text))
    return sentences
