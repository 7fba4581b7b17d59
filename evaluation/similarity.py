"""Speaker similarity of generated speech to the reference voice: cosine of speaker embeddings, in [-1, 1].

Two scores, for two different questions:

- `SpeakerSimilarity`, the primary score, from a verification model the TTS model never saw:
  * "resemblyzer-ge2e" (default, offline): the GE2E speaker encoder shipped in the `resemblyzer` package, run
    with resemblyzer's own code and preprocessing (volume normalisation, webrtcvad removal of long pauses).
    Chosen over our `VoiceEncoder` loaded with the same weights because it is an implementation we did not
    write: a bug in our front-end cannot move both the model's conditioning and its score. It is still a GE2E
    LSTM, the same family as Chatterbox's own voice encoder, so it is not fully independent; prefer WavLM when
    its weights are at hand.
  * "wavlm:<folder or hub id>": a transformers `WavLMForXVector` speaker-verification model with its feature
    extractor, e.g. a local copy of microsoft/wavlm-base-plus-sv. Hub ids are tried only when HF_HUB_OFFLINE
    is unset. No offline package ships these weights, so the tests exercise only its error path.
  The field standard (WavLM-large fine-tuned with an ECAPA-TDNN head, as in the Seed-TTS and F5-TTS
  evaluations) needs a checkpoint that is not obtainable here; scores from these models are not comparable
  with published SIM numbers, only with each other (base vs tuned under the same model).
- `SelfSimilarity`, secondary: the model-under-test's own voice encoder. Biased: the TTS model is conditioned on
  exactly this embedding, so it can match it without sounding like the speaker.

Silent or too-short audio raises ValueError; the caller records the sample as failed.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from inference.asr import hub_offline

SAMPLE_RATE = 16_000  # every encoder here works at 16 kHz
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this the waveform is treated as silent
MODELS = ("resemblyzer-ge2e", "wavlm:<folder or hub id>")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SimilarityConfig:
    model: str = "resemblyzer-ge2e"  # or "wavlm:<folder>", see the module docstring
    device: str = "cpu"
    min_speech_seconds: float = 0.5  # less speech than this (after trimming silence) cannot be scored


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (any norm), clipped to [-1, 1] against rounding."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.shape[0]} vs {b.shape[0]} (from different models?)")
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        raise ValueError("a zero embedding has no direction")
    return float(np.clip(a @ b / denom, -1.0, 1.0))


def to_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate a mono waveform and resample it to 16 kHz float32; silent or empty input is a ValueError."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("waveform contains NaN or infinite samples")
    if np.abs(wav).max(initial=0.0) < SILENCE_PEAK:
        raise ValueError("waveform is silent (or empty); no speaker to compare")
    if sample_rate != SAMPLE_RATE:
        import librosa

        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(wav, dtype=np.float32)


def _require_speech(seconds: float, minimum: float, how: str) -> None:
    if seconds < minimum:
        raise ValueError(f"only {seconds:.2f} s of speech left after {how} (need {minimum:.2f} s); "
                         "too short to compare speakers")


def _trimmed_seconds(wav16: np.ndarray, top_db: float) -> float:
    import librosa

    _, (start, end) = librosa.effects.trim(wav16, top_db=top_db)
    return (end - start) / SAMPLE_RATE


class _ReferenceCache:
    """Embeddings of reference files, keyed by path and file identity so an edited file is re-embedded."""

    def __init__(self, embed: Callable[[np.ndarray, int], np.ndarray]):
        self._embed = embed
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}

    def __call__(self, path: str | Path) -> np.ndarray:
        from inference.audio import load_audio

        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"reference audio not found: {path}")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = self._embed(load_audio(path, SAMPLE_RATE), SAMPLE_RATE)
        return self._cache[key]


def _load_resemblyzer(cfg: SimilarityConfig) -> Callable[[np.ndarray], np.ndarray]:
    try:
        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as e:
        raise ImportError("similarity model 'resemblyzer-ge2e' needs the resemblyzer package "
                          "(pip install resemblyzer==0.1.4, with setuptools<81 for webrtcvad)") from e
    encoder = VoiceEncoder(cfg.device, verbose=False)

    def embed(wav16: np.ndarray) -> np.ndarray:
        speech = preprocess_wav(wav16)  # at 16 kHz already; normalises volume, cuts pauses with webrtcvad
        _require_speech(len(speech) / SAMPLE_RATE, cfg.min_speech_seconds, "voice activity detection")
        return encoder.embed_utterance(speech)
    return embed


def resolve_wavlm(source: str) -> str:
    """A local folder, or (only with HF_HUB_OFFLINE unset) a hub id; otherwise FileNotFoundError saying what to
    pass."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    looks_like_path = not source or path.is_absolute() or source.startswith((".", "~")) or path.exists()
    if not looks_like_path and _HUB_ID.match(source) and not hub_offline():
        return source
    why = "has no config.json" if path.is_dir() else "does not exist"
    offline = " (HF_HUB_OFFLINE is set, so hub ids are not tried)" if hub_offline() else ""
    raise FileNotFoundError(
        f"WavLM speaker-verification model {source!r} {why}{offline}; pass model='wavlm:<folder>' with a folder "
        "holding a WavLMForXVector checkpoint and its feature extractor (config.json, preprocessor_config.json, "
        "weights), e.g. microsoft/wavlm-base-plus-sv saved on a networked machine with "
        "`huggingface-cli download microsoft/wavlm-base-plus-sv --local-dir <folder>`; "
        "or use the offline default model='resemblyzer-ge2e'")


