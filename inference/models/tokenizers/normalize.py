"""Text clean-up applied before tokenizing, matching how the official training text was prepared."""
from __future__ import annotations

import re


class TextError(ValueError):
    """Bad input text, language or vocabulary; the message says which and why."""


SENTENCE_ENDERS = (".", "!", "?", "-", ",", "、", "，", "。", "？", "！")

# Order matters: "..." must become ", " before ":" or "-" rules can see it.
_REPLACEMENTS = (
    ("...", ", "),
    ("…", ", "),
    (":", ","),
    (" - ", ", "),
    (";", ", "),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)


def normalize_text(text: str) -> str:
    """Make text look like the training data; punctuation the models never saw degrades prosody."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty or only whitespace")

    text = " ".join(text.split())
    if text[0].islower():
        text = text[0].upper() + text[1:]
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(SENTENCE_ENDERS):
        text += "."
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def split_for_synthesis(text: str, max_chars: int = 300) -> list[str]:
    """Split long text into pieces of at most ~max_chars at sentence ends (then commas, then spaces),
    so that no piece runs past the decoder's token budget. Short text stays one piece; no text is dropped."""
    if not isinstance(text, str) or not text.strip():
        raise TextError("text is empty or only whitespace")
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in (s for s in _SENTENCE_END.split(text) if s.strip()):
        for part in _cut(sentence.strip(), max_chars):
            if current and len(current) + 1 + len(part) > max_chars:
                pieces.append(current)
                current = part
            else:
                sep = "" if current.endswith(("。", "！", "？")) else " "
                current = f"{current}{sep}{part}".strip()
    if current:
        pieces.append(current)
    return pieces


def _cut(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than max_chars is cut at commas, else at the last space before the limit that is not
    inside brackets (a tag such as Turbo's `[clear throat]` cut in two would be read out as words)."""
    out = []
    while len(sentence) > max_chars:
        window = sentence[: max_chars + 1]
        at = max(window.rfind(", "), window.rfind("、", 0, max_chars), window.rfind("，", 0, max_chars))
        at = at + 1 if at > 0 else _last_space_outside_brackets(window)
        if at <= 0:
            at = max_chars
        out.append(sentence[:at].strip())
        sentence = sentence[at:].strip()
    return out + ([sentence] if sentence else [])


def _last_space_outside_brackets(window: str) -> int:
    """The last space of `window` not inside an open `[...]` (-1: none; the last space if every one is inside)."""
    at = window.rfind(" ")
    opened = window.rfind("[", 0, at)
    if opened > window.rfind("]", 0, at):
        before = window.rfind(" ", 0, opened + 1)
        return before if before > 0 else at
    return at
