"""Transcripts for fine-tuning data: Whisper (`inference.asr`) behind a content-hash cache, with transcripts the
user wrote always taking precedence, and a user's transcript of a long recording split over its segments.
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
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from inference.asr import TranscribeConfig, Transcriber, resolve_model
from inference.transcripts import read_transcript_file, side_transcript

log = logging.getLogger(__name__)


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
        for n, line in enumerate(read_transcript_file(jsonl).splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    found[str(row["file"])] = str(row["text"])
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("%s line %d skipped (%s)", jsonl, n, e)
    table = folder / "metadata.csv"
    if table.is_file():
        lines = read_transcript_file(table).splitlines()
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
        text = side_transcript(audio)
        if text is not None:
            return text
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
    sub = [(i, w) for i, token in enumerate(tokens) for w in normalize_for_alignment(token).split()]
    hyp = [(k, w) for k, seg in enumerate(segment_texts) for w in normalize_for_alignment(seg).split()]
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

    A clip that is a whole file (`whole`, even when it is a corrected copy in the cache) gets what
    `transcribe_files` gives its file (the user's transcript when there is one). Segments cut from a longer file
    have no transcript of their own: when the user wrote one for the file, it is split over the segments with
    `split_transcript` (Whisper's segment texts locate the cuts); when that alignment fails, the file is named in
    a warning and Whisper's texts are used.
    """
    heard = [str(c.source if c.whole else c.path) for c in clips]
    found = transcribe_files(heard, cfg, cache_dir, progress, transcriber)
    texts = {str(c.path): found[h] for c, h in zip(clips, heard)}
    user = UserTranscripts()
    by_source: dict[Path, list] = {}
    for clip in clips:
        if not clip.whole:
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


def normalize_for_alignment(text: str) -> str:
    """The words `split_transcript` aligns: lowercase, no punctuation, whitespace collapsed, in any language.

    Not the scoring normaliser (`inference.asr.normalize`), which rewrites words ("won't" -> "will not",
    "twenty five" -> "25"): here every word must stay one the user wrote, token by token. Digits stay as
    written; apostrophes are deleted ("don't" -> "dont") so contractions match; other punctuation becomes a
    space so hyphenated or slash-joined words split rather than fuse."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())
