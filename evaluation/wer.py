"""Intelligibility of generated speech: transcribe it with Whisper and score the transcript against the text the
model was asked to say (WER, and CER where words are not separated by spaces).

Both sides go through the same normalisation before scoring, as TTS benchmarks do, so that case, punctuation,
contractions and spelled-out numbers ("twenty five" vs "25") are not counted as errors. The ASR is the one the
training data pipeline uses (`training.transcribe`), so the same offline models and backends apply.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from inference.models.tokenizers.languages import SUPPORTED_LANGUAGES
from training.transcribe import SAMPLE_RATE, TranscribeConfig, Transcriber, resolve_model

# Scored by characters (spaces removed) as the primary metric: the script does not put spaces between words
# (zh, ja, th), or words are so long and agglutinated that one wrong syllable costs a whole word (ko).
CER_LANGUAGES = frozenset({"zh", "ja", "ko", "th", "yue", "my", "lo", "km", "bo"})
# Languages the multilingual Chatterbox model speaks; all are valid Whisper language codes.
CHATTERBOX_LANGUAGES = tuple(SUPPORTED_LANGUAGES)

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
    wer = float(jiwer.wer(ref, hyp)) if hyp else 1.0
    if base_language(language) in CER_LANGUAGES:
        ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
    else:
        ref_chars, hyp_chars = ref, hyp
    cer = float(jiwer.cer(ref_chars, hyp_chars)) if hyp_chars else 1.0
    return {"wer": wer, "cer": cer, "reference_norm": ref, "hypothesis_norm": hyp}


def english_only(model: str) -> bool:
    """Whether a Whisper model (as resolved by `training.transcribe.resolve_model`) only knows English.

    English-only Whisper vocabularies have 51864 tokens, multilingual ones 51865 (51866 for large-v3); the
    vocabulary is read from the model folder when it has one, else the name decides ("tiny.en", "base.en.pt").
    """
    path = Path(model)
    if path.is_dir():
        vocab = path / "vocabulary.txt"  # CTranslate2
        if vocab.is_file():
            with open(vocab, encoding="utf-8") as f:
                return sum(1 for _ in f) < 51865
        config = path / "config.json"  # transformers
        if config.is_file():
            import json

            size = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
            if isinstance(size, int):
                return size < 51865
    return re.search(r"\.en(\b|$)", path.name) is not None


def check_asr_language(config: TranscribeConfig) -> None:
    """Fail before any model loads when `config.language` is missing or the model cannot transcribe it.

    Evaluation always names the language (no detection: a wrong guess would be scored as the TTS model's
    fault), and an English-only Whisper (the bundled tiny.en) cannot score any other language.
    """
    if not config.language:
        raise ValueError("TranscribeConfig.language is not set; evaluation needs the language of the sentences")
    language = base_language(config.language)
    model = resolve_model(config)
    if language != "en" and english_only(model):
        raise ValueError(
            f"Whisper model {config.model!r} is English-only and cannot transcribe language {language!r}; give a "
            "multilingual Whisper model path instead (TranscribeConfig.model / [training.transcribe] model, e.g. "
            "a CTranslate2 folder of whisper-base or larger for the faster-whisper backend)")


class Asr:
    """Whisper for generated audio: `transcribe(wav, sample_rate)` takes samples at any rate.

    One instance serves one evaluation language: `language` if given, else `config.language`; it is passed to
    Whisper (see `check_asr_language`, which runs first, before any model is loaded).
    """

    def __init__(self, config: TranscribeConfig | None = None, language: str | None = None):
        config = config or TranscribeConfig()
        language = language or config.language
        self.config = replace(config, language=base_language(language) if language else None)
        check_asr_language(self.config)
        self.language: str = self.config.language
        self._transcriber = Transcriber(self.config)

    def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
        """Mono float samples -> text ("" when Whisper heard nothing)."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {wav.shape}")
        if wav.size == 0:
            raise ValueError("waveform is empty; nothing to transcribe")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite samples")
        if sample_rate != SAMPLE_RATE:
            import librosa

            wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        return self._transcriber.transcribe_audio(wav)
