"""Text clean-up applied before tokenizing, matching how the official training text was prepared."""
from __future__ import annotations


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
