"""Turn a folder of one speaker's recordings into clean training clips, without ever touching that folder.

Users drop whatever they have into `audio_data/`: long takes, stereo phone memos, odd sample rates, the odd
broken or clipped file, transcripts next to the audio. `ingest` only reads that folder. Files that are fine
are used whole; long ones are cut at pauses into 2-20 s segments written to a cache (named by content hash,
so a re-run reuses them); every refused file is reported with a reason, so a user can fix the data instead
of wondering why the tuned voice sounds wrong.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from inference.audio import CLIP_LEVEL, AudioError, NonFiniteAudio, is_silent, load_audio
from inference.transcripts import TranscriptError, check_transcript_files

log = logging.getLogger(__name__)

# Files that sit beside recordings as transcripts or notes: ignored without counting as skips.
_NOTE_SUFFIXES = frozenset({".txt", ".lab", ".csv", ".tsv", ".json", ".jsonl", ".md"})
_NOTE_STEMS = ("readme", "metadata")

_FLAT_RUN = 3  # this many consecutive samples at a file's own peak are a flat top (a limiter, then a gain)
_NARROW_HZ = 4000  # telephone audio (8 kHz) holds nothing above this
_NARROW_SHARE = 1e-5  # share of the energy above _NARROW_HZ below which a file is narrow-band (speech: ~1e-3)
_SILENT_FRAME_DB = -60.0
_FRAME, _HOP = 2048, 512  # silence-analysis frames (librosa's defaults, ~85 ms at 24 kHz)
_PAD_SECONDS = 0.1  # context kept around each segment so onsets and decays are not chopped off
_CUT_WINDOW_S, _CUT_HOP_S = 0.025, 0.010  # energy frames used to find the quietest cut point
_DC_OFFSET = 0.01  # a mean level above this share of full scale is a DC offset (speech averages ~0.001)
_CACHE_VERSION = "ingest-v2"  # part of segment names: bump when segments change so stale files are not reused


@dataclass
class IngestConfig:
    """What counts as a usable clip. Segment names depend on the fields that shape segments."""

    sample_rate: int = 24000
    min_seconds: float = 1.0  # sound left after trimming silence, below which a file is refused
    max_seconds: float = 20.0  # longer files are split at pauses
    target_min_seconds: float = 2.0  # shortest segment cut from a long file
    silence_top_db: float = 40  # below the file's loudest frame by this much counts as silence
    max_clipped_fraction: float = 0.01
    # what soundfile (libsndfile >= 1.1) decodes; others (.m4a, .aac, .wma) are skipped with a hint to convert
    extensions: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                                   ".au", ".caf", ".w64", ".rf64")

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        # A voiced stretch longer than max_seconds is cut so that both sides keep target_min_seconds.
        if not 0 < self.target_min_seconds <= self.max_seconds / 2:
            raise ValueError(
                f"need 0 < target_min_seconds <= max_seconds / 2, got {self.target_min_seconds}, {self.max_seconds}"
            )
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions)


@dataclass
class Clip:
    """Audio to train on: `path` holds `source[start:end]` (seconds), or is `source` itself when used whole.

    `whole` clips are the entire recording, so the user's transcript of `source` is theirs as written; `path`
    is then `source`, or a corrected copy in the cache (a DC offset removed)."""

    source: Path
    path: Path
    start: float
    end: float
    duration: float
    whole: bool = True


@dataclass
class IngestReport:
    """What `ingest` kept and what it refused, with one reason per refused file."""

    clips: list[Clip] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # used, but worth the user's attention

    @property
    def minutes(self) -> float:
        return sum(c.duration for c in self.clips) / 60.0

    def skip_counts(self) -> dict[str, int]:
        """Refused files per kind of reason ("clipped (3.2% ...)" counts as "clipped")."""
        return dict(sorted(Counter(_reason_kind(r) for _, r in self.skipped).items()))

    def summary(self) -> str:
        sources = len({c.source for c in self.clips})
        text = f"kept {len(self.clips)} clips from {sources} files ({self.minutes:.1f} min)"
        if self.warnings:
            text += f", {len(self.warnings)} with warnings"
        if not self.skipped:
            return text + "; skipped none"
        counts = ", ".join(f"{kind}: {n}" for kind, n in self.skip_counts().items())
        return text + f"; skipped {len(self.skipped)} files ({counts})"


class _Skip(Exception):
    """A file refused for the reason in the message."""


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0]


def ingest(audio_dir: str | Path, cache_dir: str | Path, cfg: IngestConfig | None = None) -> IngestReport:
    """Read every file under `audio_dir` (recursively, in sorted order) and return the clips to train on.

    `audio_dir` is only ever read; segments go to `cache_dir/segments/`, which must lie outside it.
    """
    cfg = cfg or IngestConfig()
    audio_dir, cache_dir = Path(audio_dir), Path(cache_dir)
    if not audio_dir.is_dir():
        raise NotADirectoryError(f"audio folder not found: {audio_dir}")
    audio_root, cache_root = audio_dir.resolve(), cache_dir.resolve()
    if cache_root == audio_root or audio_root in cache_root.parents:
        raise ValueError(f"cache_dir {cache_dir} lies inside audio_dir {audio_dir}, which must stay untouched")

    report = IngestReport()
    kept_digests: dict[str, Path] = {}
    for path in _walk(audio_dir):
        if _is_note(path):
            log.debug("ignoring %s (transcript or notes)", path)
            continue
        try:
            if path.suffix.lower() not in cfg.extensions:
                raise _Skip(f"unsupported format ({path.suffix or 'no extension'}; read are "
                            f"{' '.join(cfg.extensions)}: convert it, e.g. ffmpeg -i {path.name} {path.stem}.wav)")
            if _regular_file_size(path) == 0:
                raise _Skip("empty (0 bytes)")
            digest = _file_digest(path)
            if digest in kept_digests:
                raise _Skip(f"duplicate: same bytes as {kept_digests[digest]}")
            _check_transcript(path)
            report.clips.extend(_clips_for(path, digest, cache_dir, cfg, report.warnings))
            kept_digests[digest] = path
        except _Skip as skip:
            log.warning("skipping %s: %s", path, skip)
            report.skipped.append((path, str(skip)))
    log.info("ingest %s: %s", audio_dir, report.summary())
    return report


def audio_files(audio_dir: str | Path, cfg: IngestConfig | None = None) -> list[Path]:
    """Files under `audio_dir` that ingest would try to read (by extension); cheap, for failing fast."""
    extensions = (cfg or IngestConfig()).extensions
    return [p for p in _walk(Path(audio_dir)) if p.suffix.lower() in extensions]


def _walk(audio_dir: Path) -> list[Path]:
    """Files under `audio_dir` in a platform-independent order, leaving out hidden ones (.DS_Store, ._x.wav)."""
    files = []
    for root, dirs, names in os.walk(audio_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / n for n in names if not n.startswith("."))
    return sorted(files, key=lambda p: p.relative_to(audio_dir).as_posix())


def _is_note(path: Path) -> bool:
    return path.suffix.lower() in _NOTE_SUFFIXES or path.name.lower().startswith(_NOTE_STEMS)


def _regular_file_size(path: Path) -> int:
    """Size of the file `path` leads to; _Skip for a link that leads nowhere, or a pipe or device that reading
    would hang on."""
    try:
        info = path.stat()
    except OSError as e:
        raise _Skip(_stat_problem(path, e)) from e
    if not stat.S_ISREG(info.st_mode):
        raise _Skip("not a regular file (a pipe, socket or device)")
    return info.st_size


def _stat_problem(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return f"symlink loop ({path.name} -> {_link_target(path)} never reaches a file): fix or delete the link"
    if error.errno == errno.ENOENT and path.is_symlink():
        return f"broken link (points to {_link_target(path)}, which does not exist): fix or delete the link"
    return f"unreadable: {error.strerror or error}"


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _check_transcript(path: Path) -> None:
    """_Skip a recording whose transcript file cannot be read as text: training it on Whisper's words instead
    would quietly drop what the user wrote."""
    try:
        check_transcript_files(path)
    except TranscriptError as e:
        raise _Skip(f"unreadable transcript ({e})") from e


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise _Skip(f"unreadable: {e}") from e
    return h.hexdigest()


def _clips_for(path: Path, digest: str, cache_dir: Path, cfg: IngestConfig,
               warnings: list[tuple[Path, str]]) -> list[Clip]:
    """Check one file and return it whole or as cached segments; raise _Skip if it is unusable. Problems that
    do not make a file unusable are appended to `warnings` and logged; a DC offset is removed (in a cached
    copy: `audio_dir` is never written)."""
    sr = cfg.sample_rate
    wav, offset = _without_dc_offset(_read(path, sr))
    rms = librosa.feature.rms(y=wav, frame_length=_FRAME, hop_length=_HOP)[0]
    loudest_db = 20 * np.log10(max(float(rms.max()), 1e-12))
    if is_silent(wav) or loudest_db < _SILENT_FRAME_DB:
        raise _Skip(f"silent (nothing but a DC offset of {offset:+.2f})" if offset else "silent")

    clipped, flat, peak, native_sr = _clipping(path)
    if clipped > cfg.max_clipped_fraction:
        raise _Skip(f"clipped ({clipped:.1%} of samples at full scale)")
    if flat > cfg.max_clipped_fraction:
        raise _Skip(f"clipped ({flat:.1%} of samples flat at the peak, {peak:.2f} of full scale: limited, "
                    "then scaled down)")

    narrow = _narrow_band(wav, sr, native_sr)
    if narrow:
        log.warning("%s: %s; it is used, but the tuned voice will sound muffled", path, narrow)
        warnings.append((path, narrow))

    _, (a, b) = librosa.effects.trim(wav, top_db=cfg.silence_top_db, frame_length=_FRAME, hop_length=_HOP)
    if (b - a) / sr < cfg.min_seconds:
        raise _Skip(f"too short ({(b - a) / sr:.2f} s of sound)")
    if offset:
        log.info("%s: DC offset of %+.3f (its mean level, a fault of the microphone or interface) removed; "
                 "the clip is used from a corrected copy in the cache", path, offset)

    duration = len(wav) / sr
    if duration <= cfg.max_seconds:
        if not offset:
            return [Clip(source=path, path=path, start=0.0, end=duration, duration=duration)]
        return _cached_clips(path, wav, [(0, len(wav))], digest, cache_dir, cfg)
    spans = plan_segments(wav, cfg)
    if not spans:
        raise _Skip("no usable segments")
    return _cached_clips(path, wav, spans, digest, cache_dir, cfg)


def _read(path: Path, sr: int) -> np.ndarray:
    try:
        return load_audio(path, sr)
    except NonFiniteAudio as e:
        raise _Skip("non-finite samples (NaN or infinity)") from e
    except (AudioError, OSError) as e:
        raise _Skip(f"unreadable: {e}") from e


def _without_dc_offset(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """(`wav` centred on zero, the offset removed), or (`wav`, 0.0) when its mean is within _DC_OFFSET. An
    offset is no fault of the voice: it hides pauses from the silence checks and shifts every sample, but
    taking it away leaves the speech as it was."""
    offset = float(wav.mean(dtype=np.float64))
    if abs(offset) <= _DC_OFFSET:
        return wav, 0.0
    return (wav - np.float32(offset)).astype(np.float32), offset


def _cached_clips(path: Path, wav: np.ndarray, spans: list[tuple[int, int]], digest: str, cache_dir: Path,
                  cfg: IngestConfig) -> list[Clip]:
    """Clips of `wav[s:e]` for each span, written to `cache_dir/segments/` under names made from the file's
    content and the settings that shape them (a re-run reuses them)."""
    sr = cfg.sample_rate
    key = f"{_CACHE_VERSION}|{sr}|{cfg.target_min_seconds}|{cfg.max_seconds}|{cfg.silence_top_db}|{digest}"
    prefix = hashlib.sha256(key.encode()).hexdigest()[:16]
    seg_dir = cache_dir / "segments"
    seg_dir.mkdir(parents=True, exist_ok=True)
    whole = spans == [(0, len(wav))]
    clips = []
    for i, (s, e) in enumerate(spans):
        out = seg_dir / f"{prefix}_{i}.wav"
        if not out.is_file():  # written atomically, so an existing file is complete
            _write_wav(out, wav[s:e], sr)
        clips.append(Clip(source=path, path=out, start=s / sr, end=e / sr, duration=(e - s) / sr, whole=whole))
    return clips


def _clipping(path: Path) -> tuple[float, float, float, int]:
    """(share of samples at full scale, share in flat runs at the file's own peak, that peak, the file's sample
    rate), from the raw samples of every channel, read before resampling smears the flat tops.

    A file limited at some level and then scaled (peak 0.89, say) never reaches full scale, but its tops are
    runs of identical samples at its peak. Natural speech meets its peak in a sample or two. Full scale is
    judged on the raw samples (a rail is a rail, whatever the offset); flat tops around each channel's centre,
    so that the level a DC offset holds through pauses is not taken for one.
    """
    try:
        data, native_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # load_audio read it a moment ago; a failure here is still a bad file
        raise _Skip(f"unreadable: {e}") from e
    total = max(data.size, 1)
    full = int(np.count_nonzero(np.abs(data) >= CLIP_LEVEL)) / total
    means = data.mean(axis=0, dtype=np.float64)
    mag = np.abs(data - np.where(np.abs(means) > _DC_OFFSET, means, 0.0).astype(np.float32))
    peak = float(mag.max(initial=0.0))
    if peak == 0.0:
        return full, 0.0, peak, native_sr
    at_peak = mag >= peak * (1.0 - 1e-4)
    flat = 0
    for channel in at_peak.T:  # samples inside runs of at least _FLAT_RUN at the peak
        edges = np.flatnonzero(np.diff(np.concatenate([[0], channel.astype(np.int8), [0]])))
        runs = edges[1::2] - edges[::2]
        flat += int(runs[runs >= _FLAT_RUN].sum())
    return full, flat / total, peak, native_sr


def _narrow_band(wav: np.ndarray, sr: int, native: int) -> str | None:
    """Why `wav` (resampled from `native` Hz to `sr`) sounds like a telephone recording, or None. Upsampling
    does not restore what is missing."""
    if native < 2 * _NARROW_HZ + 1000:
        return f"narrow-band (recorded at {native} Hz: nothing above {native // 2} Hz)"
    from scipy.signal import welch

    freqs, power = welch(wav, sr, nperseg=1024)
    share = float(power[freqs > _NARROW_HZ].sum() / max(float(power.sum()), 1e-20))
    if share < _NARROW_SHARE:
        return f"narrow-band (almost no sound above {_NARROW_HZ} Hz: upsampled telephone audio?)"
    return None


def _write_wav(out: Path, wav: np.ndarray, sr: int) -> None:
    """Write mono float WAV via a temporary file in the same folder, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, wav, sr, format="WAV", subtype="FLOAT")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plan_segments(wav: np.ndarray, cfg: IngestConfig) -> list[tuple[int, int]]:
    """Sample spans of mono `wav` (at cfg.sample_rate) to cut out as segments, each within
    [target_min_seconds, max_seconds], in order and non-overlapping.

    Voiced stretches (librosa.effects.split) longer than max_seconds are first cut at their quietest point;
    the stretches are then grouped into segments keeping as much voiced audio as possible with as few segments
    as possible (a short stretch is padded with the silence around it rather than dropped, where there is room).
    """
    sr, n = cfg.sample_rate, len(wav)
    max_len = int(cfg.max_seconds * sr)
    min_len = int(np.ceil(cfg.target_min_seconds * sr))
    voiced = librosa.effects.split(wav, top_db=cfg.silence_top_db, frame_length=_FRAME, hop_length=_HOP)
    pieces: list[tuple[int, int]] = []
    for a, b in voiced:
        pieces.extend(_cut_long(wav, int(a), int(b), min_len, max_len, sr))
    if not pieces:
        return []

    def room_left(j: int) -> int:  # silence before piece j this segment may take (half of a shared gap)
        return pieces[0][0] if j == 0 else (pieces[j][0] - pieces[j - 1][1]) // 2

    def room_right(k: int) -> int:
        return n - pieces[-1][1] if k == len(pieces) - 1 else (pieces[k + 1][0] - pieces[k][1]) // 2

    groups = _group(pieces, room_left, room_right, min_len, max_len)
    dropped = len(pieces) - sum(k - j + 1 for j, k in groups)
    if dropped:
        log.debug("dropped %d voiced stretches that fit no segment", dropped)

    pad = int(_PAD_SECONDS * sr)
    spans = []
    for j, k in groups:
        s, e = pieces[j][0], pieces[k][1]
        left, right = room_left(j), room_right(k)
        gl, gr = _share(max(0, min_len - (e - s)), left, right)  # reach target_min_seconds
        cl, cr = min(pad, left - gl), min(pad, right - gr)
        cl, cr = _share(min(cl + cr, max_len - (e - s + gl + gr)), cl, cr)  # context, within max_seconds
        spans.append((s - gl - cl, e + gr + cr))
    return spans


