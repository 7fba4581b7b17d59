"""Shipped sentence sets and the loader: coverage of every language, user files, error messages, tokenizing."""
import re

import pytest

from evaluation.sentences import (BUILTIN, DATA_DIR, DEFAULT_SET, MAX_CHARS, SET_LANGUAGE, Sentence,
                                  SentenceSetError, load_sentences)
from inference.models.t3 import T3Config
from inference.models.tokenizers import EnTokenizer, MTLTokenizer, build_char_tokenizer, normalize_text
from inference.models.tokenizers.languages import (CANGJIE_FILE, SUPPORTED_LANGUAGES,
                                                   MissingLanguagePackageError, prepare_text)

ENDERS = (".", "!", "?", "。", "？", "！", "।", "؟")
UNSPACED = {"ja", "zh"}
# Languages whose text rewriting needs an optional package (see inference/models/tokenizers/languages.py).
NEEDS_PACKAGE = {"ja": "日本", "zh": "你好", "he": "שלום", "ru": "привет"}  # language -> a word to probe with


# --- shipped sets -----------------------------------------------------------------------------------

def test_every_language_has_a_builtin_set() -> None:
    assert sorted(DEFAULT_SET) == sorted(SUPPORTED_LANGUAGES)
    assert DEFAULT_SET["en"] == "harvard_en"
    assert set(BUILTIN) == set(SET_LANGUAGE)
    shipped = {p.stem for p in DATA_DIR.iterdir()}
    assert shipped == set(BUILTIN), "a data file without a BUILTIN entry, or the other way round"


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_file_has_a_header(name: str) -> None:
    first = (DATA_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#")
    assert ("Public domain" in first) if name == "harvard_en" else ("written for this project" in first)


@pytest.mark.parametrize("language", sorted(SUPPORTED_LANGUAGES))
def test_default_set(language: str) -> None:
    sentences = load_sentences("default", language)
    assert all(isinstance(s, Sentence) for s in sentences)
    ids = [s.id for s in sentences]
    assert len(set(ids)) == len(ids)
    if language == "en":
        assert len(sentences) == 50
        assert ids[0] == "harvard_en-01.01" and ids[-1] == "harvard_en-05.10"
        assert sentences[0].text == "The birch canoe slid on the smooth planks."
    else:
        assert ids == [f"{language}-{i:02d}" for i in range(1, 11)]
    for s in sentences:
        assert s.text and s.text == s.text.strip(), s.id
        assert s.text.endswith(ENDERS), s.id
        assert not re.search(r"\d", s.text), f"{s.id} writes a number as digits"
        assert len(s.text) <= MAX_CHARS


@pytest.mark.parametrize("language", sorted(set(SUPPORTED_LANGUAGES) - {"en"}))
def test_language_sentences_are_short(language: str) -> None:
    for s in load_sentences("default", language):
        if language in UNSPACED:
            assert 8 <= len(s.text) <= 30, s.id
        else:
            assert 5 <= len(s.text.split()) <= 12, s.id


def test_builtin_by_name() -> None:
    assert load_sentences("fr", "FR") == load_sentences("default", "fr")
    assert load_sentences("harvard_en", "en")[10].id == "harvard_en-02.01"


# --- user files -------------------------------------------------------------------------------------

def test_user_file_with_ids(tmp_path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my set\n\na1\tFirst sentence.\n  a2 \t  Second   one, spaced.  \n", encoding="utf-8")
    assert load_sentences(str(path), "en") == [Sentence("mine-a1", "First sentence."),
                                                 Sentence("mine-a2", "Second one, spaced.")]


def test_user_file_plain_lines(tmp_path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("\ufeff# comment\nBonjour tout le monde.\n\nÇa va bien?\n", encoding="utf-8")
    # ids are the file's line numbers, comments and blank lines counted, so a report points at the line
    assert load_sentences(str(path), "fr") == [Sentence("plain-2", "Bonjour tout le monde."),
                                                 Sentence("plain-4", "Ça va bien?")]


def test_user_file_language_is_not_checked(tmp_path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("Hello there.\n", encoding="utf-8")
    assert load_sentences(str(path), "fr") == [Sentence("x-1", "Hello there.")]
    assert load_sentences(path, "fr") == [Sentence("x-1", "Hello there.")]  # a Path works too


# --- limit ------------------------------------------------------------------------------------------

def test_limit_takes_the_first() -> None:
    every = load_sentences("default", "en")
    assert load_sentences("default", "en", limit=3) == every[:3]
    assert load_sentences("default", "de", limit=100) == load_sentences("default", "de")


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(limit) -> None:
    with pytest.raises(SentenceSetError, match="limit"):
        load_sentences("default", "en", limit=limit)


# --- errors -----------------------------------------------------------------------------------------

def test_unknown_builtin_lists_known() -> None:
    with pytest.raises(SentenceSetError, match="unknown sentence set 'harvard'") as info:
        load_sentences("harvard", "en")
    assert "harvard_en" in str(info.value) and "zh" in str(info.value)


def test_missing_user_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="sentence file not found"):
        load_sentences(str(tmp_path / "nope.txt"), "en")


def test_user_file_must_be_txt(tmp_path) -> None:
    path = tmp_path / "set.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match=r"\.txt"):
        load_sentences(str(path), "en")


def test_empty_set(tmp_path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# only a comment\n\n   \n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match="'empty'.*no sentences"):
        load_sentences(str(path), "en")


def test_language_without_a_set() -> None:
    with pytest.raises(SentenceSetError, match="no built-in sentence set for language 'xx'") as info:
        load_sentences("default", "xx")
    assert "en" in str(info.value) and "sw" in str(info.value)


def test_builtin_in_another_language() -> None:
    with pytest.raises(SentenceSetError, match="'fr' is French text"):
        load_sentences("fr", "de")


def test_duplicate_ids(tmp_path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("01\tOne.\n02\tTwo.\n01\tAgain.\n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match=r"line 3: duplicate id 'dup-01' \(first on line 1\)"):
        load_sentences(str(path), "en")


@pytest.mark.parametrize("line", ["05\t", "05\t   ", "05"])
def test_id_without_text(tmp_path, line: str) -> None:
    path = tmp_path / "gap.txt"
    path.write_text(f"04\tFine.\n{line}\n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match="line 2: id '05' has no text"):
        load_sentences(str(path), "en")


def test_text_without_id(tmp_path) -> None:
    path = tmp_path / "noid.txt"
    path.write_text("\tOrphan text.\n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match="line 1: the text has no id"):
        load_sentences(str(path), "en")


def test_too_long(tmp_path) -> None:
    path = tmp_path / "long.txt"
    path.write_text(f"ok\tShort.\nbig\t{'word ' * 70}end.\n", encoding="utf-8")
    with pytest.raises(SentenceSetError, match=f"'long-big' is 354 characters long; the limit is {MAX_CHARS}"):
        load_sentences(str(path), "en")
    path.write_text(f"ok\t{'x' * (MAX_CHARS - 1)}.\n", encoding="utf-8")
    assert len(load_sentences(str(path), "en")[0].text) == MAX_CHARS


# --- every shipped sentence goes through the model's text front end ---------------------------------

@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """The tiny preset's character vocabularies in a model folder, as the real models load them offline."""
    folder = tmp_path_factory.mktemp("model")
    en_path, mtl_path = folder / "tokenizer.json", folder / MTLTokenizer.FILE_NAME
    build_char_tokenizer(T3Config.tiny(False).text_vocab_size, False).save(str(en_path))
    build_char_tokenizer(T3Config.tiny(True).text_vocab_size, True).save(str(mtl_path))
    (folder / CANGJIE_FILE).write_text("[]", encoding="utf-8")  # no table: Han glyphs pass through as-is
    return EnTokenizer.from_file(en_path), MTLTokenizer.from_file(mtl_path)


@pytest.mark.parametrize("language", sorted(SUPPORTED_LANGUAGES))
def test_builtin_sentences_tokenize(language: str, tokenizers) -> None:
    en_tok, mtl_tok = tokenizers
    if language in NEEDS_PACKAGE:
        try:
            prepare_text(NEEDS_PACKAGE[language], language, mtl_tok.model_dir)
        except (MissingLanguagePackageError, OSError) as err:  # not installed, or its model not downloaded
            for s in load_sentences("default", language):
                normalize_text(s.text)
            pytest.skip(f"{language}: normalisation checked, tokenizing not: {err}")
    max_tokens = T3Config().max_text_tokens
    for s in load_sentences("default", language):
        text = normalize_text(s.text)
        ids = en_tok.encode(text) if language == "en" else mtl_tok.encode(text, language)
        assert 0 < len(ids) <= max_tokens, s.id
        if language == "en":
            assert en_tok.decode(ids) == text  # every Harvard character is in the English vocabulary