def _load_wavlm(source: str, cfg: SimilarityConfig) -> Callable[[np.ndarray], np.ndarray]:
    where = resolve_wavlm(source)  # before the heavy imports: a bad path should fail at once
    import torch
    from transformers import AutoFeatureExtractor, WavLMForXVector

    extractor = AutoFeatureExtractor.from_pretrained(where)
    model = WavLMForXVector.from_pretrained(where).to(cfg.device).eval()

    def embed(wav16: np.ndarray) -> np.ndarray:
        import librosa

        speech, _ = librosa.effects.trim(wav16, top_db=40)  # leading/trailing silence only: x-vectors pool over time
        _require_speech(len(speech) / SAMPLE_RATE, cfg.min_speech_seconds, "trimming silence")
        inputs = extractor(speech, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model(**{k: v.to(cfg.device) for k, v in inputs.items()}).embeddings  # (1, xvector_dim)
        return out[0].float().cpu().numpy()
    return embed


class SpeakerSimilarity:
    """The primary, independent speaker-similarity score (see the module docstring for the models)."""

    def __init__(self, config: SimilarityConfig | None = None):
        self.config = cfg = config or SimilarityConfig()
        if cfg.model == "resemblyzer-ge2e":
            self._embed16 = _load_resemblyzer(cfg)
        elif cfg.model.startswith("wavlm:"):
            self._embed16 = _load_wavlm(cfg.model[len("wavlm:"):], cfg)
        else:
            raise ValueError(f"unknown similarity model {cfg.model!r}; choose one of {', '.join(MODELS)}")
        self.reference_embedding = _ReferenceCache(self.embed)

    @property
    def name(self) -> str:
        return self.config.model

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono waveform at any rate -> (dim,) L2-normalised float32 embedding."""
        embedding = np.asarray(self._embed16(to_16k(wav, sample_rate)), dtype=np.float32)
        norm = float(np.linalg.norm(embedding))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("speaker encoder returned a zero or non-finite embedding")
        return embedding / norm

    def similarity(self, ref_embedding: np.ndarray, wav: np.ndarray, sample_rate: int) -> float:
        """Cosine in [-1, 1] between a reference embedding (from `embed` or `reference_embedding(path)`, which
        caches per file) and the embedding of `wav`."""
        return cosine(ref_embedding, self.embed(wav, sample_rate))


class SelfSimilarity:
    """Secondary score from the model-under-test's own `inference.models.voice_encoder.VoiceEncoder` (e.g.
    `tts.ve`). Biased upwards: the TTS model is conditioned on this very embedding, so report it beside the
    primary score, never instead of it."""

    name = "self-voice-encoder"

    def __init__(self, encoder: Any, min_speech_seconds: float = 0.5):
        self.encoder = encoder
        self.min_speech_seconds = min_speech_seconds
        self.reference_embedding = _ReferenceCache(self.embed)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono waveform at any rate -> (dim,) L2-normalised float32 utterance embedding."""
        wav16 = to_16k(wav, sample_rate)
        top_db = getattr(getattr(self.encoder, "cfg", None), "trim_top_db", 20.0)  # the trim the encoder applies
        _require_speech(_trimmed_seconds(wav16, top_db), self.min_speech_seconds, "trimming silence")
        embedding = self.encoder.embed_utterance(wav16, SAMPLE_RATE).detach().cpu().numpy().astype(np.float32)
        return embedding / np.linalg.norm(embedding)

    def similarity(self, ref_embedding: np.ndarray, wav: np.ndarray, sample_rate: int) -> float:
        return cosine(ref_embedding, self.embed(wav, sample_rate))

