"""Character vocabularies in the official tokenizer format, for the tiny preset and tests.

The official vocabularies cannot be downloaded here; these keep the same special-token ids and sizes so
models built on them have the official embedding shapes.
"""
from __future__ import annotations

import string

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from .english import CLS, MASK, PAD, SEP, SPACE, START, STOP, UNK
from .languages import SUPPORTED_LANGUAGES
from .normalize import TextError

START_TEXT_ID = 255
STOP_TEXT_ID = 0

_LEADING_SPECIALS = (STOP, UNK, SPACE, PAD, SEP, CLS, MASK)
_PUNCTUATION = ".,!?'\"-()"


def _char_range(first: int, last: int) -> list[str]:
    return [chr(c) for c in range(first, last + 1)]


def _characters(language_tags: bool) -> list[str]:
    chars = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + _PUNCTUATION)
    if language_tags:
        chars += [c for c in _char_range(0xE0, 0xFF) if c.isalpha()]
        chars += _char_range(0x0300, 0x036F)  # combining marks left by NFKD
        chars += _char_range(0x1100, 0x1112) + _char_range(0x1161, 0x1175) + _char_range(0x11A8, 0x11C2)
    return chars


def build_char_tokenizer(vocab_size: int, language_tags: bool) -> Tokenizer:
    """Deterministic: the same arguments always give the same ids."""
    tags = [f"[{code}]" for code in SUPPORTED_LANGUAGES] if language_tags else []
    specials = [*_LEADING_SPECIALS, START, *tags]
    fill = [*tags, *_characters(language_tags)]
    needed = len(_LEADING_SPECIALS) + 1 + len(fill)
    if vocab_size < max(needed, START_TEXT_ID + 1):
        raise TextError(f"vocab_size {vocab_size} is too small; need at least {max(needed, START_TEXT_ID + 1)}")

    tokens: list[str | None] = [None] * vocab_size
    for i, tok in enumerate(_LEADING_SPECIALS):
        tokens[i] = tok
    tokens[START_TEXT_ID] = START
    free = (i for i in range(vocab_size) if tokens[i] is None)
    for tok, idx in zip(fill, free):
        tokens[idx] = tok
    vocab = {tok if tok is not None else f"<unused_{i}>": i for i, tok in enumerate(tokens)}

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(tok, special=True) for tok in specials])
    return tokenizer
