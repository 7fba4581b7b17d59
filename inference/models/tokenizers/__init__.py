"""Text front end: normalization, per-language rewriting and the official grapheme tokenizers."""
from .english import EnTokenizer
from .languages import SUPPORTED_LANGUAGES
from .multilingual import MTLTokenizer
from .normalize import TextError, normalize_text
from .synthetic_vocab import build_char_tokenizer

__all__ = ["EnTokenizer", "MTLTokenizer", "SUPPORTED_LANGUAGES", "normalize_text", "TextError",
           "build_char_tokenizer"]
