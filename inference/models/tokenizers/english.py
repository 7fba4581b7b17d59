"""Grapheme tokenizer of the official English model, plus the base shared with the multilingual one."""
from __future__ import annotations

import logging
import re
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
        added = sorted((t.content for t in tokenizer.get_added_tokens_decoder().values()), key=len, reverse=True)
        # a token goes with one space before it: "Hello [STOP] world" -> "Hello world"
        self._control = re.compile(f" ?(?:{'|'.join(map(re.escape, added))})", re.IGNORECASE) if added else None

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

    def drop_control_tokens(self, text: str) -> str:
        """User text without the vocabulary's control tokens ([START], [STOP], a language tag such as [fr]).

        Only our code may place them: a `[STOP]` typed in the text would otherwise be read as the end of the text
        in the middle of it, a `[fr]` would switch language. They are dropped (not spelled out as brackets and
        letters, which would be spoken), with a warning; case is ignored, as the multilingual model lowercases."""
        self._check_text(text)
        if self._control is None or not (found := self._control.findall(text)):
            return text
        self._log.warning("removed from the text: %s (control tokens are placed by the model's code only)",
                          " ".join(sorted({f.strip() for f in found})))
        text = self._control.sub("", text)
        if not text.strip():
            raise TextError("the text holds nothing but control tokens such as [STOP]")
        return text

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
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TextError(f"text holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is not "
                            "text: send valid Unicode") from None

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
        return self._encode_prepared(self.drop_control_tokens(text))

    def text_to_tokens(self, text: str) -> torch.LongTensor:
        return self._as_batch(self.encode(text))
