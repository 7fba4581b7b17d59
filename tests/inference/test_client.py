"""`inference.client` against small stand-in servers started in the test (the real server is not needed):
a ThreadingHTTPServer writing chunked bodies by hand, and a websockets sync server speaking the stream protocol.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
from websockets.sync.server import serve

from inference import client
from inference.client import (ServerError, StreamInterrupted, count_underruns, main, split_words, stream_http,
                              stream_ws)
from inference.stream_quality import gapless_delay

SR = 24000
# 0.5 s of a 440 Hz sine, int16: what every stand-in streams.
SINE = np.round(0.6 * 32767 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR)).astype(np.int16)
PCM = SINE.astype("<i2").tobytes()
PIECE = 1001  # odd: every other piece splits a sample across two reads
CUT_AFTER = 4  # pieces sent before the "cut" path drops the connection
MODEL = "stand-in"


def wav_header(sample_rate: int = SR, channels: int = 1, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


# ------------------------------------------------------------------------------------------ HTTP stand-in


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "StandIn"

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/health":
            self._json(200, {"status": "ok", "model": MODEL, "sample_rate": SR})
        else:
            self._json(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.path != "/v1/audio/speech":
            return self._json(404, {"detail": "not found"})
        if body.get("model") != MODEL or body.get("stream") is not True or not isinstance(body.get("input"), str):
            return self._json(422, {"detail": [{"loc": ["body", "model"], "msg": "bad request"}]})
        if len(body["input"]) > 100:
            return self._json(413, {"detail": f"input is {len(body['input'])} characters; the limit is 100"})
        if body.get("voice", "default") not in ("default", "cut", "alice"):
            return self._json(404, {"detail": f"unknown voice {body['voice']!r}"})
        fmt = body.get("response_format")
        stream = (wav_header() if fmt == "wav" else b"") + PCM
        piece = 7 if fmt == "wav" else PIECE  # wav: the header itself arrives in pieces
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav" if fmt == "wav" else "audio/pcm")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pieces = [stream[i:i + piece] for i in range(0, len(stream), piece)]
        for i, data in enumerate(pieces):
            if body.get("voice") == "cut" and i == CUT_AFTER:
                # announce a full piece, send half of it, drop the connection: no terminating chunk
                self.wfile.write(b"%x\r\n%s" % (len(data), data[:len(data) // 2]))
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._chunk(data)
        self._chunk(b"")


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []


@pytest.fixture()
def http_url():
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


# -------------------------------------------------------------------------------------------- WS stand-in


@pytest.fixture()
def ws_url():
    received: list[list] = []

    def handler(ws):
        messages = []
        received.append(messages)
        while True:
            raw = ws.recv(timeout=5)
            assert isinstance(raw, str)
            messages.append(json.loads(raw))
            if messages[-1]["type"] == "end":
                break
        start = messages[0]
        assert start["type"] == "start" and all(m["type"] == "text" for m in messages[1:-1])
        voice = start.get("voice", "default")
        if voice == "missing":
            ws.send(json.dumps({"type": "error", "detail": "unknown voice 'missing'"}))
            return
        sizes = [2400, 4800, 4800]  # 0.1 + 0.2 + 0.2 s
        offsets = np.cumsum([0] + sizes)
        for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            if voice == "cut" and i == 2:
                return  # closes without "done"
            ws.send(SINE[a:b].astype("<i2").tobytes())
            ws.send(json.dumps({"type": "chunk", "index": i, "samples": int(b - a)}))
        ws.send(json.dumps({"type": "done"}))

    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.socket.getsockname()[1]}", received
        finally:
            server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------- tests


def test_http_pcm_odd_pieces_decode_exactly(http_url):
    url, server = http_url
    result = stream_http(url, "Hello there.", seed=7, temperature=None)
    assert np.array_equal(result.pcm, SINE)
    assert result.audio.dtype == np.float32
    assert np.array_equal(np.round(result.audio * 32768).astype(np.int16), SINE)
    assert result.sample_rate == SR and result.audio_seconds == pytest.approx(0.5)
    assert sum(n for _, n in result.arrivals) == len(SINE)
    assert result.chunks >= 1 and result.warnings == []
    assert 0 <= result.time_to_first_audio <= result.total_seconds
    assert result.underruns == 0  # everything arrives at once, far faster than real time
    request = server.requests[-1]
    assert request == {"model": MODEL, "input": "Hello there.", "response_format": "pcm", "stream": True, "seed": 7}


def test_http_wav_header_is_checked_and_stripped(http_url):
    url, server = http_url
    result = stream_http(url, "Hello.", voice="alice", fmt="wav", model=MODEL)
    assert np.array_equal(result.pcm, SINE)
    assert server.requests[-1]["voice"] == "alice" and server.requests[-1]["response_format"] == "wav"


def test_wav_header_validation():
    client.parse_wav_header(wav_header())
    with pytest.raises(client.ClientError, match="22050 Hz"):
        client.parse_wav_header(wav_header(sample_rate=22050))
    with pytest.raises(client.ClientError, match="2 channel"):
        client.parse_wav_header(wav_header(channels=2))
    with pytest.raises(client.ClientError, match="not a WAV"):
        client.parse_wav_header(b"RIFX" + wav_header()[4:])


def test_cli_http_writes_the_wav(http_url, tmp_path, capsys):
    url, server = http_url
    out = tmp_path / "out.wav"
    assert main(["--text", "Hello there.", "--out", str(out), "--url", url, "--seed", "3", "--format", "wav"]) == 0
    audio, sr = sf.read(out, dtype="int16")
    info = sf.info(out)
    assert sr == SR and info.channels == 1 and info.subtype == "PCM_16"
    assert np.array_equal(audio, SINE)
    printed = capsys.readouterr().out
    for label in ("time to first audio", "total time", "audio:", "real-time factor", "chunks", "underruns: "):
        assert label in printed
    assert "0.500 s (12000 samples" in printed
    assert server.requests[-1]["seed"] == 3


def test_cli_413_prints_detail_and_exits_2(http_url, tmp_path, capsys):
    url, _ = http_url
    out = tmp_path / "out.wav"
    assert main(["--text", "x" * 150, "--out", str(out), "--url", url]) == 2
    err = capsys.readouterr().err
    assert "413" in err and "input is 150 characters; the limit is 100" in err
    assert not out.exists()


def test_http_errors_carry_status_and_detail(http_url):
    url, _ = http_url
    with pytest.raises(ServerError) as e:
        stream_http(url, "Hi.", voice="bob")
    assert e.value.status == 404 and e.value.detail == "unknown voice 'bob'"
    with pytest.raises(ServerError) as e:
        stream_http(url, "Hi.", model="other")
    assert e.value.status == 422 and e.value.detail == "body.model: bad request"


def test_cut_http_stream_keeps_partial_audio(http_url, tmp_path, capsys):
    url, _ = http_url
    with pytest.raises(StreamInterrupted) as e:
        stream_http(url, "Hello.", voice="cut")
    partial = e.value.result.pcm
    assert CUT_AFTER * PIECE // 2 <= len(partial) < len(SINE)
    assert np.array_equal(partial, SINE[:len(partial)])

    out = tmp_path / "cut.wav"
    assert main(["--text", "Hello.", "--voice", "cut", "--out", str(out), "--url", url]) == 1
    assert "stream cut" in capsys.readouterr().err
    audio, _ = sf.read(out, dtype="int16")
    assert CUT_AFTER * PIECE // 2 <= len(audio) < len(SINE) and np.array_equal(audio, SINE[:len(audio)])


def test_connection_refused_exits_2(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--text", "Hi.", "--out", str(tmp_path / "x.wav"), "--url", url, "--model", "m"]) == 2
    assert "cannot connect" in capsys.readouterr().err
    assert main(["--text", "Hi.", "--out", str(tmp_path / "x.wav"), "--url", url, "--ws"]) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["--out", "x.wav"]) == 2  # no --text
    assert main(["--text", "Hi", "--ws", "--format", "wav"]) == 2
    assert main(["--text", "  "]) == 2
    capsys.readouterr()


def test_ws_sends_text_word_by_word_and_collects_audio(ws_url):
    url, received = ws_url
    text = "Streaming text arrives word by word, like an LLM."
    result = stream_ws(url, text, voice="alice", seed=5, word_delay=0.001)
    assert np.array_equal(result.pcm, SINE)
    assert result.chunks == 3 and [n for _, n in result.arrivals] == [2400, 4800, 4800]
    assert result.warnings == []
    assert [e["index"] for e in result.events if e["type"] == "chunk"] == [0, 1, 2]
    messages = received[-1]
    assert messages[0] == {"type": "start", "voice": "alice", "seed": 5}
    texts = [m["text"] for m in messages[1:-1]]
    assert len(texts) == len(text.split()) and "".join(texts) == text
    assert messages[-1] == {"type": "end"}


def test_cli_ws_writes_the_wav(ws_url, tmp_path, capsys):
    url, received = ws_url
    out = tmp_path / "ws.wav"
    assert main(["--text", "One two three.", "--out", str(out), "--url", url, "--ws"]) == 0
    audio, sr = sf.read(out, dtype="int16")
    assert sr == SR and np.array_equal(audio, SINE)
    assert received[-1][0] == {"type": "start"}  # no voice given: the server's default
    assert "chunks:              3" in capsys.readouterr().out


def test_ws_error_and_cut(ws_url, tmp_path, capsys):
    url, _ = ws_url
    with pytest.raises(ServerError, match="unknown voice 'missing'"):
        stream_ws(url, "Hi there.", voice="missing")
    with pytest.raises(StreamInterrupted) as e:
        stream_ws(url, "Hi there.", voice="cut")
    assert np.array_equal(e.value.result.pcm, SINE[:7200])
    out = tmp_path / "cut.wav"
    assert main(["--text", "Hi there.", "--voice", "cut", "--out", str(out), "--url", url, "--ws"]) == 1
    assert np.array_equal(sf.read(out, dtype="int16")[0], SINE[:7200])
    assert main(["--text", "Hi there.", "--voice", "missing", "--out", str(out), "--url", url, "--ws"]) == 2
    assert "unknown voice 'missing'" in capsys.readouterr().err


def test_play_without_sounddevice_continues(http_url, tmp_path, capsys, monkeypatch):
    url, _ = http_url
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails
    out = tmp_path / "out.wav"
    assert main(["--text", "Hi.", "--out", str(out), "--url", url, "--play"]) == 0
    assert "playback unavailable" in capsys.readouterr().err
    assert np.array_equal(sf.read(out, dtype="int16")[0], SINE)


def test_play_without_output_device_continues(http_url, tmp_path, capsys, monkeypatch):
    url, _ = http_url
    fake = types.ModuleType("sounddevice")

    def query_devices(kind=None):
        raise ValueError("No output device matching ''")

    fake.query_devices = query_devices
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert main(["--text", "Hi.", "--out", str(tmp_path / "o.wav"), "--url", url, "--play"]) == 0
    assert "playback unavailable: no audio output device" in capsys.readouterr().err


def test_play_feeds_the_output_stream(http_url, tmp_path, monkeypatch):
    url, _ = http_url
    played: list[np.ndarray] = []

    class FakeStream:
        latency = 0.01

        def __init__(self, samplerate, channels, dtype, callback):
            assert (samplerate, channels, dtype) == (SR, 1, "int16")
            self.callback, self.running = callback, False

        def start(self):
            self.running = True
            threading.Thread(target=self._run, daemon=True).start()

        def _run(self):
            while self.running:
                block = np.empty((1024, 1), np.int16)
                self.callback(block, 1024, None, None)
                played.append(block[:, 0].copy())
                time.sleep(0.001)

        def stop(self):
            self.running = False

        def close(self):
            pass

    fake = types.ModuleType("sounddevice")
    fake.query_devices = lambda kind=None: {"name": "fake"}
    fake.OutputStream = FakeStream
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert main(["--text", "Hi.", "--out", str(tmp_path / "o.wav"), "--url", url, "--play"]) == 0
    out = np.concatenate(played)
    assert np.array_equal(out[out != 0], SINE[SINE != 0])  # every sample played, in order (silence aside)


def test_split_words_roundtrip():
    for text in ("Hello there, world.", "  leading and trailing  ", "one", "a\nb\tc"):
        pieces = split_words(text)
        assert "".join(pieces) == text and len(pieces) == len(text.split())


def test_underruns_none_when_faster_than_real_time():
    # 0.1 s of audio every 0.05 s
    arrivals = [(0.05 * i, 2400) for i in range(20)]
    assert count_underruns(arrivals) == (0, 0.0)
    # exactly real time: each chunk lands as the previous one finishes
    assert count_underruns([(0.1 * i, 2400) for i in range(10)]) == (0, 0.0)
    assert count_underruns([]) == (0, 0.0)
    assert count_underruns([(0.3, 2400)]) == (0, 0.0)
    # how long after the first audio a player must wait to play these arrivals without a stall
    late = [(0.0, 2400), (0.5, 2400), (0.6, 24000), (3.0, 2400)]
    delay = gapless_delay(late)
    assert delay == pytest.approx(3.0 - 0.0 - 28800 / 24000) and count_underruns(late)[0] == 2
    assert gapless_delay([(0.1 * i, 2400) for i in range(10)]) == 0.0 and gapless_delay([]) == 0.0


def test_underruns_known_stall():
    # 0.2 s of audio at t=0, then nothing until t=0.7: the player runs dry at 0.2 and waits 0.5 s
    count, stall = count_underruns([(0.0, 4800), (0.7, 4800)])
    assert count == 1 and stall == pytest.approx(0.5)
    # after the stall playback resumes at 0.7, the second 0.2 s ends at 0.9; a chunk at 1.0 stalls 0.1 s more
    count, stall = count_underruns([(0.0, 4800), (0.7, 4800), (1.0, 2400)])
    assert count == 2 and stall == pytest.approx(0.6)
    # arrival times are relative: an offset changes nothing; empty reads are ignored
    assert count_underruns([(5.0, 4800), (5.1, 0), (5.7, 4800)])[0] == 1


def test_underruns_prebuffer():
    # buffering 0.5 s before starting absorbs the 0.5 s gap entirely
    arrivals = [(0.0, 4800), (0.1, 4800), (0.2, 2400), (0.7, 4800)]
    assert count_underruns(arrivals)[0] == 1
    assert count_underruns(arrivals, prebuffer_s=0.5) == (0, 0.0)
    # a prebuffer larger than the whole stream: playback starts at the last arrival, nothing stalls
    assert count_underruns([(0.0, 100), (1.0, 100)], prebuffer_s=10.0) == (0, 0.0)
    # other sample rate
    assert count_underruns([(0.0, 8000), (2.0, 8000)], sample_rate=16000)[1] == pytest.approx(1.5)
