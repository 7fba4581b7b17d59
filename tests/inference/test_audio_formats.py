"""Streaming encoders for the speech API formats: real FFmpeg encoding, decoded back, measured."""

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf

from inference.server.audio_formats import CONTENT_TYPES, FORMATS, StreamEncoder, whole_wav

RATE = 24000
TONE_HZ = 220.0
CHUNKS = (700, 5000, 13, 24000)  # irregular sizes, none a codec frame size; the rest comes last
# Lossy codecs add encoder delay and pad the last frame (ADTS and piped MP3 cannot signal it).
DURATION_TOLERANCE_S = {"mp3": 0.1, "aac": 0.1, "opus": 0.1, "flac": 0.0, "wav": 0.0, "pcm": 0.0}


def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(0).normal(0.0, 0.01, t.size)
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * t) + noise).astype(np.float32)


def _stream(fmt: str, audio: np.ndarray, speed: float = 1.0) -> tuple[list[bytes], bytes]:
    """Feed `audio` in CHUNKS; returns what each encode() call gave and what finish() gave."""
    encoder = StreamEncoder(fmt, RATE, speed=speed)
    bounds = np.cumsum(CHUNKS)
    parts = [encoder.encode(chunk) for chunk in np.split(audio, bounds)]
    return parts, encoder.finish()


def _decode(fmt: str, data: bytes) -> tuple[np.ndarray, int]:
    """Mono float samples and their rate, decoded independently of the encoder."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2") / 32768.0, RATE
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    if samples.dtype.kind == "i":
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    return samples, frames[0].sample_rate


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum)) * rate / samples.size


@pytest.mark.parametrize("fmt", FORMATS)
def test_streams_and_decodes_to_the_same_tone(fmt):
    audio = _tone()
    parts, tail = _stream(fmt, audio)
    data = b"".join(parts) + tail
    # Streaming: by 1.24 s of input (the first four chunks) a good share of the output has gone out.
    assert sum(map(len, parts[:4])) > 0.4 * len(data)
    assert sum(map(len, parts)) > 0.8 * len(data)

    samples, rate = _decode(fmt, data)
    assert samples.size / rate == pytest.approx(2.0, abs=DURATION_TOLERANCE_S[fmt] + 1e-9)
    assert _dominant_hz(samples, rate) == pytest.approx(TONE_HZ, abs=5.0)
    assert np.sqrt(np.mean(samples**2)) > 0.3  # the tone's level (0.35 RMS), not a faint leftover


def test_streamed_wav_header_marks_sizes_unknown_and_still_reads():
    audio = _tone()
    parts, tail = _stream("wav", audio)
    data = b"".join(parts) + tail
    assert parts[0][:4] == b"RIFF" and len(parts[0]) == 44 + 2 * CHUNKS[0]  # header goes first
    riff, riff_size, wave, fmt_id, *fmt_chunk = struct.unpack("<4sI4s4sIHHIIHH", data[:36])
    assert (riff, wave, fmt_id, riff_size) == (b"RIFF", b"WAVE", b"fmt ", 0xFFFFFFFF)
    assert fmt_chunk == [16, 1, 1, RATE, 2 * RATE, 2, 16]  # size, PCM, mono, rate, byte rate...
    assert struct.unpack("<4sI", data[36:44]) == (b"data", 0xFFFFFFFF)
    expected = np.rint(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    assert np.array_equal(np.frombuffer(data[44:], dtype="<i2"), expected)
    decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="int16")
    assert decoded_rate == RATE and np.array_equal(decoded, expected)


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_double_speed_halves_duration_and_keeps_pitch(fmt):
    parts, tail = _stream(fmt, _tone(), speed=2.0)
    assert sum(map(len, parts)) > 0.8 * (sum(map(len, parts)) + len(tail))  # atempo streams too
    samples, rate = _decode(fmt, b"".join(parts) + tail)
    assert samples.size / rate == pytest.approx(1.0, abs=DURATION_TOLERANCE_S[fmt] + 0.02)
    assert _dominant_hz(samples, rate) == pytest.approx(TONE_HZ, abs=5.0)


def test_quarter_speed_chains_tempo_stages():
    parts, tail = _stream("wav", _tone(), speed=0.25)
    assert sum(map(len, parts)) > 0.8 * (sum(map(len, parts)) + len(tail))
    samples, rate = _decode("wav", b"".join(parts) + tail)
    # atempo drops a few ms at its flush, doubled by the second 0.5 stage (7.95 s measured).
    assert samples.size / rate == pytest.approx(8.0, abs=0.1)
    assert _dominant_hz(samples, rate) == pytest.approx(TONE_HZ, abs=5.0)


@pytest.mark.parametrize("speed", [5.0, 0.2, float("nan")])
def test_speed_outside_range_is_refused(speed):
    with pytest.raises(ValueError, match="0.25 and 4.0"):
        StreamEncoder("mp3", RATE, speed=speed)


def test_unknown_format_and_encode_after_finish_are_refused():
    with pytest.raises(ValueError, match="ogg"):
        StreamEncoder("ogg", RATE)
    encoder = StreamEncoder("pcm", RATE)
    assert encoder.encode(np.zeros(0, dtype=np.float32)) == b""
    encoder.finish()
    assert encoder.finish() == b""
    with pytest.raises(RuntimeError):
        encoder.encode(np.zeros(10, dtype=np.float32))


def test_every_format_has_a_content_type():
    assert set(CONTENT_TYPES) == set(FORMATS)
    assert CONTENT_TYPES["opus"] == "audio/ogg" and CONTENT_TYPES["mp3"] == "audio/mpeg"


def test_whole_wav_has_true_sizes_and_round_trips():
    audio = _tone(0.5)
    audio[:3] = [1.5, -1.5, 0.25]  # out of range values clip instead of wrapping
    data = whole_wav(audio, RATE)
    riff, riff_size, wave = struct.unpack("<4sI4s", data[:12])
    assert (riff, wave, riff_size) == (b"RIFF", b"WAVE", len(data) - 8)
    data_at = data.index(b"data")
    assert struct.unpack("<I", data[data_at + 4 : data_at + 8])[0] == 2 * audio.size
    decoded, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE
    assert np.array_equal(decoded, np.rint(np.clip(audio, -1, 1) * 32767).astype(np.int16))
