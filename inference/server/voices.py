"""Named voices: the model's built-in one, a folder of reference clips, and uploads saved into that folder.

The folder is the source of truth, so several replicas that share it (a network volume) know the same voices: a
name not yet loaded here is looked for there before it is refused. A clip the model cannot take (Turbo's voices must
be longer than 5 s) is left out of the list and refused with the reason, until the file changes.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import fields
from pathlib import Path

import soundfile as sf

from ..audio import AudioError, decode_clip
from ..conditionals import Conditionals
from .config import OpenAIVoices
from .schema import VOICE_NAME

log = logging.getLogger("inference.server")

BUILT_IN = "default"
OPENAI_NAMES = tuple(f.name for f in fields(OpenAIVoices))  # clients ask for these without uploading anything
CLIP_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class VoiceError(ValueError):
    """A voice request that cannot be met; `status` is the HTTP status to answer with, `param` the field at fault
    in an upload."""

    def __init__(self, message: str, status: int = 400, param: str = "file"):
        super().__init__(message)
        self.status, self.param = status, param


class VoiceStore:
    def __init__(self, model, folder: str | Path | None, allow_overwrite: bool = False):
        self.model = model
        self.folder = Path(folder) if folder else None
        self.allow_overwrite = allow_overwrite
        self.voices: dict[str, Conditionals] = {BUILT_IN: model.conds}
        self.unusable: dict[str, tuple[int, str]] = {}  # clip file name -> (its mtime_ns, why the model refused it)
        self.lock = threading.Lock()  # voice preparation uses the model's encoders: one at a time

    def names(self) -> list[str]:
        on_disk = {p.stem for p in self._clips() if self._unusable(p) is None}
        return sorted(set(self.voices) | on_disk)

    def load_folder(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            for path in sorted(set(self.folder.iterdir()) - set(self._clips())):
                if path.suffix.lower() in CLIP_SUFFIXES and path.stem != BUILT_IN:
                    log.warning("voice file %r ignored: its name is not a voice name (1-64 letters, digits, '-' or "
                                "'_', starting with a letter or digit)", path.name)
        for path in self._clips():
            try:
                self._prepare_file(path)
            except (AudioError, VoiceError, OSError) as e:
                log.warning("voice %r skipped: %s", path.stem, e)

    def get(self, name: str) -> Conditionals:
        """The voice called `name`, loaded from the folder on first use (another replica may have saved it)."""
        if name in self.voices:
            return self.voices[name]
        if re.fullmatch(VOICE_NAME, name):
            for path in self._clips():
                if path.stem == name:
                    return self._prepare_file(path)
        raise VoiceError(f"unknown voice {name!r}; known: {', '.join(self.names())}", 404)

    def add(self, name: str, data: bytes, max_seconds: float) -> None:
        """Make a voice of an uploaded clip and save the clip into the folder (FLAC: lossless, compact)."""
        self.check_new_name(name)
        try:
            mono, rate = decode_clip(data, max_seconds, "the upload")
        except AudioError as e:
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

    def check_new_name(self, name: str) -> None:
        """A name an upload may take: well formed (the whole of it: `default\\n` is not `default`), not the built-in
        voice, and neither an existing voice nor an OpenAI voice name unless overwriting is allowed (an upload
        named `alloy` would otherwise replace what every client asking for `alloy` hears). Names differing only
        in case clash: they would be one file on a case-insensitive volume, and two voices to a listener."""
        if not re.fullmatch(VOICE_NAME, name):
            raise VoiceError("a voice name is 1-64 letters, digits, '-' or '_', starting with a letter or digit",
                             param="name")
        taken = {n.lower(): n for n in [*self.names(), *OPENAI_NAMES]}
        clash = taken.get(name.lower())
        if clash is None or (clash == name and clash != BUILT_IN and self.allow_overwrite):
            return
        what = f"an OpenAI voice name ({clash!r})" if clash in OPENAI_NAMES and clash not in self.names() \
            else f"the voice {clash!r}"
        said = f"{name!r} is {what}" if clash == name else f"{name!r} differs from {what} only in case"
        rule = "the built-in voice is never replaced" if clash == BUILT_IN else \
            "names differing only in case are refused" if clash != name else \
            "this server does not replace voices or take OpenAI's names (allow_voice_overwrite = true lets it)"
        raise VoiceError(f"{said}: {rule}", 409, "name")

    def _clips(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir()
                      if p.suffix.lower() in CLIP_SUFFIXES and p.stem != BUILT_IN and re.fullmatch(VOICE_NAME, p.stem))

    def _unusable(self, path: Path) -> str | None:
        """Why the model refused this clip, unless the file has changed since."""
        mtime, reason = self.unusable.get(path.name, (None, None))
        return reason if mtime is not None and mtime == _mtime(path) else None

    def _prepare_file(self, path: Path) -> Conditionals:
        if (reason := self._unusable(path)) is None:
            try:
                with self.lock:
                    conds = self.model.prepare_conditionals(path)
            except (AudioError, OSError) as e:
                reason = str(e).replace(str(path), path.name)  # the folder's place is not the client's business
                self.unusable[path.name] = (_mtime(path), reason)
        if reason is not None:
            raise VoiceError(f"the voice {path.stem!r} cannot be used: {reason}", 400, "voice")
        self.voices[path.stem] = conds
        log.info("voice %r from %s", path.stem, path.name)
        return conds


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
