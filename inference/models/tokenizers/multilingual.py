"""Grapheme tokenizer of the official multilingual model: language tag plus per-language text rewriting."""
from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .english import GraphemeTokenizer
from .languages import check_language, prepare_text

logger = logging.getLogger(__name__)


class MTLTokenizer(GraphemeTokenizer):
    """Needs `model_dir` for Chinese, whose Cangjie table ships next to the vocabulary."""

    FILE_NAME = "grapheme_mtl_merged_expanded_v1.json"
    MODEL_NAME = "multilingual"
    _log = logger

    def __init__(self, tokenizer: Tokenizer, model_dir: Path | None = None):
        super().__init__(tokenizer)
        self.model_dir = Path(model_dir) if model_dir is not None else None

    @classmethod
    def from_file(cls, path: str | Path) -> MTLTokenizer:
        return cls(cls._load(path), model_dir=Path(path).parent)

    def encode(self, text: str, language_id: str, lowercase: bool = True, nfkd: bool = True) -> list[int]:
        self._check_text(text)
        code = check_language(language_id)
        if lowercase:
            text = text.lower()
        if nfkd:
            text = unicodedata.normalize("NFKD", text)  # before the control tokens go: NFKD makes ［ＳＴＯＰ］ [STOP]
        text = self.drop_control_tokens(text)
        text = prepare_text(text, code, self.model_dir)
        return self._encode_prepared(f"[{code}]{text}")

    def text_to_tokens(self, text: str, language_id: str) -> torch.LongTensor:
        return self._as_batch(self.encode(text, language_id))
