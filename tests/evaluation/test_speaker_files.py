"""The speaker's own files that evaluation reads besides its reference: transcripts beside recordings (the ASR
floor, scored by the real Whisper base) and the clips held out of the tuned model's training."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from evaluation import evaluate as recipe
from evaluation.config import EvalConfig
from inference.adapters import HELDOUT_FILE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = PROJECT_ROOT / "audio_data" / "espeak_sample"
SAID = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "espeak_sample.json").read_text())["files"][0]["text"]


def recording(folder: Path, name: str, transcript: str | bytes | None = None, suffix: str = ".txt") -> Path:
    """A clip of the shipped sample copied to `folder`/`name`, with `transcript` beside it when given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = shutil.copy(SAMPLE / "sample_001.flac", folder / name)
    if transcript is not None:
        side = Path(path).with_suffix(suffix)
        side.write_bytes(transcript) if isinstance(transcript, bytes) else side.write_text(transcript)
    return Path(path)


def test_a_transcript_that_is_not_text_leaves_its_clip_out_of_the_floor(tmp_path, caplog, whisper_base):
    """As in training: a binary transcript beside a clip skips that clip, naming the file; it does not stop the
    run (it used to fail it with a bare "'utf-8' codec can't decode" after both models had loaded)."""
    good = recording(tmp_path, "good.flac", SAID)
    binary = recording(tmp_path, "binary.flac", b"\x9d\x00\xff\xfe binary")
    lab = recording(tmp_path, "lab.flac", SAID, suffix=".lab")  # training's other transcript suffix
    with caplog.at_level(logging.INFO, logger="evaluation"):
        floor = recipe.asr_floor(whisper_base, [good, binary, lab], "en")
    assert floor["n"] == 2 and floor["wer"] < 0.3, floor  # espeak's clear speech: Whisper gets nearly all of it
    assert f"ASR floor: {binary} skipped ({tmp_path / 'binary.txt'} is not UTF-8 text (byte 0x9d" in caplog.text


def heldout_model(folder: Path, clips: list[Path], originals: dict[Path, Path]) -> Path:
    """A tuned model folder as training exports it, as far as evaluation's reference is concerned."""
    folder.mkdir()
    (folder / HELDOUT_FILE).write_text(json.dumps({"heldout_clips": [str(c) for c in clips],
                                                   "originals": {str(c): str(o) for c, o in originals.items()}}))
    return folder


def test_a_heldout_clip_read_from_a_corrected_copy_maps_back_to_the_users_recording(tmp_path, whisper_base):
    """Training records a clip whose DC offset it removed as its centred copy in the training cache. Evaluation
    speaks with that copy, reads the transcript beside the user's recording, and does not take the recording for
    another clip of the speaker (the same-speaker ceiling would compare the reference with itself)."""
    audio = tmp_path / "audio_data"
    original, other = recording(audio, "dc.flac", SAID), recording(audio, "other.flac", SAID)
    copy = recording(tmp_path / "checkpoints" / ".cache" / "segments", "0123abcd_0.flac")
    tuned = heldout_model(tmp_path / "tuned", [copy], {copy: original})
    cfg = EvalConfig(audio_dir=str(audio))

    references, origin = recipe.resolve_reference(cfg, str(tuned))
    assert references == [copy] and HELDOUT_FILE in origin
    originals = recipe.heldout_originals(str(tuned))
    assert recipe.speaker_recordings(cfg, references, origin, originals) == [other]
    floor = recipe.asr_floor(whisper_base, references, "en", originals)  # the transcript beside the recording
    assert floor["n"] == 1 and floor["wer"] < 0.3, floor

    copy.unlink()  # the training cache was cleared: the user's recording is the held-out clip
    assert recipe.resolve_reference(cfg, str(tuned))[0] == [original]
