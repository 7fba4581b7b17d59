"""Text front end of Chatterbox Turbo and Nano: their own punctuation clean-up and a GPT-2 byte-level BPE tokenizer.

Turbo reads text with a GPT-2 tokenizer (`transformers.AutoTokenizer` on the repository's files) whose added
entries include paralinguistic tags such as `[laugh]`. A tag is only a tag when it reaches the model as its single
added token; anything else in brackets is spelled out by BPE and spoken, so tags are checked here (kit 7.9).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from .english import GraphemeTokenizer
from .normalize import TextError

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
TURBO_VOCAB_SIZE = 50276  # GPT-2's 50,257 + 19 added entries; the official Turbo and Nano T3 text tables
# The tags upstream names (EVENT_TAGS of its demo app); the official vocabulary may hold more (style tags).
UPSTREAM_TAGS = ("[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]", "[sniff]", "[gasp]", "[chuckle]",
                 "[laugh]")
EMPTY_TEXT = "You need to add some text for me to talk."

# Turbo's replacements, in the reference's order. Unlike the English rules, "..." , " - " and ";" stay.
_TURBO_REPLACEMENTS = (
    ("…", ", "),
    (":", ","),
    ("—", "-"),
    ("–", "-"),
    (" ,", ","),
    ("“", '"'),
    ("”", '"'),
    ("‘", "'"),
    ("’", "'"),
)
_TURBO_ENDERS = (".", "!", "?", "-", ",")


def turbo_punc_norm(text: str) -> str:
    """Turbo's `punc_norm`, kept to the letter (golden `turbo_text_norm`): the model was trained on text cleaned
    this way. Its quirks are the reference's: the first character is upper-cased *before* whitespace is collapsed
    (so leading spaces prevent it), replacements made after the collapse may leave double spaces, and empty text
    becomes a sentence asking for text (the facade refuses empty text before it gets here)."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if not text:
        return EMPTY_TEXT
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in _TURBO_REPLACEMENTS:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(_TURBO_ENDERS):
        text += "."
    return text


# A bracketed word or phrase: letters (any script), spaces and hyphens, starting with a letter.
_LETTER = r"[^\W\d_]"
_TAG_BODY = re.compile(rf"\s*{_LETTER}(?:{_LETTER}|[\s-])*")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")


def _tag_key(body: str) -> str:
    return " ".join(body.split()).lower()


def is_tag_shaped(token: str) -> bool:
    """`[laugh]`, `[clear throat]`: what a user means as a tag (not `[1]`, `[]`, `[see p. 3]`)."""
    return token.startswith("[") and token.endswith("]") and _TAG_BODY.fullmatch(token[1:-1]) is not None


