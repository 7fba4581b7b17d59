"""Named voices: the model's built-in one, a folder of reference clips, and uploads saved into that folder.

The folder is the source of truth, so several replicas that share it (a network volume) know the same voices: a
name not yet loaded here is looked for there before it is refused.
"""
from __future__ import annotations

import io
import logging
import re
import threading
from pathlib import Path

import soundfile as sf

from ..audio import AudioError, NonFiniteAudio, check_finite
from ..conditionals import Conditionals
from .schema import VOICE_NAME

log = logging.getLogger("inference.server")

BUILT_IN = "default"
CLIP_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class VoiceError(ValueError):
    """A voice request that cannot be met; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class VoiceStore:
    def __init__(self, model, folder: str | Path | None, allow_overwrite: bool = False):
        self.model = model
        self.folder = Path(folder) if folder else None
        self.allow_overwrite = allow_overwrite
        self.voices: dict[str, Conditionals] = {BUILT_IN: model.conds}
        self.lock = threading.Lock()  # voice preparation uses the model's encoders: one at a time

    def names(self) -> list[str]:
        on_disk = {p.stem for p in self._clips()}
        return sorted(set(self.voices) | on_disk)

    def load_folder(self) -> None:
        for path in self._clips():
            try:
                self._prepare_file(path)
            except (AudioError, VoiceError, OSError) as e:
                log.warning("voice %r skipped: %s", path.stem, e)

    def get(self, name: str) -> Conditionals:
        """The voice called `name`, loaded from the folder on first use (another replica may have saved it)."""
        if name in self.voices:
            return self.voices[name]
        if re.match(VOICE_NAME, name):
            for path in self._clips():
                if path.stem == name:
                    return self._prepare_file(path)
        raise VoiceError(f"unknown voice {name!r}; known: {', '.join(self.names())}", 404)

    def add(self, name: str, data: bytes, max_seconds: float) -> None:
        """Make a voice of an uploaded clip and save the clip into the folder (FLAC: lossless, compact)."""
        if not re.match(VOICE_NAME, name):
            raise VoiceError("a voice name is 1-64 letters, digits, '-' or '_', starting with a letter or digit")
        if name == BUILT_IN or (name in self.names() and not self.allow_overwrite):
            raise VoiceError(f"voice {name!r} exists; this server does not replace voices "
                             "(allow_voice_overwrite = true lets uploads replace all but the built-in one)", 409)
        try:
            wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise VoiceError(f"the upload is not audio this server reads (WAV, FLAC, Ogg, MP3): {e}") from None
        if len(wav) / rate > max_seconds:
            raise VoiceError(f"the clip is {len(wav) / rate:.0f} s long; voices take at most {max_seconds:.0f} s "
                             "(5-10 s of clean speech works best)")
        mono = wav.mean(axis=1)
        try:
            check_finite(mono, "the clip")
        except NonFiniteAudio as e:
            raise VoiceError(str(e)) from None
        with self.lock:
            conds = self.model.prepare_conditionals_from_array(mono, rate, source="the uploaded clip")
        self.voices[name] = conds
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in self._clips():
                if old.stem == name:
                    old.unlink()
            sf.write(self.folder / f"{name}.flac", mono, rate, subtype="PCM_16")
            log.info("voice %r saved to the voices folder", name)

    def _clips(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in CLIP_SUFFIXES and p.stem != BUILT_IN)

    def _prepare_file(self, path: Path) -> Conditionals:
        with self.lock:
            conds = self.model.prepare_conditionals(path)
        self.voices[path.stem] = conds
        log.info("voice %r from %s", path.stem, path.name)
        return conds
