"""Text front end: normalization, per-language rewriting, the official grapheme tokenizers and Turbo's BPE."""
from .english import EnTokenizer
from .languages import SUPPORTED_LANGUAGES
from .multilingual import MTLTokenizer
from .normalize import TextError, normalize_text
from .synthetic_bpe import synthetic_bpe_tokenizer
from .synthetic_vocab import build_char_tokenizer
from .turbo import BpeTokenizer, turbo_punc_norm

__all__ = ["EnTokenizer", "MTLTokenizer", "BpeTokenizer", "SUPPORTED_LANGUAGES", "normalize_text", "turbo_punc_norm",
           "TextError", "build_char_tokenizer", "synthetic_bpe_tokenizer"]
