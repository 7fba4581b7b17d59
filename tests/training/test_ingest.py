"""Ingest on real speech (espeak-ng): what is kept, what is refused and why, and that audio_data stays untouched."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from inference.audio import load_audio
from training.ingest import IngestConfig, ingest, plan_segments

ESPEAK = shutil.which("espeak-ng")
SR = 24000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river.",
    "She sells sea shells by the sea shore every summer morning.",
    "A journey of a thousand miles begins with a single step.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is cloudy with a chance of light rain in the evening.",
    "Reading books on a quiet afternoon is one of my favourite pleasures.",
    "We walked along the beach and watched the waves roll in slowly.",
    "Our train leaves the station at half past seven tomorrow morning.",
    "Every good idea starts as a small thought that someone writes down.",
    "The old clock in the hallway chimes loudly at the top of each hour.",
    "Fresh bread from the bakery smells wonderful on a cold winter day.",
    "He carefully painted the fence a bright shade of blue last weekend.",
    "Music can change the mood of a room in just a few seconds.",
    "They planted tomatoes, beans and peppers in the garden this spring.",
    "The library will be closed on Monday for the national holiday.",
    "Children laughed and played in the park until the sun went down.",
]
NOTE_FILES = ("README.md", "transcripts.txt", "metadata.csv", "sub/normal_b.lab")


def _speak(text: str, tmp: Path) -> np.ndarray:
    """espeak-ng speech as float32 at 24 kHz."""
    out = tmp / "espeak.wav"
    subprocess.run([ESPEAK, "-v", "en-us", "-w", str(out), text], check=True, capture_output=True)
    return load_audio(out, SR)


def _snapshot(root: Path) -> dict[str, tuple]:
    """Everything that would betray a write: names, sizes, mtimes and hashes of files, folder mtimes, links."""
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            snap[rel] = ("link", os.readlink(p))
            continue
        st = p.stat()
        if p.is_dir():
            snap[rel] = ("dir", st.st_mtime_ns)
        else:
            snap[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    snap["."] = ("dir", root.stat().st_mtime_ns)
    return snap


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One audio_data folder holding every kind of file a user might drop in, ingested once."""
    if ESPEAK is None:
        pytest.skip("espeak-ng not installed")
    tmp = tmp_path_factory.mktemp("ingest")
    audio, cache = tmp / "audio_data", tmp / "cache"
    (audio / "sub").mkdir(parents=True)

    normal = _speak(SENTENCES[0], tmp)
    assert 2.5 < len(normal) / SR < 4.5
    sf.write(audio / "normal.wav", normal, SR)

    pause = np.zeros(int(0.5 * SR), np.float32)
    parts: list[np.ndarray] = []
    for text in SENTENCES:
        parts += [_speak(text, tmp), pause]
        if sum(map(len, parts)) >= 45 * SR:
            break
    long = np.concatenate(parts)
    assert len(long) >= 45 * SR
    sf.write(audio / "long.wav", librosa.resample(long, orig_sr=SR, target_sr=22050), 22050)  # espeak's own rate

    sf.write(audio / "silence.wav", np.zeros(3 * SR, np.float32), SR)
    (audio / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(8192))
    start = librosa.effects.trim(normal, top_db=40)[1][0]
    sf.write(audio / "short.wav", normal[start : start + SR // 2], SR)
    sf.write(audio / "clipped.wav", np.clip(_speak(SENTENCES[1], tmp) * 30, -1, 1), SR, subtype="PCM_16")
    # limited at +-0.5, then scaled to a 0.89 peak: never at full scale, yet flat-topped
    loud = _speak(SENTENCES[3], tmp)
    sf.write(audio / "limited.wav", np.clip(loud / np.abs(loud).max() * 2.0, -0.5, 0.5) / 0.5 * 0.89, SR)
    (audio / "voice_memo.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    (audio / "empty.wav").write_bytes(b"")
    broken = librosa.resample(_speak(SENTENCES[4], tmp), orig_sr=SR, target_sr=16000)
    broken[1000:1010] = np.nan  # a float WAV from a broken pipeline, at a rate that needs resampling
    sf.write(audio / "nan16k.wav", broken, 16000, subtype="FLOAT")
    sf.write(audio / "memo.mp3", _speak(SENTENCES[5], tmp), SR, format="MP3")
    phone = librosa.resample(_speak(SENTENCES[6], tmp), orig_sr=SR, target_sr=8000)
    sf.write(audio / "phone8k.wav", phone, 8000)
    mono = _speak(SENTENCES[2], tmp)
    stereo = librosa.resample(mono, orig_sr=SR, target_sr=48000)
    sf.write(audio / "sub" / "stereo48k.flac", np.stack([stereo, 0.7 * stereo], axis=1), 48000)
    for name in NOTE_FILES:
        (audio / name).write_text("a transcript\n")
    os.symlink("loop.wav", audio / "loop.wav")  # stat(): OSError [Errno 40]
    os.symlink("gone.wav", audio / "dangling.wav")
    sf.write(audio / "binary_text.wav", _speak(SENTENCES[7], tmp), SR)
    (audio / "binary_text.txt").write_bytes(b"\x9d\x00\xff not a transcript")
    sf.write(audio / "dc_offset.wav", _speak(SENTENCES[8], tmp) + 0.3, SR, subtype="PCM_16")
    sf.write(audio / "dc_only.wav", np.full(3 * SR, 0.3, np.float32), SR, subtype="PCM_16")  # a dead microphone
    limited_dc = np.clip(loud / np.abs(loud).max() * 2.0, -0.5, 0.5) / 0.5 * 0.8 + 0.1
    sf.write(audio / "limited_dc.wav", limited_dc, SR)

    before = _snapshot(audio)
    report = ingest(audio, cache, IngestConfig())
    return audio, cache, report, before


def _clips(report, name):
    return [c for c in report.clips if c.source.name == name]


def _reasons(report) -> dict[str, str]:
    return {p.name: r for p, r in report.skipped}


def test_normal_clip_kept_whole(run):
    audio, _, report, _ = run
    (clip,) = _clips(report, "normal.wav")
    assert clip.path == clip.source == audio / "normal.wav"
    assert clip.start == 0.0 and clip.duration == pytest.approx(sf.info(clip.path).duration, abs=1e-3)


def test_long_file_split_at_pauses(run):
    audio, cache, report, _ = run
    clips = _clips(report, "long.wav")
    assert len(clips) >= 3
    for c in clips:
        assert c.path.parent == cache / "segments" and re.fullmatch(r"[0-9a-f]{16}_\d+\.wav", c.path.name)
        info = sf.info(c.path)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "FLOAT")
        assert 2.0 <= c.duration <= 20.0 and info.frames == round(c.duration * SR)
    assert all(a.end <= b.start for a, b in zip(clips, clips[1:]))

    wav = load_audio(audio / "long.wav", SR)
    voiced = librosa.effects.split(wav, top_db=40) / SR
    covered = sum(max(0.0, min(e, c.end) - max(s, c.start)) for s, e in voiced for c in clips)
    assert covered / sum(e - s for s, e in voiced) >= 0.95


def test_bad_files_skipped_with_reasons(run, caplog):
    reasons = _reasons(run[2])
    assert reasons["corrupt.wav"].startswith("unreadable: ")
    assert reasons["silence.wav"] == "silent"
    assert re.fullmatch(r"too short \(0\.\d+ s of sound\)", reasons["short.wav"])
    assert re.fullmatch(r"clipped \(\d+\.\d% of samples at full scale\)", reasons["clipped.wav"])
    assert re.fullmatch(r"clipped \(\d+\.\d% of samples flat at the peak, 0\.89 of full scale.*", reasons["limited.wav"])
    assert reasons["voice_memo.m4a"].startswith("unsupported format (.m4a; read are .wav .flac .ogg")
    assert ".mp3" in reasons["voice_memo.m4a"] and "ffmpeg -i voice_memo.m4a voice_memo.wav" in reasons["voice_memo.m4a"]
    assert reasons["empty.wav"] == "empty (0 bytes)"
    assert reasons["nan16k.wav"] == "non-finite samples (NaN or infinity)"
    assert reasons["loop.wav"] == "symlink loop (loop.wav -> loop.wav never reaches a file): fix or delete the link"
    assert reasons["dangling.wav"] == "broken link (points to gone.wav, which does not exist): fix or delete the link"
    assert reasons["binary_text.wav"] == (f"unreadable transcript ({run[0] / 'binary_text.txt'} is not UTF-8 text "
                                          "(byte 0x9d at offset 0): save it as UTF-8, or delete it to have Whisper "
                                          "transcribe)")
    assert reasons["dc_only.wav"] == "silent (nothing but a DC offset of +0.30)"
    limited_dc = r"clipped \(\d+\.\d% of samples flat at the peak, 0\.80 of full scale.*"
    assert re.fullmatch(limited_dc, reasons["limited_dc.wav"])  # a DC offset does not hide a limiter
    assert len(reasons) == 13  # transcripts and notes are ignored, not skipped
    with caplog.at_level(logging.WARNING, logger="training.ingest"):
        ingest(run[0], run[1])
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"{name}: {reason}" in logged for name, reason in reasons.items())


def test_stereo_48k_accepted(run):
    (clip,) = _clips(run[2], "stereo48k.flac")
    assert clip.path == clip.source and clip.duration == pytest.approx(sf.info(clip.path).duration, abs=1e-3)


def test_mp3_is_read(run):
    (clip,) = _clips(run[2], "memo.mp3")
    assert clip.path == clip.source and 2.0 < clip.duration < 6.0


def test_narrow_band_kept_with_a_warning(run, tmp_path):
    audio, _, report, _ = run
    assert [c.source.name for c in report.clips if c.source.name == "phone8k.wav"] == ["phone8k.wav"]
    warned = {p.name: w for p, w in report.warnings}
    assert warned == {"phone8k.wav": "narrow-band (recorded at 8000 Hz: nothing above 4000 Hz)"}
    # the same telephone audio saved at 24 kHz is still narrow-band
    phone = load_audio(audio / "phone8k.wav", SR)
    folder = tmp_path / "a"
    folder.mkdir()
    sf.write(folder / "upsampled.wav", phone, SR)
    again = ingest(folder, tmp_path / "cache")
    assert len(again.clips) == 1 and "almost no sound above 4000 Hz" in again.warnings[0][1]
    assert "1 with warnings" in again.summary()


def test_summary_counts(run):
    report = run[2]
    counts = {"broken link": 1, "clipped": 3, "empty": 1, "non-finite samples": 1, "silent": 2, "symlink loop": 1,
              "too short": 1, "unreadable": 1, "unreadable transcript": 1, "unsupported format": 1}
    assert report.skip_counts() == counts
    sources = {c.source.name for c in report.clips}
    assert sources == {"normal.wav", "long.wav", "stereo48k.flac", "memo.mp3", "phone8k.wav", "dc_offset.wav"}
    summary = report.summary()
    assert summary.startswith(f"kept {len(report.clips)} clips from 6 files ({report.minutes:.1f} min)")
    assert all(f"{k}: {n}" in summary for k, n in counts.items()) and "skipped 13 files" in summary


def test_dc_offset_removed_and_the_clip_kept(run, tmp_path, caplog):
    """A DC offset is a fault of the microphone, not of the voice: the clip is used, centred, from a copy."""
    audio, cache, report, _ = run
    (clip,) = _clips(report, "dc_offset.wav")
    assert clip.whole and clip.path.parent == cache / "segments" and clip.start == 0.0
    original = load_audio(audio / "dc_offset.wav", SR)
    centred = load_audio(clip.path, SR)
    assert abs(float(original.mean())) > 0.29 and abs(float(centred.mean())) < 1e-6
    np.testing.assert_allclose(centred, original - original.mean(dtype=np.float64), atol=1e-6)
    assert clip.duration == pytest.approx(len(original) / SR)

    folder = tmp_path / "a"
    folder.mkdir()
    shutil.copy(audio / "dc_offset.wav", folder)
    with caplog.at_level(logging.INFO, logger="training.ingest"):
        again = ingest(folder, tmp_path / "cache")
    assert [c.source.name for c in again.clips] == ["dc_offset.wav"] and not again.skipped and not again.warnings
    assert re.search(r"dc_offset\.wav: DC offset of \+0\.30\d .*removed", caplog.text)


def test_audio_dir_unchanged(run):
    audio, _, _, before = run
    assert _snapshot(audio) == before


def test_rerun_reuses_segments(run):
    audio, cache, report, before = run
    segments = [c.path for c in report.clips if c.path.parent == cache / "segments"]
    mtimes = {p: p.stat().st_mtime_ns for p in segments}
    again = ingest(audio, cache, IngestConfig())
    assert again.clips == report.clips and again.skipped == report.skipped
    assert {p: p.stat().st_mtime_ns for p in segments} == mtimes
    assert sorted((cache / "segments").iterdir()) == sorted(segments)  # no stray temporaries either
    assert _snapshot(audio) == before


def test_cache_inside_audio_dir_refused(run):
    with pytest.raises(ValueError, match="inside audio_dir"):
        ingest(run[0], run[0] / "cache")


def test_unbroken_stretch_cut_at_quietest_points():
    """A voiced stretch longer than max_seconds with no pause is cut where it is quietest."""
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(52 * SR)).astype(np.float32)
    dips = (12.0, 30.0, 41.0)
    for t in dips:  # 20 dB quieter: still voiced at top_db=40, but the best place to cut
        wav[int((t - 0.1) * SR) : int((t + 0.1) * SR)] *= 0.1
    spans = plan_segments(wav, IngestConfig())
    assert len(spans) == 4 and spans[0][0] == 0 and spans[-1][1] == len(wav)
    cuts = [e / SR for _, e in spans[:-1]]
    assert np.allclose(cuts, dips, atol=0.1) and all(e == s for (_, e), (s, _) in zip(spans, spans[1:]))
    assert all(2 * SR <= e - s <= 20 * SR for s, e in spans)


def test_byte_identical_copy_skipped_as_duplicate(run, tmp_path):
    """The same take dropped twice would count double in training."""
    audio = tmp_path / "audio_data"
    audio.mkdir()
    for name in ("a.wav", "b_copy.wav"):
        shutil.copyfile(run[0] / "normal.wav", audio / name)
    report = ingest(audio, tmp_path / "cache")
    assert [c.source.name for c in report.clips] == ["a.wav"]
    assert _reasons(report) == {"b_copy.wav": f"duplicate: same bytes as {audio / 'a.wav'}"}
    assert report.skip_counts() == {"duplicate": 1}
