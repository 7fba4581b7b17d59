"""Grapheme tokenizer of the official English model, plus the base shared with the multilingual one."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .normalize import TextError

START = "[START]"
STOP = "[STOP]"
UNK = "[UNK]"
SPACE = "[SPACE]"
PAD = "[PAD]"
SEP = "[SEP]"
CLS = "[CLS]"
MASK = "[MASK]"
SPECIAL_TOKENS = (START, STOP, UNK, SPACE, PAD, SEP, CLS, MASK)

logger = logging.getLogger(__name__)


class GraphemeTokenizer:
    """Loading, id lookup and decoding common to both official vocabularies.

    Subclasses set `FILE_NAME`/`MODEL_NAME` (for error messages) and `_log`, and define `encode`.
    """

    FILE_NAME = "tokenizer.json"
    MODEL_NAME = "English"
    _log = logger

    def __init__(self, tokenizer: Tokenizer):
        missing = [tok for tok in (START, STOP) if tokenizer.token_to_id(tok) is None]
        if missing:
            raise TextError(f"tokenizer vocabulary lacks required token(s): {', '.join(missing)}")
        self._tokenizer = tokenizer
        self._unk_id = tokenizer.token_to_id(UNK)

    @classmethod
    def _load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer file not found: {path}; the {cls.MODEL_NAME} model folder must contain "
                f"{cls.FILE_NAME}"
            )
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust parser raises a bare Exception
            raise TextError(f"{path} is not a valid tokenizer JSON: {err}") from err

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode_prepared(self, text: str) -> list[int]:
        """Encode text whose spaces are still literal; the vocabularies spell a space `[SPACE]`."""
        text = text.replace(" ", SPACE)
        encoding = self._tokenizer.encode(text)
        ids = list(encoding.ids)
        if self._unk_id is not None and self._unk_id in ids:
            unknown = sorted({text[a:b] for i, (a, b) in zip(ids, encoding.offsets) if i == self._unk_id})
            self._log.warning("characters not in the %s vocabulary, encoded as %s: %s",
                              self.MODEL_NAME, UNK, " ".join(repr(c) for c in unknown))
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Invert `encode` up to unknown characters, which are dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        text = self._tokenizer.decode(list(ids), skip_special_tokens=False)
        text = text.replace(" ", "").replace(SPACE, " ")
        for tok in (STOP, UNK, START):
            text = text.replace(tok, "")
        return text

    def save(self, path: str | Path) -> None:
        self._tokenizer.save(str(path))

    @staticmethod
    def _check_text(text: str) -> None:
        if not isinstance(text, str):
            raise TextError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise TextError("text is empty")

    @staticmethod
    def _as_batch(ids: list[int]) -> torch.LongTensor:
        return torch.tensor([ids], dtype=torch.long)


class EnTokenizer(GraphemeTokenizer):
    """Character-level tokenizer of the English model; text is expected already normalized."""

    @classmethod
    def from_file(cls, path: str | Path) -> EnTokenizer:
        return cls(cls._load(path))

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        return self._encode_prepared(text)

    def text_to_tokens(self, text: str) -> torch.LongTensor:
        return self._as_batch(self.encode(text))
