"""The one normaliser and the one word error rate: how a transcript is compared with the text that was meant.

Both sides go through the same normalisation before scoring, as TTS and ASR benchmarks do, so that case,
punctuation, contractions, British spellings and spelled-out numbers ("twenty five" vs "25") are not counted
as errors: English through Whisper's own English normaliser and spelling table, other languages through a
basic normaliser that keeps every letter and mark. A sentence's WER and a corpus WER (all words of all
sentences together) come from the same `word_error_rate`.
"""
from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

# Scored by characters (spaces removed) as the primary metric: the script does not put spaces between words
# (zh, ja, th), or words are so long and agglutinated that one wrong syllable costs a whole word (ko).
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "yue", "my", "lo", "km", "bo"})

_APOSTROPHES = re.compile(r"[\u2019\u02bc\u2018`\u00b4]")  # typographic variants -> "'"
_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]|\(([^)]+?)\)")  # Whisper drops [noise], <tags> and (asides)
_KEEP_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
_DIGIT_SEPARATOR = re.compile(r"(?<=\d)[.,](?=\d)")  # "3.5", "3,5", "1,000": one token, as written
_PROTECT = {"'": "\0", ".": "\1", ",": "\2"}  # control characters survive the punctuation pass
_RESTORE = str.maketrans({v: k for k, v in _PROTECT.items()})


def base_language(language: str) -> str:
    """"en-US" / "zh_CN" / "EN" -> "en" / "zh" / "en": the code that picks normaliser, metric and Whisper language."""
    code = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    if not code:
        raise ValueError("language is empty; give an ISO 639-1 code such as 'en' or 'fr'")
    return code


def primary_metric(language: str) -> str:
    """"cer" for languages in CER_LANGUAGES, else "wer": which score a report should lead with."""
    return "cer" if base_language(language) in CER_LANGUAGES else "wer"


@lru_cache(maxsize=1)
def _english_normalizer() -> Callable[[str], str]:
    """Whisper's English normaliser (transformers' copy) with Whisper's British->American spelling table
    (`english.json`, 1,739 entries, shipped inside the openai-whisper package), so "colour" and "color" are the
    same word, as in every benchmark that uses Whisper's normaliser. The table is read from the package's files
    without importing it (importing whisper loads its decoder and numba)."""
    import importlib.util

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spec = importlib.util.find_spec("whisper")
    table = Path(spec.submodule_search_locations[0]) / "normalizers" / "english.json" if spec else None
    if table is None or not table.is_file():
        raise ImportError("Whisper's English spelling table (whisper/normalizers/english.json) is missing: "
                          "pip install --no-deps openai-whisper==20250625")
    return EnglishTextNormalizer(json.loads(table.read_text(encoding="utf-8")))


def _basic_normalize(text: str) -> str:
    """Whisper's BasicTextNormalizer, minus one bug: it turns combining marks (category M) into spaces, which
    splits Thai, Hindi and other abugida words into fragments. Here marks are kept, as are separators inside
    numbers ("3,5"); other symbols and punctuation become spaces."""
    text = _BRACKETED.sub("", unicodedata.normalize("NFKC", text).lower())
    text = _DIGIT_SEPARATOR.sub(lambda m: _PROTECT[m.group()], text)
    text = "".join(" " if unicodedata.category(c)[0] in "SP" and c != "'" else c for c in text)
    return text.translate(_RESTORE)


def _final_pass(text: str) -> str:
    """Lowercase, drop punctuation except apostrophes inside words and separators inside numbers, collapse
    whitespace."""
    text = _KEEP_APOSTROPHE.sub("\0", text.lower())
    text = _DIGIT_SEPARATOR.sub(lambda m: _PROTECT[m.group()], text)
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.translate(_RESTORE).split())


def normalize(text: str, language: str) -> str:
    """Text as scored: English through Whisper's English normaliser (contractions expanded, numbers written as
    digits, diacritics dropped), other languages through a basic one that keeps every letter and mark (CJK,
    Thai, Devanagari, ...); then both lowercased, punctuation stripped, whitespace collapsed."""
    text = _APOSTROPHES.sub("'", text)  # Whisper's own normaliser would split "aeroplane’s" into two words
    if base_language(language) == "en":
        # Whisper's, word for word ("25%" keeps its sign), less the stray "." it leaves from "... !"
        return " ".join(w for w in _english_normalizer()(text).split() if any(c.isalnum() for c in w))
    return _final_pass(_basic_normalize(text))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate of texts already normalised (`normalize`), all pairs scored together: total edits / total
    reference words. One pair is one sentence's WER; many are a corpus WER, which weighs every word the same
    (a mean of per-sentence WERs weighs a 4-word sentence as much as a 20-word one). An empty hypothesis counts
    every reference word as deleted."""
    import jiwer

    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no sentences to score")
    return float(jiwer.wer(references, hypotheses))


def wer(references: str | Sequence[str], hypotheses: str | Sequence[str], language: str = "en") -> float:
    """Corpus WER of raw texts: `normalize` on both sides, then `word_error_rate`."""
    references = [references] if isinstance(references, str) else references
    hypotheses = [hypotheses] if isinstance(hypotheses, str) else hypotheses
    return word_error_rate([normalize(r, language) for r in references], [normalize(h, language) for h in hypotheses])


def score(reference: str, hypothesis: str, language: str) -> dict[str, float | str]:
    """WER and CER of one transcript against its reference, after `normalize` on both.

    For CER_LANGUAGES the CER is over characters with spaces removed (word boundaries there are the ASR's
    guess, not the speaker's); their WER is over whitespace tokens and is not meaningful for zh/ja/th.
    Elsewhere CER runs over the normalised string, spaces included. An empty hypothesis (nothing heard) scores
    1.0: every reference word deleted. An empty reference is a caller error: there is nothing to score against.
    """
    import jiwer

    ref = normalize(reference, language)
    hyp = normalize(hypothesis, language)
    if not ref:
        raise ValueError(f"reference text {reference!r} is empty after normalisation; nothing to score against")
    if base_language(language) in CER_LANGUAGES:
        ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
    else:
        ref_chars, hyp_chars = ref, hyp
    cer = float(jiwer.cer(ref_chars, hyp_chars)) if hyp_chars else 1.0
    return {"wer": word_error_rate([ref], [hyp]), "cer": cer, "reference_norm": ref, "hypothesis_norm": hyp}
