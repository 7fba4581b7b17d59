"""Training rows for T3 fine-tuning: text tokens, S3 speech tokens and per-clip conditioning, cached on disk.

`build_dataset` turns ingested clips plus their transcripts into a `datasets.DatasetDict` ("train" and
"validation"). Every row holds what T3 learns to produce (`text_tokens`, `speech_tokens`) and what the clip can
offer as a voice to OTHER rows (`speaker_emb`, `prompt_tokens`). The official fine-tuning recipe conditioned each
clip on itself, so the model could copy the target out of its own prompt; `T3Collator` instead draws the
conditioning of every row from a different clip of the training split.

Everything is deterministic: the split depends only on each clip's path and the seed (not on list order), rows
are sorted by path, and the result is cached under a key covering clip contents, transcripts, model and config.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.audio import AudioError, load_audio
from inference.models.t3 import T3Cond
from inference.models.tokenizers import TextError
from inference.voice import normalize_loudness

log = logging.getLogger(__name__)

S3_SR = 16_000  # the S3 tokenizer and the voice encoder take 16 kHz audio
_CACHE_VERSION = "dataset-v3"  # part of the cache key: bump whenever rows are computed differently
_INFO_FILE = "build_info.json"
COLUMNS = ("path", "duration", "text", "text_tokens", "speech_tokens", "speaker_emb", "prompt_tokens")


@dataclass
class DatasetConfig:
    """How clips become rows and how rows are split.

    val_fraction: share of clips held out for validation; with n kept clips the validation split gets
      max(1, round(n * val_fraction)) of them when n >= 3 (and val_fraction > 0), none otherwise, and always
      leaves two for training (each training row is conditioned on another training clip).
    seed: decides which clips are held out (hashed with each clip's path).
    language: language id for the multilingual model (required there); leave None for English.
    max_speech_seconds: longer clips are dropped (ingest already cuts recordings to 20 s).
    """

    val_fraction: float = 0.05
    seed: int = 0
    language: str | None = None
    max_speech_seconds: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_speech_seconds <= 0:
            raise ValueError(f"max_speech_seconds must be positive, got {self.max_speech_seconds}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


class _Drop(Exception):
    """A clip left out of the dataset for the reason in the message."""


# ---------------------------------------------------------------------------------------------- split

def validation_size(n: int, cfg: DatasetConfig) -> int:
    """How many of `n` kept clips go to validation (see DatasetConfig.val_fraction)."""
    if n < 3 or cfg.val_fraction == 0:
        return 0
    return min(n - 2, max(1, round(n * cfg.val_fraction)))


def _split_rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()


def split_paths(paths: Iterable[str], cfg: DatasetConfig) -> tuple[list[str], list[str]]:
    """(train, validation) paths, each sorted. Which paths are held out depends on the seed and on the paths
    relative to their common folder, not on where that folder lives: a moved or copied dataset (or another
    machine) holds out the same clips. The held-out ones are the `validation_size` paths ranking lowest."""
    unique = sorted(set(str(p) for p in paths))
    absolute = {p: os.path.abspath(p) for p in unique}
    root = os.path.commonpath(list(absolute.values())) if len(unique) > 1 else ""
    ranked = sorted(unique, key=lambda p: (_split_rank(os.path.relpath(absolute[p], root) if root else p, cfg.seed), p))
    held_out = set(ranked[: validation_size(len(unique), cfg)])
    return [p for p in unique if p not in held_out], [p for p in unique if p in held_out]


# ---------------------------------------------------------------------------------------------- cache key

def _file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # the build drops the clip as unreadable; the key still records that it was missing
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """Identity of everything in `model` that shapes the rows: text tokenizer, special token ids and prompt
    length, S3 tokenizer and voice-encoder weights (hashed in full: about a second for the real tokenizer)."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = model.t3.cfg
    special = (cfg.start_text_token, cfg.stop_text_token, cfg.start_speech_token, cfg.stop_speech_token,
               cfg.speech_cond_prompt_len, cfg.max_text_tokens, cfg.max_speech_tokens, cfg.text_vocab_size)
    h.update(repr(special).encode())
    with tempfile.TemporaryDirectory() as tmp:  # a file (English, multilingual) or a folder of files (GPT-2 BPE)
        target = Path(tmp) / ("tokenizer" if model.t3.cfg.is_gpt2 else "tokenizer.json")
        model.tokenizer.save(target)
        for file in sorted(target.rglob("*")) if target.is_dir() else [target]:
            h.update(file.name.encode())
            h.update(file.read_bytes())
    for module in (model.s3gen.tokenizer, model.ve):
        for name, value in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(repr((tuple(value.shape), str(value.dtype))).encode())
            h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _transcript_lookup(transcripts: Mapping) -> dict[str, Any]:
    return {str(Path(k)): v for k, v in transcripts.items()}


def cache_key(clips: Sequence, transcripts: Mapping, model_id: str, cfg: DatasetConfig) -> str:
    """Key of the cached dataset: clip paths and content hashes, transcripts, model identity and config.
    Independent of the order of `clips`."""
    texts = _transcript_lookup(transcripts)
    entries = sorted({(str(Path(c.path)), _file_sha256(Path(c.path)), texts.get(str(Path(c.path))))
                      for c in clips}, key=lambda e: (e[0], e[1] or "", str(e[2])))
    payload = {"version": _CACHE_VERSION, "model": model_id, "config": asdict(cfg), "clips": entries}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- build

def _features():
    from datasets import Features, List, Value

    return Features({
        "path": Value("string"),
        "duration": Value("float64"),
        "text": Value("string"),
        "text_tokens": List(Value("int64")),
        "speech_tokens": List(Value("int64")),
        "speaker_emb": List(Value("float32")),
        "prompt_tokens": List(Value("int64")),
    })


def _prompt_is_whole_clip(tokenizer, n_samples: int, plen: int, seconds: float) -> bool:
    """Whether tokenizing the first `seconds` with max_len=plen would see exactly the whole clip
    (no cut of the waveform, nor of its log-mel at mel_frames_per_token * plen frames)."""
    tcfg = getattr(tokenizer, "cfg", None)
    hop, per_token = getattr(tcfg, "hop", None), getattr(tcfg, "mel_frames_per_token", None)
    if n_samples > int(seconds * S3_SR) or not hop or not per_token:
        return False
    return n_samples // hop <= per_token * plen


def _row(path: Path, text: str | None, model, cfg: DatasetConfig) -> dict:
    """One clip's row, or _Drop saying why it cannot be used. Cheap checks (text) come before audio work."""
    t3cfg = model.t3.cfg
    if text is None:
        raise _Drop("no transcript")
    if not isinstance(text, str):
        raise _Drop(f"transcript is a {type(text).__name__}, not text")
    text = text.strip()
    if not text:
        raise _Drop("empty transcript")
    try:
        text_tokens = model.text_tokens(text, cfg.language)[0].tolist()
    except (TextError, ValueError, KeyError) as e:
        raise _Drop(f"text does not tokenize: {e}") from e
    if len(text_tokens) <= (0 if model.t3.cfg.is_gpt2 else 2):  # Llama T3's rows carry start/stop text tokens
        raise _Drop("text holds nothing the tokenizer keeps")

    try:
        wav = load_audio(path, S3_SR)
    except (AudioError, OSError) as e:  # NaN/inf samples included (NonFiniteAudio)
        raise _Drop(f"unreadable audio: {e}") from e
    duration = len(wav) / S3_SR
    if duration > cfg.max_speech_seconds:
        raise _Drop(f"too long ({duration:.1f} s > max_speech_seconds {cfg.max_speech_seconds:g})")

    rules = model.FAMILY.voice
    if rules.loudness_lufs is not None:  # as synthesis levels a voice (Turbo, Nano): the prompt must match it
        wav, _ = normalize_loudness(wav, S3_SR, rules.loudness_lufs, str(path))
    tokenizer = model.s3gen.tokenizer
    seconds = rules.t3_prompt_seconds
    try:
        with torch.inference_mode():
            tokens, lens = tokenizer([torch.from_numpy(wav)])
            speech = tokens[0, : int(lens[0])].tolist()
            plen = int(t3cfg.speech_cond_prompt_len)
            if _prompt_is_whole_clip(tokenizer, len(wav), plen, seconds):
                prompt = speech  # the same waveform through the same call: identical tokens, half the work
            else:
                prompt_wav = torch.from_numpy(wav[: int(seconds * S3_SR)])
                ptokens, plens = tokenizer([prompt_wav], max_len=plen)
                prompt = ptokens[0, : int(plens[0])].tolist()
            speaker = model.ve.embed_speaker([wav], S3_SR).reshape(-1).float().cpu().tolist()
    except (ValueError, RuntimeError) as e:
        raise _Drop(f"speech tokenizer or voice encoder failed: {e}") from e
    if not speech or not prompt:
        raise _Drop(f"too short for the speech tokenizer ({duration:.2f} s)")
    if len(speech) + 2 > t3cfg.max_speech_tokens:
        raise _Drop(f"{len(speech)} speech tokens; the model takes at most {t3cfg.max_speech_tokens - 2}")
    if not np.isfinite(speaker).all():
        raise _Drop("voice embedding is not finite")

    return {
        "path": str(path),
        "duration": float(duration),
        "text": text,
        "text_tokens": [int(t) for t in text_tokens],
        "speech_tokens": [int(t3cfg.start_speech_token), *map(int, speech), int(t3cfg.stop_speech_token)],
        "speaker_emb": speaker,
        "prompt_tokens": [int(t) for t in prompt],
    }


def _compute(clips: Sequence, transcripts: Mapping, model, cfg: DatasetConfig, progress: bool):
    from datasets import Dataset, DatasetDict
    from tqdm.auto import tqdm

    texts = _transcript_lookup(transcripts)
    paths = sorted({str(Path(c.path)) for c in clips})
    if len(paths) < len(clips):
        log.warning("%d clips are listed more than once; each is used once", len(clips) - len(paths))
    rows, dropped = [], []
    for path in tqdm(paths, desc="tokenizing clips", unit="clip", disable=not progress):
        try:
            rows.append(_row(Path(path), texts.get(path), model, cfg))
        except _Drop as drop:
            log.warning("dropping %s: %s", path, drop)
            dropped.append((path, str(drop)))
    if not rows:
        reasons = "; ".join(f"{p}: {r}" for p, r in dropped[:5]) or "no clips given"
        raise ValueError(f"no usable clips for the dataset ({len(dropped)} dropped: {reasons})")

    train_paths, val_paths = split_paths((r["path"] for r in rows), cfg)
    by_path = {r["path"]: r for r in rows}

    def as_dataset(split_paths_: list[str]) -> Dataset:
        columns = {name: [by_path[p][name] for p in split_paths_] for name in COLUMNS}
        return Dataset.from_dict(columns, features=_features())

    data = DatasetDict({"train": as_dataset(train_paths), "validation": as_dataset(val_paths)})
    return data, dropped


def build_dataset(clips: Sequence, transcripts: Mapping, model, cache_dir: str | Path,
                  cfg: DatasetConfig | None = None, *, model_id: str | None = None, progress: bool = False):
    """Rows for T3 fine-tuning from `clips` (training.ingest.Clip, or anything with a `.path`).

    transcripts: text per clip path (keys as str or Path; `training.transcribe.transcribe_files` output fits).
    model: a ChatterboxTTS / ChatterboxMultilingualTTS (uses text_tokens, s3gen.tokenizer, ve, t3.cfg).
    model_id: identity of the model for the cache key; by default `model_fingerprint(model)`.

    Returns a DatasetDict with "train" and "validation" splits (rows sorted by path), columns COLUMNS, each as
    synthesis builds it for the model's family: text_tokens of the normalised text (with start/stop text tokens
    for Llama T3; GPT-2 T3, as `inference_turbo`, takes the BPE ids alone); speech_tokens = S3 tokens of the
    whole clip at 16 kHz wrapped in start/stop speech tokens; speaker_emb = voice-encoder embedding of the clip;
    prompt_tokens = S3 tokens of its first `t3_prompt_seconds` (6 s; Turbo/Nano 15 s after levelling the clip to
    -27 LUFS), at most speech_cond_prompt_len (150; 375). The last two are conditioning for OTHER clips (T3Collator).
    Clips without a usable transcript or audio are dropped and logged (reasons also in build_info.json beside
    the cached data); ValueError only when no clip at all is usable.
    The result lives in cache_dir/dataset-<key>, written atomically; the same inputs load it from there.
    """
    from datasets import load_from_disk

    cfg = cfg or DatasetConfig()
    t3cfg = model.t3.cfg
    if getattr(t3cfg, "is_multilingual", False) and not cfg.language:
        raise ValueError("the multilingual model needs DatasetConfig.language (e.g. 'fr')")
    model_id = model_id if model_id is not None else model_fingerprint(model)
    key = cache_key(clips, transcripts, model_id, cfg)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"dataset-{key}"

    if final.is_dir():
        try:
            data = load_from_disk(str(final))
            _report_cached(final)
            return data
        except Exception as e:  # written atomically, so this is damage from outside: rebuild it
            log.warning("cached dataset %s is unreadable (%s); rebuilding it", final, e)
            shutil.rmtree(final, ignore_errors=True)

    data, dropped = _compute(clips, transcripts, model, cfg, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".dataset-{key}.", suffix=".tmp"))
    try:
        with _quiet_progress(not progress):  # an empty split needs one (empty) shard to load back
            data.save_to_disk(str(tmp), num_shards={name: 1 for name, split in data.items() if len(split) == 0})
        info = {"key": key, "model_id": model_id, "config": asdict(cfg), "train": len(data["train"]),
                "validation": len(data["validation"]), "dropped": [list(d) for d in dropped]}
        (tmp / _INFO_FILE).write_text(json.dumps(info, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            log.info("another build wrote %s first; using that one", final)  # same key, same content
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("dataset %s: %d train, %d validation clips; %d dropped", final, len(data["train"]),
             len(data["validation"]), len(dropped))
    return load_from_disk(str(final))


@contextlib.contextmanager
def _quiet_progress(quiet: bool):
    """Hide the `datasets` progress bars for one call, restoring the global setting afterwards."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if quiet and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and not was_disabled:
            enable_progress_bars()


def _report_cached(folder: Path) -> None:
    try:
        info = json.loads((folder / _INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        log.info("loaded cached dataset %s", folder)
        return
    for path, reason in info.get("dropped", []):
        log.warning("dropped %s: %s (cached build)", path, reason)
    log.info("loaded cached dataset %s: %s train, %s validation clips; %d dropped", folder,
             info.get("train"), info.get("validation"), len(info.get("dropped", [])))


# ---------------------------------------------------------------------------------------------- batches

def pick_conditioning(index: int | None, n: int, rng: np.random.Generator) -> int:
    """A pool index in [0, n) other than `index` (the row's own clip; None when it is not in the pool),
    uniformly. Only a one-clip pool can return `index` itself."""
    if n < 1:
        raise ValueError("the conditioning pool is empty")
    if index is None or not 0 <= index < n:
        return int(rng.integers(n))
    if n == 1:
        return index
    r = int(rng.integers(n - 1))
    return r + (r >= index)


class T3Collator:
    """Pads rows into a T3 training batch, each row conditioned on ANOTHER clip of `pool` (the train split).

    `collator(rows, pool, step=None)`: rows is a list of row dicts (or a dict of columns, as `ds[i:j]` gives);
    pool a `datasets.Dataset` or list of row dicts with path, speaker_emb and prompt_tokens. The conditioning
    clip of each row is drawn uniformly from the pool without its own clip, from a generator seeded with
    (seed, step): pass `step` (e.g. the optimiser step) for runs that resume or use several loader workers;
    without it each call takes the next value of an internal counter.

    Returns tensors text_tokens (B, Lt) padded with text_pad_id, text_token_lens (B,), speech_tokens (B, Ls)
    padded with speech_pad_id, speech_token_lens (B,), speaker_emb (B, E), prompt_tokens (B, P), emotion_adv
    (B, 1, 1); plus lists `path` and `cond_path` (the clip each row was conditioned on). T3Cond takes one
    prompt length for the whole batch and has no mask for padding, so every prompt is cut to the shortest in
    the batch (their first P tokens).
    """

    def __init__(self, seed: int = 0, emotion_adv: float = 0.5, text_pad_id: int = 0, speech_pad_id: int = 6562,
                 min_cond_seconds: float | None = None):
        self.min_cond_seconds = min_cond_seconds
        self.seed = int(seed)
        self.emotion_adv = float(emotion_adv)
        self.text_pad_id = int(text_pad_id)
        self.speech_pad_id = int(speech_pad_id)
        self._calls = 0
        self._pool = None
        self._pool_cols: dict[str, list] = {}
        self._pool_index: dict[str, int] = {}
        self._warned_single = False

    @classmethod
    def for_model(cls, model, emotion_adv: float | None = None, **kwargs) -> "T3Collator":
        """Pad ids from the model's T3 config (stop-text and stop-speech tokens), the emotion value as synthesis
        takes it (None: the family's), and the family's shortest voice: Turbo and Nano take a reference only when
        it is longer than 5 s, so only such clips condition their rows."""
        cfg = model.t3.cfg
        return cls(text_pad_id=cfg.stop_text_token, speech_pad_id=cfg.stop_speech_token,
                   emotion_adv=model._exaggeration(emotion_adv), min_cond_seconds=model.FAMILY.voice.min_seconds,
                   **kwargs)

    def _index_pool(self, pool) -> None:
        if pool is self._pool:
            return
        names = ("path", "duration", "speaker_emb", "prompt_tokens")
        if hasattr(pool, "select_columns"):  # datasets.Dataset: read the columns once
            cols = pool.select_columns(list(names))[:]
        else:
            cols = {name: [row[name] for row in pool] for name in names}
        if not cols["path"]:
            raise ValueError("the conditioning pool is empty")
        if self.min_cond_seconds is not None:
            keep = [i for i, d in enumerate(cols["duration"]) if d > self.min_cond_seconds]
            if not keep:
                log.warning("no training clip is longer than %g s, the shortest voice this model takes at synthesis; "
                            "rows are conditioned on shorter clips", self.min_cond_seconds)
            elif len(keep) < len(cols["path"]):
                log.info("%d of %d training clips are longer than %g s and condition the rows (as voices at "
                         "synthesis must be)", len(keep), len(cols["path"]), self.min_cond_seconds)
                cols = {name: [values[i] for i in keep] for name, values in cols.items()}
        self._pool, self._pool_cols = pool, cols
        self._pool_index = {str(p): i for i, p in enumerate(cols["path"])}

    def __call__(self, rows, pool, step: int | None = None) -> dict:
        if isinstance(rows, Mapping):
            rows = [dict(zip(rows.keys(), values)) for values in zip(*rows.values())]
        if not rows:
            raise ValueError("cannot collate an empty batch")
        self._index_pool(pool)
        if step is None:
            step = self._calls
        self._calls += 1
        rng = np.random.default_rng([self.seed, int(step)])
        n = len(self._pool_cols["path"])

        cond_ids = []
        for row in rows:
            own = self._pool_index.get(str(row["path"]))
            j = pick_conditioning(own, n, rng)
            if j == own and not self._warned_single:
                log.warning("the conditioning pool holds only %s itself; it conditions on its own clip", row["path"])
                self._warned_single = True
            cond_ids.append(j)

        prompts = [self._pool_cols["prompt_tokens"][j] for j in cond_ids]
        p = min(len(x) for x in prompts)
        if p == 0:
            raise ValueError("a conditioning clip has no prompt tokens")
        text_lens = [len(r["text_tokens"]) for r in rows]
        speech_lens = [len(r["speech_tokens"]) for r in rows]
        b = len(rows)
        text = torch.full((b, max(text_lens)), self.text_pad_id, dtype=torch.long)
        speech = torch.full((b, max(speech_lens)), self.speech_pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            text[i, : text_lens[i]] = torch.as_tensor(r["text_tokens"], dtype=torch.long)
            speech[i, : speech_lens[i]] = torch.as_tensor(r["speech_tokens"], dtype=torch.long)
        return {
            "text_tokens": text,
            "text_token_lens": torch.tensor(text_lens, dtype=torch.long),
            "speech_tokens": speech,
            "speech_token_lens": torch.tensor(speech_lens, dtype=torch.long),
            "speaker_emb": torch.tensor([self._pool_cols["speaker_emb"][j] for j in cond_ids], dtype=torch.float32),
            "prompt_tokens": torch.tensor([x[:p] for x in prompts], dtype=torch.long),
            "emotion_adv": torch.full((b, 1, 1), self.emotion_adv, dtype=torch.float32),
            "path": [str(r["path"]) for r in rows],
            "cond_path": [str(self._pool_cols["path"][j]) for j in cond_ids],
        }


def batch_cond(batch: Mapping, device: str | torch.device | None = None) -> T3Cond:
    """The T3Cond of a collated batch, for `T3.loss(batch_cond(b), b["text_tokens"], ...)`."""
    return T3Cond(speaker_emb=batch["speaker_emb"].to(device),
                  cond_prompt_speech_tokens=batch["prompt_tokens"].to(device),
                  emotion_adv=batch["emotion_adv"].to(device))