def _share(want: int, left: int, right: int) -> tuple[int, int]:
    """Split `want` samples between two sides holding `left` and `right`, evenly where both have room."""
    a = min(left, want // 2)
    b = min(right, want - a)
    a = min(left, want - b)
    return a, b


def _cut_long(wav: np.ndarray, a: int, b: int, min_len: int, max_len: int, sr: int) -> list[tuple[int, int]]:
    """Cut one voiced stretch into pieces of at most max_len at its quietest points, each at least min_len."""
    out = []
    while b - a > max_len:  # max_len >= 2 * min_len, so the search window below is never empty
        cut = _quietest(wav, a + min_len, min(a + max_len, b - min_len), sr)
        out.append((a, cut))
        a = cut
    out.append((a, b))
    return out


def _quietest(wav: np.ndarray, lo: int, hi: int, sr: int) -> int:
    """Sample in [lo, hi] at the centre of the lowest-energy short window (first one on ties)."""
    half = max(1, int(_CUT_WINDOW_S * sr) // 2)
    hop = max(1, int(_CUT_HOP_S * sr))
    base = max(0, lo - half)
    seg = wav[base : min(len(wav), hi + half + 1)].astype(np.float64)
    energy = np.concatenate([[0.0], np.cumsum(seg * seg)])
    centres = np.arange(lo, hi + 1, hop)
    starts = np.clip(centres - half - base, 0, len(seg))
    ends = np.clip(centres + half - base, 0, len(seg))
    return int(centres[np.argmin(energy[ends] - energy[starts])])


def _group(pieces, room_left, room_right, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Choose runs of consecutive pieces (first, last index) to become segments: most voiced samples kept,
    then fewest segments. A run fits if it spans at most max_len and can be padded to min_len."""
    m = len(pieces)
    best: list[tuple[int, int]] = [(0, 0)] * (m + 1)  # (voiced samples kept, -segments) over the first i pieces
    back: list[int | None] = [None] * (m + 1)  # start of the run ending at piece i-1, None if that piece is dropped
    for i in range(1, m + 1):
        best[i], back[i] = best[i - 1], None
        voiced = 0
        for j in range(i - 1, -1, -1):
            span = pieces[i - 1][1] - pieces[j][0]
            if span > max_len:
                break
            voiced += pieces[j][1] - pieces[j][0]
            if span + room_left(j) + room_right(i - 1) < min_len:
                continue
            candidate = (best[j][0] + voiced, best[j][1] - 1)
            if candidate > best[i]:
                best[i], back[i] = candidate, j
    groups = []
    i = m
    while i > 0:
        j = back[i]
        if j is None:
            i -= 1
        else:
            groups.append((j, i - 1))
            i = j
    return groups[::-1]
