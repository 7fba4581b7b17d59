"""Turbo/Nano text front end: its own punctuation rules, the GPT-2 BPE wrapper, tags, and the synthetic tokenizer."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from inference.models.tokenizers import (
    BpeTokenizer,
    TextError,
    normalize_text,
    synthetic_bpe_tokenizer,
    turbo_punc_norm,
)
from inference.models.tokenizers.synthetic_bpe import _learned
from inference.models.tokenizers.turbo import EMPTY_TEXT, EOS, TURBO_VOCAB_SIZE, UPSTREAM_TAGS, is_tag_shaped

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok() -> BpeTokenizer:
    return synthetic_bpe_tokenizer()


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("turbo_tokenizer")
    tok.save(folder)
    return folder


# --- turbo_punc_norm ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("", EMPTY_TEXT),
    ("  hello there", "hello there."),  # capitalised before the collapse: leading space prevents it
    ("\u00a0nbsp lead", "nbsp lead."),  # any Unicode space, as str.split sees it
    ("ßig deal", "SSig deal."),  # full Unicode upper-casing
    ("one - two", "One - two."),  # kept (English: "One, two.")
    ("a; b", "A; b."),  # kept (English: "A,  b.")
    ("Wait...", "Wait..."),  # kept (English: "Wait,")
    ("ok……", "Ok,,"),
    ("It’s “fine”", 'It\'s "fine".'),
    ("end —", "End -"),
    ("hello ,world", "Hello,world."),
    ("[laugh] well", "[laugh] well."),
])
def test_turbo_punc_norm(raw: str, expected: str) -> None:
    assert turbo_punc_norm(raw) == expected


def test_turbo_rules_differ_from_the_english_ones() -> None:
    for text in ("one - two", "a; b", "Wait...", "  hello"):
        assert turbo_punc_norm(text) != normalize_text(text)


def test_turbo_punc_norm_refuses_non_text() -> None:
    with pytest.raises(TextError, match="must be a str"):
        turbo_punc_norm(b"bytes")  # type: ignore[arg-type]


# --- tags ---------------------------------------------------------------------------------------------

def test_synthetic_tokenizer_shape(tok) -> None:
    assert tok.tags == tuple(sorted(UPSTREAM_TAGS))
    assert 1000 <= tok.vocab_size <= 4096
    assert tok.hf_tokenizer.pad_token == tok.hf_tokenizer.eos_token == EOS
    assert tok.eos_token_id == tok.hf_tokenizer.convert_tokens_to_ids(EOS)


@pytest.mark.parametrize("tag", UPSTREAM_TAGS)
def test_known_tag_is_one_id(tok, tag) -> None:
    tag_id, space_id = tok.hf_tokenizer.convert_tokens_to_ids([tag, "Ġ"])
    ids = tok.encode(f"Well {tag} okay.")
    assert ids == tok.encode("Well") + [space_id, tag_id] + tok.encode(" okay.")
    assert tok.decode(ids) == f"Well {tag} okay."


def test_tag_case_and_spacing_are_ignored(tok) -> None:
    assert tok.encode("Well [Laugh] okay.") == tok.encode("Well [laugh] okay.")
    assert tok.encode("So [ Clear  throat ] then.") == tok.encode("So [clear throat] then.")


@pytest.mark.parametrize(("text", "named"), [
    ("Oh [giggle] no.", "[giggle]"),
    ("a [b c] d", "[b c]"),
    ("Hm [clear-throat].", "[clear-throat]"),
    ("Ha [rire] oui.", "[rire]"),
])
def test_unknown_tag_is_refused_by_name(tok, text, named) -> None:
    with pytest.raises(TextError) as err:
        tok.encode(text)
    message = str(err.value)
    assert f"unknown tag {named}" in message
    assert all(tag in message for tag in UPSTREAM_TAGS)  # the known ones are listed


@pytest.mark.parametrize("text", ["Chapter [1].", "See [p. 3] here.", "Empty [] brackets.", "Open [laugh bracket."])
def test_brackets_without_a_tag_are_ordinary_text(tok, text) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert not set(ids) & {tok.hf_tokenizer.convert_tokens_to_ids(t) for t in tok.tags}


def test_tag_shape() -> None:
    assert is_tag_shaped("[clear throat]") and is_tag_shaped("[über]")
    assert not any(is_tag_shaped(t) for t in ("[1]", "[]", "[a1]", "<|endoftext|>", "[ ]"))


# --- empty text and control tokens --------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   \n", EOS, f" {EOS} "])
def test_empty_text_is_refused(tok, text) -> None:
    with pytest.raises(TextError, match="empty|nothing but control tokens"):
        tok.encode(text)


def test_control_token_is_dropped(tok, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        ids = tok.encode(f"Stop {EOS} here.")
    assert ids == tok.encode("Stop here.") and tok.eos_token_id not in ids
    assert EOS in caplog.text
    assert tok.drop_control_tokens("Hi [laugh].") == "Hi [laugh]."  # tags are not control tokens


# --- files --------------------------------------------------------------------------------------------

SENTENCES = ["Hello, my name is Anna. [laugh] That's funny!", "Zyxqv wobbles 42 times [sigh] ünïcode…",
             "So [clear throat] the meeting is at 3:30."]


def test_saved_folder_reads_back_with_autotokenizer(tok, saved) -> None:
    hf = AutoTokenizer.from_pretrained(str(saved), local_files_only=True)
    for text in SENTENCES:
        assert hf(text).input_ids == tok.encode(text)
    again = BpeTokenizer.from_folder(saved)
    assert again.tags == tok.tags and again.vocab_size == tok.vocab_size
    assert [again.encode(t) for t in SENTENCES] == [tok.encode(t) for t in SENTENCES]


def test_vocab_and_merges_layout_reads_too(tok, tmp_path) -> None:
    """The official repositories may ship GPT-2's older files (vocab.json, merges.txt, added_tokens.json)."""
    vocab, merges = _learned()
    (tmp_path / "vocab.json").write_text(json.dumps(dict(vocab)))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (tmp_path / "added_tokens.json").write_text(json.dumps({t: len(vocab) + i for i, t in enumerate(UPSTREAM_TAGS)}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": EOS, "bos_token": EOS,
                                                                  "unk_token": EOS}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    legacy = BpeTokenizer.from_folder(tmp_path)
    assert legacy.tags == tok.tags
    assert [legacy.encode(t) for t in SENTENCES] == [tok.encode(t) for t in SENTENCES]


def test_folder_errors(tmp_path, saved, caplog) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        BpeTokenizer.from_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no GPT-2 tokenizer"):
        BpeTokenizer.from_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        BpeTokenizer.from_folder(saved, expected_size=TURBO_VOCAB_SIZE)
    assert f"official Turbo/Nano one {TURBO_VOCAB_SIZE}" in caplog.text


# --- determinism --------------------------------------------------------------------------------------

def _fingerprint(tok: BpeTokenizer, folder: Path) -> str:
    tok.save(folder)
    return hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()


def test_synthetic_tokenizer_is_bit_identical_on_every_build(tok, saved, tmp_path) -> None:
    _learned.cache_clear()  # train again in this process
    first = hashlib.sha256((saved / "tokenizer.json").read_bytes()).hexdigest()
    assert _fingerprint(synthetic_bpe_tokenizer(), tmp_path / "again") == first
    code = ("import sys, hashlib, pathlib; from inference.models.tokenizers import synthetic_bpe_tokenizer; "
            "p = pathlib.Path(sys.argv[1]); synthetic_bpe_tokenizer().save(p); "
            "print(hashlib.sha256((p / 'tokenizer.json').read_bytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "other_process")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == first  # another process, another hash seed: same file
