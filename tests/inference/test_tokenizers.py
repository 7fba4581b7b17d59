"""Text front end: normalization rules, tokenizer round trips, language handling and error messages."""
from __future__ import annotations

import importlib.util
import json
import logging
import unicodedata

import pytest
import torch

from inference.models.tokenizers import (
    SUPPORTED_LANGUAGES,
    EnTokenizer,
    MTLTokenizer,
    TextError,
    build_char_tokenizer,
    normalize_text,
)
from inference.models.tokenizers.languages import CANGJIE_FILE, check_language, prepare_text

MTL_FILE = "grapheme_mtl_merged_expanded_v1.json"


# --- normalize_text ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello world", "Hello world."),
        ("  \n\thello   there\n", "Hello there."),
        ("élan vital", "Élan vital."),
        ("123 go", "123 go."),
        ("Wait...", "Wait,"),
        ("Wait…", "Wait,"),
        ("Note: this", "Note, this."),
        ("One - two", "One, two."),
        ("One;two", "One, two."),
        ("One—two", "One-two."),
        ("One–two", "One-two."),
        ("A , b", "A, b."),
        ("“Quoted”", '"Quoted".'),
        ("It‘s ’ok’", "It's 'ok'."),
        ("Done.", "Done."),
        ("Really?", "Really?"),
        ("Wow!", "Wow!"),
        ("Trailing-", "Trailing-"),
        ("Trailing,", "Trailing,"),
        ("你好。", "你好。"),
        ("你好，", "你好，"),
        ("你好、", "你好、"),
        ("你好？", "你好？"),
        ("你好！", "你好！"),
        ("你好", "你好."),
        ("Ends in space   ", "Ends in space."),
    ],
)
def test_normalize_rules(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_capitalises_after_collapsing_whitespace() -> None:
    assert normalize_text("\n   lower") == "Lower."


def test_normalize_replacement_order() -> None:
    # Whitespace is collapsed before the replacements, so spaces they introduce survive.
    assert normalize_text("Yes ... no") == "Yes,  no."
    # " - " is rewritten before dashes become hyphens, so a spaced em dash stays a hyphen.
    assert normalize_text("Yes — no") == "Yes - no."


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_normalize_rejects_blank(blank: str) -> None:
    with pytest.raises(TextError, match="empty or only whitespace"):
        normalize_text(blank)


@pytest.mark.parametrize("bad", [None, 3, b"bytes"])
def test_normalize_rejects_non_str(bad) -> None:
    with pytest.raises(TextError, match="str"):
        normalize_text(bad)


def test_text_errors_reach_the_commands_as_value_errors() -> None:
    """The commands print ValueErrors as one-line messages (no traceback): text errors must be among them."""
    try:
        normalize_text("  ")
    except ValueError as e:
        assert isinstance(e, TextError) and "empty" in str(e)
    else:
        pytest.fail("blank text was accepted")


# --- English ----------------------------------------------------------------------------------------

@pytest.fixture
def en_tok(tmp_path) -> EnTokenizer:
    path = tmp_path / "tokenizer.json"
    build_char_tokenizer(704, False).save(str(path))
    return EnTokenizer.from_file(path)


def test_english_round_trip(en_tok: EnTokenizer) -> None:
    hf = build_char_tokenizer(704, False)
    ids = en_tok.encode("Hello world.")
    assert en_tok.decode(ids) == "Hello world."
    assert ids.count(hf.token_to_id("[SPACE]")) == 1
    assert len(ids) == len("Hello world.")


def test_english_vocab_layout(en_tok: EnTokenizer) -> None:
    hf = build_char_tokenizer(704, False)
    assert en_tok.vocab_size == 704
    assert hf.get_vocab_size() == 704
    assert hf.token_to_id("[START]") == 255
    assert hf.token_to_id("[STOP]") == 0
    assert hf.token_to_id("[fr]") is None


def test_english_text_to_tokens_shape(en_tok: EnTokenizer) -> None:
    tokens = en_tok.text_to_tokens("Hi there.")
    assert tokens.dtype == torch.long
    assert tokens.shape == (1, len("Hi there."))
    assert en_tok.decode(tokens) == "Hi there."


def test_english_decode_drops_start_stop(en_tok: EnTokenizer) -> None:
    ids = [255, *en_tok.encode("Ok."), 0]
    assert en_tok.decode(ids) == "Ok."


def test_english_rejects_empty(en_tok: EnTokenizer) -> None:
    with pytest.raises(TextError, match="empty"):
        en_tok.encode("")


def test_english_save_reload(en_tok: EnTokenizer, tmp_path) -> None:
    out = tmp_path / "copy.json"
    en_tok.save(out)
    again = EnTokenizer.from_file(out)
    assert again.encode("Same text.") == en_tok.encode("Same text.")


def test_unknown_characters_warn(en_tok: EnTokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        ids = en_tok.encode("Snow ☃ man")
    assert ids.count(1) == 1  # [UNK] id
    assert "☃" in caplog.text
    assert en_tok.decode(ids) == "Snow  man"


def test_known_characters_do_not_warn(en_tok: EnTokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        en_tok.encode("All known.")
    assert caplog.records == []


def test_synthetic_vocab_is_deterministic() -> None:
    assert build_char_tokenizer(2454, True).to_str() == build_char_tokenizer(2454, True).to_str()


def test_synthetic_vocab_too_small() -> None:
    with pytest.raises(TextError, match="too small"):
        build_char_tokenizer(100, False)


# --- file errors ------------------------------------------------------------------------------------

def test_missing_english_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        EnTokenizer.from_file(tmp_path / "tokenizer.json")


def test_missing_multilingual_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=MTL_FILE):
        MTLTokenizer.from_file(tmp_path / MTL_FILE)


@pytest.mark.parametrize("cls", [EnTokenizer, MTLTokenizer])
def test_garbage_json(tmp_path, cls) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json at all")
    with pytest.raises(TextError, match="broken.json"):
        cls.from_file(path)


def test_vocab_without_start(tmp_path) -> None:
    data = json.loads(build_char_tokenizer(704, False).to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[START]"]
    del data["model"]["vocab"]["[START]"]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TextError, match=r"\[START\]") as info:
        EnTokenizer.from_file(path)
    assert "[STOP]" not in str(info.value)


# --- multilingual -----------------------------------------------------------------------------------

@pytest.fixture
def mtl_hf():
    return build_char_tokenizer(2454, True)


@pytest.fixture
def mtl_tok(tmp_path, mtl_hf) -> MTLTokenizer:
    path = tmp_path / MTL_FILE
    mtl_hf.save(str(path))
    return MTLTokenizer.from_file(path)


def test_multilingual_vocab(mtl_tok: MTLTokenizer, mtl_hf) -> None:
    assert mtl_tok.vocab_size == 2454
    assert mtl_hf.token_to_id("[START]") == 255
    assert mtl_hf.token_to_id("[STOP]") == 0
    assert all(mtl_hf.token_to_id(f"[{code}]") is not None for code in SUPPORTED_LANGUAGES)
    assert len(SUPPORTED_LANGUAGES) == 23


def test_multilingual_french(mtl_tok: MTLTokenizer, mtl_hf) -> None:
    ids = mtl_tok.encode("Bonjour le monde", "fr")
    assert ids[0] == mtl_hf.token_to_id("[fr]")
    assert mtl_hf.token_to_id("B") not in ids
    assert mtl_tok.decode(ids) == "[fr]bonjour le monde"


def test_multilingual_lowercase_can_be_disabled(mtl_tok: MTLTokenizer) -> None:
    assert mtl_tok.decode(mtl_tok.encode("Bonjour", "fr", lowercase=False)) == "[fr]Bonjour"


def test_multilingual_nfkd_splits_accents(mtl_tok: MTLTokenizer, mtl_hf) -> None:
    ids = mtl_tok.encode("été", "fr")
    assert ids.count(mtl_hf.token_to_id("\u0301")) == 2
    assert mtl_hf.token_to_id("é") not in ids
    assert mtl_hf.token_to_id("é") in mtl_tok.encode("été", "fr", nfkd=False)


def test_multilingual_language_case_insensitive(mtl_tok: MTLTokenizer) -> None:
    assert mtl_tok.encode("salut", "FR") == mtl_tok.encode("salut", "fr")
    assert check_language("FR") == "fr"


def test_multilingual_unknown_language(mtl_tok: MTLTokenizer) -> None:
    with pytest.raises(TextError, match="xx") as info:
        mtl_tok.encode("hello", "xx")
    assert "fr" in str(info.value) and "zh" in str(info.value)


def test_multilingual_language_required(mtl_tok: MTLTokenizer) -> None:
    with pytest.raises(TextError):
        mtl_tok.encode("hello", None)


def test_multilingual_rejects_empty(mtl_tok: MTLTokenizer) -> None:
    with pytest.raises(TextError, match="empty"):
        mtl_tok.encode("", "en")


def test_multilingual_text_to_tokens(mtl_tok: MTLTokenizer) -> None:
    tokens = mtl_tok.text_to_tokens("hei", "fi")
    assert tokens.shape == (1, 4)
    assert tokens.dtype == torch.long


def test_korean_jamo(mtl_tok: MTLTokenizer, mtl_hf) -> None:
    jamo = "\u1112\u1161\u11ab\u1100\u116e\u11a8"
    ids = mtl_tok.encode("한국", "ko")
    assert mtl_tok.decode(ids) == "[ko]" + jamo
    assert mtl_hf.token_to_id("\u1112") in ids
    assert 1 not in ids  # no [UNK]


def test_korean_decomposition_without_nfkd() -> None:
    assert prepare_text("한국 ", "ko", None) == "\u1112\u1161\u11ab\u1100\u116e\u11a8"
    assert prepare_text("가", "ko", None) == "\u1100\u1161"
    assert prepare_text("a가b", "ko", None) == "a\u1100\u1161b"


def test_other_languages_unchanged() -> None:
    assert prepare_text("hallo welt", "de", None) == "hallo welt"


def test_multilingual_unknown_character_warns(mtl_tok: MTLTokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.models.tokenizers.multilingual"):
        ids = mtl_tok.encode("snow ☃", "en")
    assert 1 in ids
    assert "☃" in caplog.text


# --- optional language packages ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("language", "package", "sample"),
    [
        ("ja", "pykakasi", "日本語"),
        ("zh", "spacy_pkuseg", "你好"),
        ("he", "dicta_onnx", "שלום"),
        ("ru", "russian_text_stresser", "привет"),
    ],
)
def test_missing_language_package(language: str, package: str, sample: str, tmp_path) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(TextError, match=rf"\[{language}\]") as info:
        prepare_text(sample, language, tmp_path)
    message = str(info.value)
    assert package in message
    assert SUPPORTED_LANGUAGES[language] in message


def test_missing_language_package_through_tokenizer(mtl_tok: MTLTokenizer) -> None:
    if importlib.util.find_spec("pykakasi") is not None:
        pytest.skip("pykakasi is installed")
    with pytest.raises(TextError, match=r"\[ja\]"):
        mtl_tok.encode("日本語", "ja")


def test_chinese_needs_cangjie_file(tmp_path) -> None:
    if importlib.util.find_spec("spacy_pkuseg") is None:
        pytest.skip("spacy_pkuseg is not installed")
    with pytest.raises(FileNotFoundError, match=CANGJIE_FILE) as info:
        prepare_text("你好", "zh", tmp_path)
    assert str(tmp_path.resolve()) in str(info.value)


def test_japanese_output_is_nfkd() -> None:
    if importlib.util.find_spec("pykakasi") is None:
        pytest.skip("pykakasi is not installed")
    out = prepare_text("日本", "ja", None)
    assert out == unicodedata.normalize("NFKD", out)
    assert not any(0x4E00 <= ord(c) <= 0x9FFF for c in out)


# --- language rewriting with stand-in packages --------------------------------------------------------
# The real packages are optional; these stand-ins pin down what this module does with their output.

@pytest.fixture
def fresh_language_caches():
    from inference.models.tokenizers import languages

    caches = [languages._kakasi, languages._pkuseg, languages._cangjie_tables, languages._dicta,
              languages._stresser]
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def _fake_module(monkeypatch, name: str, **attrs) -> None:
    import sys
    import types

    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


def test_chinese_cangjie_with_stand_in_segmenter(monkeypatch, tmp_path, fresh_language_caches) -> None:
    class Segmenter:
        def cut(self, text):
            return [text[:1], text[1:]] if len(text) > 1 else [text]

    _fake_module(monkeypatch, "spacy_pkuseg", pkuseg=Segmenter)
    (tmp_path / CANGJIE_FILE).write_text(json.dumps(["你\tonf", "好\tvnd", "妳\tvnd", "malformed"]),
                                         encoding="utf-8")
    out = prepare_text("你妳x", "zh", tmp_path)
    assert out == "[cj_o][cj_n][cj_f][cj_.] [cj_v][cj_n][cj_d][cj_1][cj_.]x"
    assert prepare_text("好", "zh", tmp_path) == "[cj_v][cj_n][cj_d][cj_.]"
    assert prepare_text("丁", "zh", tmp_path) == "丁"


def test_chinese_missing_cangjie_with_stand_in(monkeypatch, tmp_path, fresh_language_caches) -> None:
    _fake_module(monkeypatch, "spacy_pkuseg", pkuseg=lambda: None)
    with pytest.raises(FileNotFoundError, match=CANGJIE_FILE):
        prepare_text("你", "zh", tmp_path)
    with pytest.raises(FileNotFoundError, match=CANGJIE_FILE):
        prepare_text("你", "zh", None)


def test_japanese_with_stand_in_kakasi(monkeypatch, fresh_language_caches) -> None:
    items = [
        {"orig": "私", "hira": "わたし"},
        {"orig": "は", "hira": "は"},
        {"orig": "橋", "hira": "はし"},
        {"orig": "カメラ", "hira": "かめら"},
        {"orig": "です", "hira": "です"},
    ]

    class Kakasi:
        def convert(self, text):
            return items

    _fake_module(monkeypatch, "pykakasi", kakasi=Kakasi)
    expected = unicodedata.normalize("NFKD", "わたしは はしカメラです")
    assert prepare_text("ignored", "ja", None) == expected


def test_hebrew_and_russian_with_stand_ins(monkeypatch, fresh_language_caches) -> None:
    class Dicta:
        def add_diacritics(self, text):
            return text + "\u05b8"

    class Stresser:
        def stress_text(self, text):
            return text.replace("и", "и\u0301", 1)

    _fake_module(monkeypatch, "dicta_onnx", Dicta=Dicta)
    _fake_module(monkeypatch, "russian_text_stresser")
    _fake_module(monkeypatch, "russian_text_stresser.text_stresser", RussianTextStresser=Stresser)
    assert prepare_text("של", "he", None) == "של\u05b8"
    assert prepare_text("привет", "ru", None) == "при\u0301вет"
