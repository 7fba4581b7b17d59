"""Speech recognition and its scoring, shared by training (transcripts of the user's recordings) and evaluation
(intelligibility of generated speech): Whisper behind one config (`whisper`), and one normaliser and one word
error rate (`wer`), so a transcript and a score mean the same thing wherever they are computed."""
from .wer import CER_LANGUAGES, base_language, normalize, primary_metric, score, wer, word_error_rate
from .whisper import (
    BACKENDS, BUNDLED, BUNDLED_BASE, SAMPLE_RATE, Asr, TranscribeConfig, Transcriber, check_language, english_only,
    hub_offline, resolve_model,
)

__all__ = [
    "Asr", "BACKENDS", "BUNDLED", "BUNDLED_BASE", "CER_LANGUAGES", "SAMPLE_RATE", "TranscribeConfig", "Transcriber",
    "base_language", "check_language", "english_only", "hub_offline", "normalize", "primary_metric",
    "resolve_model", "score", "wer", "word_error_rate",
]