class BpeTokenizer:
    """GPT-2 byte-level BPE of Turbo/Nano, wrapping a `transformers` tokenizer read from the model folder.

    `encode` gives what upstream's `tokenizer(text).input_ids` gives (no BOS/EOS, no 255/0, no truncation: the
    caller refuses text longer than the model takes instead of cutting it silently), after one check upstream does
    not make: bracketed tags.

    Tag rule. A bracket holding only letters, spaces and hyphens (`[laugh]`, `[clear throat]`, `[b c]`) is a tag:
      * a tag the vocabulary holds goes to the model as its single added token. Case and spacing inside the
        brackets are ignored (`[Laugh]`, `[ clear  throat ]` are `[laugh]`, `[clear throat]`): as typed they would
        otherwise be spelled out letter by letter and spoken;
      * any other tag raises TextError naming it and listing the known tags, for the same reason.
    Brackets holding anything else (`[1]`, `[see p. 3]`, `[]`) are ordinary text, passed to BPE unchanged as
    upstream does; so are unbalanced brackets.
    """

    def __init__(self, tokenizer, expected_size: int | None = None):
        if tokenizer.pad_token is None:  # as upstream: batching code may ask for a pad id
            tokenizer.pad_token = tokenizer.eos_token
        self._hf = tokenizer
        if expected_size is not None and len(tokenizer) != expected_size:
            log.warning("the text tokenizer has %d entries, the official Turbo/Nano one %d: ids may not match the "
                        "model's text table", len(tokenizer), expected_size)
        added = list(tokenizer.get_added_vocab())
        self._tags = tuple(sorted(t for t in added if is_tag_shaped(t)))
        self._tag_by_key = {_tag_key(t[1:-1]): t for t in self._tags}
        control = sorted({*(t for t in added if not is_tag_shaped(t)), *_special_tokens(tokenizer)},
                         key=len, reverse=True)
        # a control token goes with one space before it: "Hello <|endoftext|> world" -> "Hello world"
        self._control = re.compile(f" ?(?:{'|'.join(map(re.escape, control))})", re.IGNORECASE) if control else None

    @classmethod
    def from_folder(cls, folder: str | Path, expected_size: int | None = None) -> BpeTokenizer:
        """Read the tokenizer files of a model folder (tokenizer.json, or vocab.json + merges.txt, with their
        configuration files). `expected_size` (TURBO_VOCAB_SIZE for the official repositories) only warns."""
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            raise FileNotFoundError(f"{folder} holds no GPT-2 tokenizer (tokenizer.json, or vocab.json with "
                                    "merges.txt); the Turbo/Nano model folder must contain them")
        try:
            hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # transformers raises OSError, ValueError or the Rust parser's bare Exception
            raise TextError(f"{folder}: cannot read the tokenizer files ({type(e).__name__}: {e})") from e
        return cls(hf, expected_size)

    @property
    def hf_tokenizer(self):
        """The wrapped `transformers` tokenizer."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        return len(self._hf)

    @property
    def tags(self) -> tuple[str, ...]:
        """The vocabulary's paralinguistic tags (added tokens shaped like `[laugh]`), sorted."""
        return self._tags

    @property
    def eos_token_id(self) -> int:
        return self._hf.eos_token_id

    def save(self, folder: str | Path) -> None:
        """Write files `from_folder` (and `transformers.AutoTokenizer`) read back to the same ids."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        self._hf.save_pretrained(str(folder))

    def drop_control_tokens(self, text: str) -> str:
        """User text without special tokens such as `<|endoftext|>`, which only our code may place (typed, it would
        be read as one token and end the text in its middle). Tags stay. Empty text is refused here, as by the
        other families' tokenizers, rather than spoken as upstream's 'You need to add some text'."""
        _check_text(text)
        if self._control is None or not (found := self._control.findall(text)):
            return text
        log.warning("removed from the text: %s (control tokens are placed by the model's code only)",
                    " ".join(sorted({f.strip() for f in found})))
        text = self._control.sub("", text)
        if not text.strip():
            raise TextError(f"the text holds nothing but control tokens such as {EOS}")
        return text

    def resolve_tags(self, text: str) -> str:
        """Text with every tag written as the vocabulary spells it; TextError for an unknown tag (class doc)."""

        def resolve(match: re.Match) -> str:
            body = match.group(1)
            if _TAG_BODY.fullmatch(body) is None or match.group(0) in self._tags:
                return match.group(0)  # ordinary text, or a tag spelled as the vocabulary spells it
            known = self._tag_by_key.get(_tag_key(body))
            if known is None:
                listed = ", ".join(self._tags) if self._tags else "none"
                raise TextError(f"unknown tag [{' '.join(body.split())}]: this model's tags are {listed}. "
                                "Use one of them, or remove the brackets to have the words read out.")
            return known

        return _BRACKETED.sub(resolve, text)

    def encode(self, text: str) -> list[int]:
        """Normalised text -> ids, as upstream's `tokenizer(text).input_ids` (class doc for tags)."""
        text = self.resolve_tags(self.drop_control_tokens(text))
        return list(self._hf(text).input_ids)

    def text_to_tokens(self, text: str) -> torch.LongTensor:
        return torch.tensor([self.encode(text)], dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return self._hf.decode(list(ids), skip_special_tokens=False)


def _special_tokens(tokenizer) -> set[str]:
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
    return {str(tok) for name in names if (tok := getattr(tokenizer, name, None))}


def _check_text(text: str) -> None:
    GraphemeTokenizer._check_text(text)  # a str, not empty, valid Unicode: the other families' rule
    if not text.strip():
        raise TextError("text is empty or only whitespace")
