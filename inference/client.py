"""Client of the streaming TTS server: stream speech over HTTP or WebSocket, save it, report latency and underruns.

    python -m inference.client --text "Hello there." --out out.wav [--url http://127.0.0.1:8000]
        [--voice NAME] [--format pcm|wav] [--ws] [--play] [--seed N] [--temperature T] [--cfg-weight W]
        [--exaggeration E] [--min-p P] [--top-p P] [--top-k K] [--repetition-penalty R] [--chunk-size N]
        [--model NAME] [--timeout S] [--word-delay S] [--prebuffer S]

Sampling options left out take the server's model family's defaults; the server refuses one its family does not
use (--cfg-weight, --exaggeration, --min-p on Turbo/Nano; --top-k on English/multilingual).

HTTP mode streams `POST /v1/audio/speech` (`response_format` pcm: raw s16le 24 kHz mono; wav: a 44-byte header
with unknown sizes, then the same PCM). WebSocket mode (`--ws`) opens `/v1/audio/stream`, sends a `start`
message, the text word by word in `text` messages (as an LLM would produce it; `--word-delay` paces them), then
`end`, and reads binary PCM messages until `{"type": "done"}`.

Printed: time to first audio (request sent -> first audio byte; the WebSocket connection is opened after the
clock starts, the HTTP connection too), total time, audio duration, real-time factor (total time / audio
duration: below 1 is faster than real time), chunks (network reads that carried audio over HTTP, binary messages
over WebSocket) and underruns of a simulated player that starts at the first audio byte (`count_underruns`).

Exit status: 0 success; 1 the stream was cut (what arrived is saved); 2 usage error, connection failure or an
error reported by the server.

The library side (`stream_http`, `stream_ws`, `count_underruns`, `StreamResult`) needs only numpy, httpx and
websockets; it does not import torch.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .models.rates import S3GEN_SR as SAMPLE_RATE  # a module that imports nothing (no torch here)
from .stream_quality import count_underruns

WAV_HEADER_BYTES = 44
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0  # seconds without a byte from the server before giving up (the first chunk can be slow)
SPEECH_PATH = "/v1/audio/speech"
WS_PATH = "/v1/audio/stream"
HEALTH_PATH = "/health"
SAMPLING_FIELDS = ("seed", "temperature", "cfg_weight", "exaggeration", "min_p", "top_p", "top_k", "repetition_penalty",
                   "chunk_size")

AudioCallback = Callable[[np.ndarray], None]  # receives each complete run of int16 samples as it arrives


# --------------------------------------------------------------------------------------------------- results


@dataclass
class StreamResult:
    """What one streamed synthesis delivered, and when.

    `audio` is float32 in [-1, 1) (`pcm / 32768`, exact); `pcm` the int16 samples as received. Times are seconds
    from the moment the request was sent; `arrivals` lists (arrival time, samples completed by that read).
    """

    audio: np.ndarray
    sample_rate: int
    time_to_first_audio: float | None
    total_seconds: float
    chunks: int
    arrivals: list[tuple[float, int]]
    underruns: int
    stall_seconds: float
    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    warnings: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # WebSocket JSON messages other than audio (chunk, done)

    @property
    def samples(self) -> int:
        return int(len(self.pcm))

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def real_time_factor(self) -> float | None:
        """Total time / audio duration (below 1: produced faster than it plays); None without audio."""
        return self.total_seconds / self.audio_seconds if self.samples else None


class ClientError(Exception):
    """The synthesis could not be done: bad arguments, no connection, a malformed response."""

    exit_code = 2


class ConnectionFailed(ClientError):
    """The server could not be reached (refused, unknown host, timed out while connecting)."""


class ServerError(ClientError):
    """The server answered with an error (a non-2xx status, or a WebSocket `error` message)."""

    def __init__(self, status: int | None, detail: str, result: StreamResult | None = None):
        self.status, self.detail, self.result = status, detail, result
        where = f"server error {status}" if status is not None else "server error"
        super().__init__(f"{where}: {detail}")


class StreamInterrupted(ClientError):
    """The audio stream stopped before its end; `result` holds what arrived."""

    exit_code = 1

    def __init__(self, reason: str, result: StreamResult):
        self.reason, self.result = reason, result
        super().__init__(f"stream cut after {result.audio_seconds:.3f} s of audio: {reason}")


# -------------------------------------------------------------------------------------------- stream parsing


class _Collector:
    """Turns the byte stream into int16 samples (keeping an odd byte for the next read) and timestamps it."""

    def __init__(self, on_audio: AudioCallback | None = None, sample_rate: int = SAMPLE_RATE):
        self.on_audio, self.sample_rate = on_audio, sample_rate
        self.t0 = time.perf_counter()
        self.end: float | None = None
        self.first: float | None = None
        self.pending = b""
        self.parts: list[np.ndarray] = []
        self.arrivals: list[tuple[float, int]] = []
        self.chunks = 0
        self.warnings: list[str] = []
        self.events: list[dict] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def feed(self, data: bytes) -> None:
        if not data:
            return
        now = time.perf_counter() - self.t0
        if self.first is None:
            self.first = now
        self.chunks += 1
        data = self.pending + data
        whole = len(data) - len(data) % 2
        self.pending = data[whole:]
        if whole:
            pcm = np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)
            self.parts.append(pcm)
            self.arrivals.append((now, int(len(pcm))))
            if self.on_audio is not None:
                try:
                    self.on_audio(pcm)
                except Exception as e:  # a failing consumer (player) must not lose the stream
                    self.warnings.append(f"audio callback failed: {e!r}; it is no longer called")
                    self.on_audio = None

    def finish(self) -> None:
        if self.end is None:
            self.end = time.perf_counter() - self.t0

    def result(self, prebuffer_s: float = 0.0) -> StreamResult:
        self.finish()
        warnings = list(self.warnings)
        if self.pending:
            warnings.append("the stream ended with half a sample (an odd number of PCM bytes); dropped it")
        pcm = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int16)
        underruns, stalled = count_underruns(self.arrivals, self.sample_rate, prebuffer_s)
        return StreamResult(audio=pcm.astype(np.float32) / 32768.0, sample_rate=self.sample_rate,
                            time_to_first_audio=self.first, total_seconds=self.end, chunks=self.chunks,
                            arrivals=list(self.arrivals), underruns=underruns, stall_seconds=stalled, pcm=pcm,
                            warnings=warnings, events=list(self.events))


def parse_wav_header(header: bytes, sample_rate: int = SAMPLE_RATE) -> None:
    """Check a canonical 44-byte streaming WAV header: RIFF/WAVE, PCM, mono, 16-bit, `sample_rate`.

    The RIFF and data sizes are not checked (a stream writes 0xFFFFFFFF: length unknown). Raises ClientError.
    """
    if len(header) < WAV_HEADER_BYTES:
        raise ClientError(f"WAV header too short ({len(header)} bytes)")
    riff, _, wave, fmt_id, fmt_size = struct.unpack_from("<4sI4s4sI", header, 0)
    fmt_tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", header, 20)
    data_id = header[36:40]
    if riff != b"RIFF" or wave != b"WAVE":
        raise ClientError(f"not a WAV stream (starts with {header[:12]!r})")
    if fmt_id != b"fmt " or fmt_size != 16 or data_id != b"data":
        raise ClientError("unsupported WAV layout (expected the 44-byte header: 'fmt ' of 16 bytes, then 'data')")
    if fmt_tag != 1 or channels != 1 or bits != 16 or rate != sample_rate:
        raise ClientError(f"unsupported WAV format: tag {fmt_tag}, {channels} channel(s), {bits}-bit, {rate} Hz "
                          f"(expected PCM mono 16-bit {sample_rate} Hz)")


class _WavStripper:
    """Holds back the first 44 bytes of a WAV stream, checks them, and passes the rest through."""

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        self.sample_rate = sample_rate
        self.header = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return data
        self.header += data
        if len(self.header) < WAV_HEADER_BYTES:
            return b""
        rest = self.header[WAV_HEADER_BYTES:]
        self.header = self.header[:WAV_HEADER_BYTES]
        parse_wav_header(self.header, self.sample_rate)
        self.done = True
        return rest


# ------------------------------------------------------------------------------------------------- URLs etc.


def _base_url(url: str, websocket: bool) -> str:
    """`url` without a trailing slash, scheme switched to ws(s) or http(s) as needed."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url.rstrip("/"))
    scheme = parts.scheme.lower()
    secure = scheme in ("https", "wss")
    if scheme not in ("http", "https", "ws", "wss"):
        raise ClientError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def _sampling(options: dict) -> dict:
    unknown = set(options) - set(SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; sampling fields are {list(SAMPLING_FIELDS)}")
    return {k: v for k, v in options.items() if v is not None}


def _auth(api_key: str | None) -> dict:
    """The server's API key as a header: `api_key`, else the CHATTERBOX_API_KEY environment variable."""
    key = api_key if api_key is not None else os.environ.get("CHATTERBOX_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _detail(body: bytes) -> str:
    """The message of a JSON error body (OpenAI's {"error": {"message"}}, FastAPI's `detail`), else its text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message"))
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, list):  # [{"loc": [...], "msg": "...", ...}, ...]
        items = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()))
                items.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                items.append(str(item))
        return "; ".join(items)
    return detail if isinstance(detail, str) else json.dumps(detail)


def split_words(text: str) -> list[str]:
    """Pieces that concatenate back to `text`: each word with the whitespace after it (leading space kept)."""
    pieces = re.findall(r"\s*\S+\s*", text)
    return pieces or ([text] if text else [])


# ------------------------------------------------------------------------------------------------------ HTTP


def _server_model(client, base: str) -> str:
    """The model name the server reports on /health."""
    import httpx

    try:
        response = client.get(base + HEALTH_PATH)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise ConnectionFailed(f"cannot connect to {base}: {e}") from e
    except httpx.TransportError as e:
        raise ClientError(f"GET {HEALTH_PATH} failed: {e}") from e
    if not response.is_success:
        raise ServerError(response.status_code, f"not ready ({HEALTH_PATH}): {_detail(response.content)}")
    try:
        model = response.json().get("model")
    except (ValueError, AttributeError):
        model = None
    if not isinstance(model, str) or not model:
        raise ClientError(f"{HEALTH_PATH} did not name a model; pass model=...")
    return model


def stream_http(url: str, text: str, voice: str | None = None, fmt: str = "pcm", *, model: str | None = None,
                timeout: float = DEFAULT_TIMEOUT, on_audio: AudioCallback | None = None, prebuffer_s: float = 0.0,
                api_key: str | None = None, **options) -> StreamResult:
    """Synthesise `text` with `POST {url}/v1/audio/speech` (stream: true), reading the body as it arrives.

    `fmt` is the response_format ("pcm" or "wav"; the WAV header is checked and stripped). `model` defaults to
    the one /health reports. `options` are the sampling fields (SAMPLING_FIELDS: seed, temperature, cfg_weight,
    exaggeration, min_p, top_p, top_k, repetition_penalty, chunk_size; None values are not sent). `on_audio` gets
    each run of int16 samples as it arrives.
    Raises ConnectionFailed, ServerError (non-2xx, with the server's `detail`), StreamInterrupted (the body
    stopped early; `.result` holds the audio so far) or ClientError.
    """
    import httpx

    if fmt not in ("pcm", "wav"):
        raise ValueError(f"fmt must be 'pcm' or 'wav', got {fmt!r}")
    base = _base_url(url, websocket=False)
    payload: dict = {"model": model, "input": text, "response_format": fmt, "stream": True}
    if voice is not None:
        payload["voice"] = voice
    payload.update(_sampling(options))
    collector = _Collector(on_audio)
    wav = _WavStripper() if fmt == "wav" else None
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                      headers=_auth(api_key)) as client, ExitStack() as stack:
        if model is None:
            payload["model"] = _server_model(client, base)
        collector.start()
        try:
            response = stack.enter_context(client.stream("POST", base + SPEECH_PATH, json=payload))
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise ConnectionFailed(f"cannot connect to {base}: {e}") from e
        except httpx.TransportError as e:
            raise ClientError(f"POST {SPEECH_PATH} failed before a response: {e!r}") from e
        if not response.is_success:
            try:
                body = response.read()
            except httpx.TransportError:
                body = b""
            raise ServerError(response.status_code, _detail(body))
        try:
            for data in response.iter_bytes():
                if wav is not None:
                    data = wav.feed(data)
                collector.feed(data)
        except httpx.TransportError as e:  # peer closed mid-body (incomplete chunked read), read timeout, reset
            collector.finish()
            raise StreamInterrupted(str(e) or type(e).__name__, collector.result(prebuffer_s)) from e
        collector.finish()
        if wav is not None and not wav.done:
            raise StreamInterrupted(f"the body ended inside the WAV header ({len(wav.header)} of "
                                    f"{WAV_HEADER_BYTES} bytes)", collector.result(prebuffer_s))
    return collector.result(prebuffer_s)


# ------------------------------------------------------------------------------------------------- WebSocket


def _send_messages(ws, messages: list[dict], word_delay: float, stop: threading.Event) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        for i, message in enumerate(messages):
            if stop.is_set():
                return
            if word_delay > 0 and 1 < i < len(messages) - 1:  # pace the text messages, not start / end
                if stop.wait(word_delay):
                    return
            ws.send(json.dumps(message))
    except (ConnectionClosed, OSError):
        pass  # the receiving side reports why the connection ended


def stream_ws(url: str, text: str, voice: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
              word_delay: float = 0.0, on_audio: AudioCallback | None = None, prebuffer_s: float = 0.0,
              api_key: str | None = None, **options) -> StreamResult:
    """Synthesise `text` over the WebSocket `{url}/v1/audio/stream`, sending it word by word.

    Sends `{"type": "start", "voice": ..., sampling fields}`, one `{"type": "text"}` message per word (with
    its trailing whitespace, `word_delay` seconds apart, from a separate thread so audio is read meanwhile), then
    `{"type": "end"}`; collects binary PCM messages until `{"type": "done"}`. `url` may be http(s) or ws(s).
    Raises ConnectionFailed, ServerError (handshake refused, or an `error` message: `.result` holds the audio
    so far), StreamInterrupted (closed or silent for `timeout` s before `done`) or ClientError.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.sync.client import connect

    uri = _base_url(url, websocket=True) + WS_PATH
    start: dict = {"type": "start"}
    if voice is not None:
        start["voice"] = voice
    start.update(_sampling(options))
    messages = [start] + [{"type": "text", "text": w} for w in split_words(text)] + [{"type": "end"}]
    collector = _Collector(on_audio)
    collector.start()
    try:
        ws = connect(uri, open_timeout=min(timeout, 10.0), close_timeout=2.0, max_size=2**26, compression=None,
                     additional_headers=_auth(api_key))
    except InvalidStatus as e:
        response = e.response
        raise ServerError(response.status_code, _detail(response.body or b"") or response.reason_phrase) from e
    except InvalidURI as e:
        raise ClientError(f"invalid WebSocket URL {uri!r}: {e}") from e
    except (OSError, TimeoutError) as e:
        raise ConnectionFailed(f"cannot connect to {uri}: {e}") from e
    except InvalidHandshake as e:
        raise ClientError(f"WebSocket handshake with {uri} failed: {e}") from e
    stop = threading.Event()
    sender = threading.Thread(target=_send_messages, args=(ws, messages, word_delay, stop), daemon=True,
                              name="tts-client-sender")
    chunk_samples = 0
    with ws:
        sender.start()
        try:
            while True:
                try:
                    message = ws.recv(timeout=timeout)
                except TimeoutError:
                    collector.finish()
                    raise StreamInterrupted(f"nothing received for {timeout:g} s", collector.result(prebuffer_s))
                except ConnectionClosed as e:
                    collector.finish()
                    raise StreamInterrupted(f"connection closed before 'done' ({e})",
                                            collector.result(prebuffer_s)) from e
                if isinstance(message, bytes):
                    collector.feed(message)
                    continue
                try:
                    event = json.loads(message)
                except ValueError:
                    collector.warnings.append(f"ignored a text message that is not JSON: {message[:80]!r}")
                    continue
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "done":
                    collector.events.append(event)
                    collector.finish()
                    break
                if kind == "error":
                    collector.finish()
                    detail = event.get("detail")
                    raise ServerError(None, detail if isinstance(detail, str) else json.dumps(detail),
                                      collector.result(prebuffer_s))
                if kind == "chunk":
                    collector.events.append(event)
                    if isinstance(event.get("samples"), int):
                        chunk_samples += event["samples"]
                else:
                    collector.warnings.append(f"ignored an unknown message: {message[:80]!r}")
        finally:
            stop.set()
            sender.join(timeout=2.0)
    result = collector.result(prebuffer_s)
    if any(e.get("type") == "chunk" for e in result.events) and chunk_samples != result.samples:
        result.warnings.append(f"'chunk' messages announce {chunk_samples} samples but {result.samples} arrived")
    return result


# -------------------------------------------------------------------------------------------------- playback


class PlaybackUnavailable(Exception):
    pass


class Player:
    """Plays int16 mono samples through sounddevice as they are fed, without blocking the feeder.

    Raises PlaybackUnavailable when sounddevice (or PortAudio) is missing or there is no output device.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE):
        try:
            import sounddevice as sd
        except Exception as e:  # ImportError, or OSError when the PortAudio library is missing
            raise PlaybackUnavailable(f"sounddevice is not available ({e})") from e
        try:
            sd.query_devices(kind="output")
        except Exception as e:
            raise PlaybackUnavailable(f"no audio output device ({e})") from e
        self.sample_rate = sample_rate
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self.samples_played = 0
        self.underflows = 0
        self._started = False
        try:
            self._stream = sd.OutputStream(samplerate=sample_rate, channels=1, dtype="int16",
                                           callback=self._callback)
            self._stream.start()
        except Exception as e:
            raise PlaybackUnavailable(f"cannot open the audio output ({e})") from e

    def _callback(self, outdata, frames, time_info, status) -> None:
        want = frames * 2
        with self._lock:
            take = bytes(self._buffer[:want])
            del self._buffer[:want]
        got = len(take) // 2
        out = outdata.reshape(-1)
        out[:got] = np.frombuffer(take, dtype="<i2")
        out[got:] = 0
        self.samples_played += got
        if self._started and got < frames:
            self.underflows += 1
        self._started = self._started or got > 0

    def feed(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._buffer += np.asarray(pcm, dtype="<i2").tobytes()

    def buffered_seconds(self) -> float:
        with self._lock:
            return len(self._buffer) / 2 / self.sample_rate

    def close(self, drain: bool = True) -> None:
        """Wait (at most the buffered duration + 2 s) until everything fed was played, then stop."""
        if drain:
            deadline = time.monotonic() + self.buffered_seconds() + 2.0
            while self.buffered_seconds() > 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(min(0.5, float(getattr(self._stream, "latency", 0.0) or 0.0)))
        try:
            self._stream.stop()
            self._stream.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.client",
                                description="Stream speech from the TTS server, save it as a WAV file and report "
                                            "latency, real-time factor and underruns.")
    p.add_argument("--text", required=True, help="text to synthesise")
    p.add_argument("--out", default="out.wav", help="WAV file to write (24 kHz 16-bit mono; default out.wav)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})")
    p.add_argument("--voice", help="voice name (server default when omitted)")
    p.add_argument("--format", choices=("pcm", "wav"), default=None,
                   help="HTTP response_format (default pcm; the WebSocket always streams PCM)")
    p.add_argument("--ws", action="store_true", help="use the WebSocket endpoint, sending the text word by word")
    p.add_argument("--play", action="store_true", help="play the audio while it streams (needs sounddevice)")
    p.add_argument("--seed", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--cfg-weight", type=float)
    p.add_argument("--exaggeration", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int, help="Turbo/Nano only")
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--chunk-size", type=int, help="speech tokens per chunk (25 = 1 s of audio)")
    p.add_argument("--model", help="model field of the HTTP request (default: what /health reports)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for data before giving up (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--word-delay", type=float, default=0.0,
                   help="WebSocket: seconds between text messages, to mimic an LLM (default 0)")
    p.add_argument("--prebuffer", type=float, default=0.0,
                   help="seconds of audio the simulated player buffers before starting (default 0)")
    return p


def _report(result: StreamResult, out) -> None:
    ttfa = f"{result.time_to_first_audio:.3f} s" if result.time_to_first_audio is not None else "n/a (no audio)"
    rtf = result.real_time_factor
    rtf_text = f"{rtf:.3f} (total time / audio duration; below 1 is faster than real time)" if rtf else "n/a"
    print(f"time to first audio: {ttfa}", file=out)
    print(f"total time:          {result.total_seconds:.3f} s", file=out)
    print(f"audio:               {result.audio_seconds:.3f} s ({result.samples} samples at "
          f"{result.sample_rate} Hz)", file=out)
    print(f"real-time factor:    {rtf_text}", file=out)
    print(f"chunks:              {result.chunks}", file=out)
    print(f"underruns:           {result.underruns} ({result.stall_seconds:.3f} s stalled)", file=out)


def _save(result: StreamResult, path: str) -> None:
    import soundfile as sf

    sf.write(path, result.pcm, result.sample_rate, subtype="PCM_16")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage error (2) or --help (0)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not args.text.strip():
        parser.print_usage(sys.stderr)
        print("error: --text is empty", file=sys.stderr)
        return 2
    if args.ws and args.format is not None:
        parser.print_usage(sys.stderr)
        print("error: --format applies to HTTP only; the WebSocket streams PCM", file=sys.stderr)
        return 2
    options = {name: getattr(args, name) for name in SAMPLING_FIELDS}

    player = None
    if args.play:
        try:
            player = Player(SAMPLE_RATE)
        except PlaybackUnavailable as e:
            print(f"playback unavailable: {e}; continuing without it", file=sys.stderr)
    on_audio = player.feed if player is not None else None

    result, code = None, 0
    try:
        if args.ws:
            result = stream_ws(args.url, args.text, args.voice, timeout=args.timeout, word_delay=args.word_delay,
                               on_audio=on_audio, prebuffer_s=args.prebuffer, **options)
        else:
            result = stream_http(args.url, args.text, args.voice, args.format or "pcm", model=args.model,
                                 timeout=args.timeout, on_audio=on_audio, prebuffer_s=args.prebuffer, **options)
    except StreamInterrupted as e:
        print(f"warning: {e}; saving what was received", file=sys.stderr)
        result, code = e.result, 1
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        result, code = e.result, 2
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    finally:
        if player is not None:
            player.close(drain=result is not None and result.samples > 0)

    if result is None:
        return code
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _report(result, sys.stdout)
    if result.samples or code == 0:
        try:
            _save(result, args.out)
        except Exception as e:
            print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}", file=sys.stdout)
    else:
        print(f"no audio received; {args.out} not written", file=sys.stderr)
    if player is not None and player.underflows:
        print(f"playback: {player.underflows} output underflow(s)", file=sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
