"""Streaming encoders for the OpenAI speech API's `response_format`s, with optional speed change.

Why PyAV: one maintained library gives FFmpeg's encoders (LAME for MP3, libopus, FFmpeg's own AAC
and FLAC) and muxers, encodes incrementally frame by frame into any object with a `write` method,
and also offers FFmpeg's `atempo` filter for pitch-preserving speed changes. soundfile cannot
write AAC at all, and its MP3/Opus writers need a seekable file and whole-file semantics, which
rules them out for sending audio while it is still being synthesised.

WAV and raw PCM need no codec: they are written here directly, WAV with a streaming header whose
sizes say "unknown" (the usual convention for WAV over a pipe).
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction

import av
import numpy as np
import soundfile as sf

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # OpenAI's opus is Opus in an Ogg container
    "aac": "audio/aac",  # ADTS frames, playable as a plain stream
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
MIN_SPEED, MAX_SPEED = 0.25, 4.0

# response_format -> (FFmpeg container, encoder, bit rate or None for lossless, muxer options)
_CODECS: dict[str, tuple[str, str, int | None, dict[str, str]]] = {
    "mp3": ("mp3", "libmp3lame", 64000, {}),
    # The Ogg muxer holds a page until it spans 1 s by default; 100 ms pages keep the stream moving.
    "opus": ("ogg", "libopus", 48000, {"page_duration": "100000"}),
    "aac": ("adts", "aac", 64000, {}),
    "flac": ("flac", "flac", None, {}),
}
_UNKNOWN_SIZE = 0xFFFFFFFF


def _to_int16(audio: np.ndarray) -> np.ndarray:
    """Float samples to 16-bit little-endian PCM: clipped, scaled by 32767 and rounded; the one
    rule for pcm, wav and whole_wav (libsndfile's own would scale by 32768)."""
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


def _streaming_wav_header(sample_rate: int) -> bytes:
    """Mono 16-bit WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", _UNKNOWN_SIZE, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16,
        b"data", _UNKNOWN_SIZE,
    )  # fmt: skip


def _tempo_stages(speed: float) -> list[float]:
    """Split a speed into atempo factors within [0.5, 2]: beyond that one stage skips samples
    instead of blending them, so FFmpeg recommends chaining stages (0.25 = 0.5 * 0.5)."""
    stages = []
    while speed > 2.0:
        stages.append(2.0)
        speed /= 2.0
    while speed < 0.5:
        stages.append(0.5)
        speed /= 0.5
    return stages + [speed]


def _encoder_rate(codec: str, sample_rate: int) -> int:
    """The input rate if the encoder takes it, else the nearest rate above it that it does
    (PyAV's encoder then resamples on its own): libopus, for one, only takes 8/12/16/24/48 kHz."""
    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    return min((rate for rate in rates if rate > sample_rate), default=max(rates))


class _Sink:
    """Collects the muxer's writes. It has no seek/tell on purpose: FFmpeg then treats it as a
    pipe and never tries to rewrite bytes that have already been sent to the client."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def drain(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _Tempo:
    """A streaming atempo filter graph: it keeps its state across chunks and is flushed once."""

    def __init__(self, speed: float, sample_rate: int) -> None:
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(
            sample_rate=sample_rate, format="flt", layout="mono", time_base=Fraction(1, sample_rate)
        )
        stages = [self._graph.add("atempo", f"tempo={factor}") for factor in _tempo_stages(speed)]
        nodes = [source, *stages, self._graph.add("abuffersink")]
        for upstream, downstream in zip(nodes, nodes[1:]):  # not link_nodes: av 12 lacks it
            upstream.link_to(downstream)
        self._graph.configure()

    def process(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """Push a frame (None flushes) and return every frame the graph has ready."""
        self._graph.push(frame)
        frames = []
        while True:
            try:
                frames.append(self._graph.pull())
            except (BlockingIOError, EOFError):  # PyAV's EAGAIN / EOF errors subclass these
                return frames


class StreamEncoder:
    """Encodes float32 mono chunks into one `response_format` while they are produced, so the
    server can send audio before synthesis ends. Call `encode` per chunk, then `finish` once."""

    def __init__(self, fmt: str, sample_rate: int, speed: float = 1.0) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._tempo = _Tempo(speed, sample_rate) if speed != 1.0 else None
        self._samples_in = 0
        self._finished = False
        self._pending = _streaming_wav_header(sample_rate) if fmt == "wav" else b""
        self._sink: _Sink | None = None
        if fmt in _CODECS:
            container_format, codec, bit_rate, options = _CODECS[fmt]
            self._sink = _Sink()
            self._container = av.open(
                self._sink, mode="w", format=container_format, options=options
            )
            self._stream = self._container.add_stream(
                codec, rate=_encoder_rate(codec, sample_rate), layout="mono"
            )
            if bit_rate is not None:
                self._stream.codec_context.bit_rate = bit_rate
            # Open the encoder now: a bad setting fails here, not halfway through a response.
            self._container.start_encoding()

    def encode(self, audio: np.ndarray) -> bytes:
        """Feed one chunk (values in [-1, 1]); returns the bytes ready now, possibly b""."""
        if self._finished:
            raise RuntimeError("encode() called after finish()")
        samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if self._tempo is None:
            return self._emit([self._frame(samples)] if samples.size else [], flush=False)
        # atempo fills an output buffer sized by the input frame (n / speed) before releasing it,
        # so a long chunk would be held back whole: feed it in 20 ms blocks instead.
        block = max(self.sample_rate // 50, 1)
        frames = []
        for start in range(0, samples.size, block):
            frames += self._tempo.process(self._frame(samples[start : start + block]))
        return self._emit(frames, flush=False)

    def finish(self) -> bytes:
        """Flush the speed filter, the encoder and the container trailer; returns the last bytes."""
        if self._finished:
            return b""
        self._finished = True
        return self._emit(self._tempo.process(None) if self._tempo else [], flush=True)

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        """A PyAV frame for the next samples, timestamped by the count fed so far."""
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._samples_in
        self._samples_in += samples.size
        return frame

    def _emit(self, frames: list[av.AudioFrame], flush: bool) -> bytes:
        """Turn filtered frames into output bytes, plus whatever header was still pending."""
        pending, self._pending = self._pending, b""
        if self._sink is None:
            return pending + b"".join(_to_int16(frame.to_ndarray()).tobytes() for frame in frames)
        # The encoder regroups samples into its fixed frame size (LAME 576/1152, AAC 1024, ...);
        # encoding None drains it.
        for frame in [*frames, None] if flush else frames:
            self._container.mux(self._stream.encode(frame))
        if flush:
            self._container.close()
        return self._sink.drain()


def whole_wav(audio: np.ndarray, sample_rate: int, speed: float = 1.0) -> bytes:
    """A complete 16-bit WAV with true sizes, for clients that need a finished file at once; its samples are
    those the streamed `pcm` format gives (same speed change, same rounding)."""
    pcm = StreamEncoder("pcm", sample_rate, speed)
    samples = np.frombuffer(pcm.encode(audio) + pcm.finish(), dtype="<i2")
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
