"""Transcripts a user writes beside a recording (`clip.wav` + `clip.txt` or `clip.lab`), read by one rule for
training, which trains on them, and evaluation, whose ASR floor scores Whisper against them: strictly as UTF-8,
so that a binary or mis-encoded file is named with what to do, never read as garbage or a bare codec error."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

SIDE_SUFFIXES = (".txt", ".lab")  # a transcript beside the audio, in the order they are looked up


class TranscriptError(ValueError):
    """A transcript file the user supplied that cannot be read as text; the message names it and says what to do."""


def read_transcript_file(path: Path) -> str:
    """The text of a transcript file the user wrote (UTF-8, with or without a byte-order mark). A binary file or
    another encoding is a TranscriptError naming the file, not a bare codec error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TranscriptError(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                              "save it as UTF-8, or delete it to have Whisper transcribe") from e
    except OSError as e:
        raise TranscriptError(f"{path} cannot be read ({e.strerror or e})") from e


def transcript_files(audio: str | Path) -> list[Path]:
    """The transcript files beside `audio` (`<stem>.txt`, `<stem>.lab`), in the order they are looked up."""
    audio = Path(audio).absolute()
    return [side for side in (audio.with_suffix(s) for s in SIDE_SUFFIXES) if side.is_file()]


def check_transcript_files(audio: str | Path) -> None:
    """Raise TranscriptError if a transcript file beside `audio` cannot be read as text (ingest checks this
    before any model loads)."""
    for side in transcript_files(audio):
        read_transcript_file(side)


def side_transcript(audio: str | Path) -> str | None:
    """The first non-empty transcript beside `audio`, whitespace collapsed; None when there is none. An empty
    file is passed over with a warning; one that is not text raises TranscriptError."""
    for side in transcript_files(audio):
        text = " ".join(read_transcript_file(side).split())
        if text:
            return text
        log.warning("%s is empty; ignoring it", side)
    return None
