"""Careless and hostile clients against a real `python -m inference.server` on loopback (its own process, so its
log and its memory are its own): each bad input gets its status (or WebSocket close code) and an error in OpenAI's
shape naming the problem, no traceback reaches the log, the server's peak memory grows by less than RSS_BOUND_MB
while it answers, and a valid request right after still gets audio. Then clients that leave on every response
path (their synthesis stops within a chunk), DNS rebinding, and SIGTERM with a stream running."""
from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server_process import launch, wait_ready

KEY = "sk-hostile-3b9e"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json", **AUTH}
MAX_TOKENS, CHUNK = 200, 8  # per sentence (8 s); a chunk is 8 tokens (0.32 s): much is left after the first
LEAVING_CHUNK = 4  # the chunk_size of the requests whose clients leave: their first audio comes soonest
LARGEST_CHUNK_SECONDS = 4 * LEAVING_CHUNK * 0.04  # chunks double from chunk_size tokens up to 4 x (StreamConfig)
TOKEN_BYTES = 960 * 2  # 16-bit audio of one speech token
ALLOWED_HOST = "tts.example.com"
RSS_BOUND_MB = 100  # a body or upload that were read or decoded whole would add hundreds of MB to gigabytes
ONE = "Hello there, this is one sentence."
SEVERAL = "First sentence is here. Second sentence follows it. Third one ends the text."


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The server as users start it (key from the environment), with a 1 MB upload limit, one allowed host name
    and a 2 s shutdown grace; yields (url, process, log)."""
    folder = tmp_path_factory.mktemp("hostile")
    log = folder / "server.log"
    url, proc = launch(log, "--voices", str(folder / "voices"), "--max-new-tokens", str(MAX_TOKENS),
                       "--chunk-size", str(CHUNK), "--prompt-tokens", "4", "--max-upload-mb", "1", "--allowed-hosts", ALLOWED_HOST,
                       "--shutdown-grace-seconds", "2", env={"CHATTERBOX_API_KEY": KEY})
    wait_ready(url, proc, log, AUTH)
    yield url, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def watched(hostile):
    """The server checked around one group of hostile inputs: each case measured by `Watched.case` (peak RSS
    within RSS_BOUND_MB while it is answered), no traceback logged during the group, and a valid request right
    after it still gets audio (one request per group: a first chunk costs seconds of S3Gen on this CPU)."""
    url, proc, log = hostile
    logged = log.stat().st_size
    yield Watched(url, proc.pid)
    assert "Traceback" not in log.read_text()[logged:], log.read_text()[logged:]
    assert len(first_audio(url, {"input": "Still here.", "seed": 1, "chunk_size": 4})) > 0


@dataclass
class Watched:
    url: str
    pid: int

    @contextmanager
    def case(self, subtests, name: str):
        """One hostile input as a subtest, its peak RSS measured from the kernel's high-water mark."""
        with subtests.test(name):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            rss = status_bytes(self.pid, "VmRSS")
            yield
            grown = status_bytes(self.pid, "VmHWM") - rss
            assert grown < RSS_BOUND_MB * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MB"


def first_audio(url: str, body: dict, size: int = 1) -> bytes:
    """The first `size` bytes of a streamed request's audio; then the client leaves (the whole would be 8 s of
    audio: a minute of S3Gen on this CPU) and its request is cancelled."""
    audio = b""
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={**body, "response_format": "pcm"}, headers=AUTH,
                      timeout=120) as r:
        assert r.status_code == 200, r.read()
        for part in r.iter_bytes():
            audio += part
            if len(audio) >= size:
                break
    return audio[:size]


def status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def assert_error(r: httpx.Response, status: int, fragment: str, param: str | None = "any") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert fragment in error["message"], error
    if param != "any":
        assert error["param"] == param, error


def post_speech(url: str, content: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", content=content, headers={**JSON, **(headers or {})}, timeout=60)


# ---------------------------------------------------------------------------------------------- malformed bodies

MALFORMED = {  # name: (body, extra headers, what the error says, its param)
    "not UTF-8": (b'{"input": "caf\xe9"}', {}, "not UTF-8 (byte 0xe9", None),
    "latin-1": ('{"input": "café"}'.encode("latin-1"), {"content-type": "application/json; charset=latin-1"},
                "declared as latin-1", None),
    "100,000 deep": (b"[" * 30_000 + b"]" * 30_000, {}, "nested too deeply", None),  # under the body limit
    "5,000 deep": (b'{"input": "Hi.", "x": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}", {},
                   "nested too deeply", None),
    "5001-digit seed": (b'{"input": "Hi.", "seed": ' + b"9" * 5001 + b"}", {}, "over 4300 digits", None),
    "lone surrogate": (b'{"input": "Hi \\ud800 there."}', {}, "lone surrogate", "input"),
    "boolean seed": (b'{"input": "Hi.", "seed": true}', {}, "valid integer", "seed"),
    "string boolean": (b'{"input": "Hi.", "stream": "false"}', {}, "valid boolean", "stream"),
    "array body": (b'["input", "Hi."]', {}, "must be a JSON object", None),
}


def test_malformed_bodies_are_400_before_any_work(watched, subtests):
    for name, (content, headers, fragment, param) in MALFORMED.items():
        with watched.case(subtests, name):
            assert_error(post_speech(watched.url, content, headers), 400, fragment, param)


def raw_exchange(url: str, head: bytes, parts, limit_s: float = 30) -> tuple[int, bytes, int]:
    """Send `head` then the body `parts` on a plain socket until the server answers; (status, reply, bytes of the
    body sent). An httpx upload would stop at the server's early answer with an error instead of reading it."""
    u = urlsplit(url)
    sent = 0
    with socket.create_connection((u.hostname, u.port), timeout=limit_s) as s:
        s.sendall(head)
        s.setblocking(False)
        reply = b""
        for part in parts:
            try:
                reply += s.recv(65536)
            except BlockingIOError:
                pass
            if reply:
                break
            try:
                s.setblocking(True)
                s.sendall(part)
                sent += len(part)
                s.setblocking(False)
            except (BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        try:
            while b"\r\n\r\n" not in reply or len(reply) < reply.index(b"\r\n\r\n") + 4 + 50:
                if not (data := s.recv(65536)):
                    break
                reply += data
        except (ConnectionResetError, socket.timeout):
            pass
    return int(reply.split(b" ", 2)[1]), reply, sent


def test_huge_bodies_are_refused_unread(watched, subtests):
    """400 MB announced by Content-Length, and 400 MB sent chunked without one: answered after at most the
    limit's worth, not read whole (which took the server from 2.3 to 3.4 GB)."""
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\n")
    with watched.case(subtests, "400 MB by Content-Length"):
        status, reply, sent = raw_exchange(watched.url, f"{head}Content-Length: 400000000\r\n\r\n".encode(),
                                           [b" " * 2**20] * 400)
        assert status == 413 and b"body_too_large" in reply and b"400.00 MB" in reply
        assert sent < 50 * 2**20, f"{sent / 2**20:.0f} MB went in before the answer"
    with watched.case(subtests, "400 MB chunked"):
        chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
        status, reply, sent = raw_exchange(watched.url, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(),
                                           [chunk] * 400)
        assert status == 413 and b"takes at most" in reply
        assert sent < 50 * 2**20, f"{sent / 2**20:.0f} MB went in before the answer"


def flac_bomb(hide_length: bool = False) -> bytes:
    """70 s of 8-channel 96 kHz silence: 54 KB of FLAC, 215 MB as float32 samples. `hide_length` zeroes the
    header's sample count (allowed: "unknown"), so only decoding can tell the length."""
    out = io.BytesIO()
    with sf.SoundFile(out, "w", samplerate=96_000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((960_000, 8), np.int16)
        for _ in range(7):
            f.write(block)
    data = bytearray(out.getvalue())
    if hide_length:  # STREAMINFO's 36-bit total: the low 4 bits of byte 21 and bytes 22-25 of the file
        data[21] &= 0xF0
        data[22:26] = bytes(4)
    return bytes(data)


def wav_bytes(rate: int, seconds: float = 2.0) -> bytes:
    out = io.BytesIO()
    t = np.arange(int(rate * seconds)) / max(rate, 1)
    sf.write(out, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def upload(url: str, name: str, data: bytes, kind: str = "audio/wav") -> httpx.Response:
    return httpx.post(f"{url}/v1/voices", data={"name": name}, files={"file": ("clip", data, kind)}, headers=AUTH,
                      timeout=120)


BAD_UPLOADS = {  # what: (voice name, clip maker, status, what the error says, its param)
    "70 s FLAC of 8 x 96 kHz": ("bomb", flac_bomb, 400, "70 s long", "file"),
    "the same, length unsaid": ("bomb", lambda: flac_bomb(hide_length=True), 400, "longer than 60 s", "file"),
    "1 Hz header": ("onehz", lambda: wav_bytes(1, 3000), 400, "header says 1 Hz", "file"),
    "not audio": ("junk", lambda: b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, 400, "not audio this server reads", "file"),
    "OpenAI's name": ("alloy", lambda: wav_bytes(16_000), 409, "OpenAI voice name", "name"),
    "case clash": ("Default", lambda: wav_bytes(16_000), 409, "only in case", "name"),
    "trailing newline": ("anna\n", lambda: wav_bytes(16_000), 400, "a voice name is", "name"),
    "default and newline": ("default\n", lambda: wav_bytes(16_000), 400, "a voice name is", "name"),
}


def test_bad_uploads_are_refused_before_decoding_whole(watched, subtests):
    for what, (name, make, status, fragment, param) in BAD_UPLOADS.items():
        with watched.case(subtests, what):
            r = upload(watched.url, name, make(), "audio/flac" if name == "bomb" else "audio/wav")
            assert_error(r, status, fragment, param)
            assert " at 0x" not in r.text, "a libsndfile message leaked a heap address"
            listed = httpx.get(f"{watched.url}/v1/voices", headers=AUTH).json()["voices"]
            assert listed == ["default"], listed


# ---------------------------------------------------------------------------------------------- control tokens


def test_user_text_cannot_inject_control_tokens(hostile):
    """Typed control tokens are dropped: the same seed gives the same audio as the text without them (with a
    [STOP] read as one, T3 would see other text and sample other tokens)."""
    url, _, log = hostile
    size = CHUNK * TOKEN_BYTES
    plain = first_audio(url, {"input": "Hello world.", "seed": 5}, size)
    assert first_audio(url, {"input": "Hello there.", "seed": 5}, size) != plain  # the chunk tells texts apart
    injected = first_audio(url, {"input": "[START]Hello [stop] world.[STOP]", "seed": 5}, size)
    assert injected == plain
    assert "removed from the text: [START] [STOP] [stop]" in log.read_text()
    only = httpx.post(f"{url}/v1/audio/speech", json={"input": "[STOP]"}, headers=AUTH, timeout=60)
    assert_error(only, 400, "nothing but control tokens", "input")


# ---------------------------------------------------------------------------------------------- small things


def test_head_health_and_docs_behind_the_key(hostile):
    url, _, _ = hostile
    head = httpx.head(f"{url}/health", headers=AUTH)
    assert head.status_code == 200 and head.content == b""
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(url + path).status_code == 401, path
        assert httpx.get(url + path, headers=AUTH).status_code == 200, path


# ---------------------------------------------------------------------------------------------- DNS rebinding


@pytest.mark.parametrize("host, allowed", [
    ("evil.example", False), ("sub.tts.example.com", False), ("127.0.0.1", True), ("localhost", True),
    ("[::1]", True), (ALLOWED_HOST, True),
])
def test_only_expected_host_names_are_answered(hostile, host, allowed):
    """A page on evil.example re-pointed at 127.0.0.1 sends `Host: evil.example:P` and a matching Origin: it must
    get nothing, whatever it asks; addresses, localhost and `--allowed-hosts` names are served."""
    url, _, _ = hostile
    port = urlsplit(url).port
    headers = {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}", **AUTH}
    listed = httpx.get(f"{url}/v1/voices", headers=headers)
    with httpx.stream("POST", f"{url}/v1/audio/speech", headers=headers, timeout=120,
                      json={"input": "Hi.", "response_format": "pcm", "seed": 1}) as spoken:
        if spoken.status_code != 200:  # served: leave at once (the request is cancelled)
            spoken.read()
    uploaded = httpx.post(f"{url}/v1/voices", headers=headers, data={"name": "rebound"},
                          files={"file": ("clip.wav", wav_bytes(16_000), "audio/wav")}, timeout=120)
    answers = [listed, spoken, uploaded]
    if allowed:
        assert (listed.status_code, spoken.status_code) == (200, 200) and uploaded.status_code != 403, uploaded.text
        assert websocket_handshake(url, host) == 101
        return
    for r in answers:
        assert_error(r, 403, f"host {host!r}", None)
    assert websocket_handshake(url, host) == 403


def websocket_handshake(url: str, host: str) -> int:
    """The status a WebSocket handshake addressed to `host` gets (websockets' client cannot set its own Host)."""
    port = urlsplit(url).port
    request = (f"GET /v1/audio/stream HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: http://{host}:{port}\r\n"
               f"Authorization: Bearer {KEY}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request.encode())
        return int(s.recv(4096).split(b" ", 2)[1])


# ---------------------------------------------------------------------------------------------- WebSocket


def ws_connect(url: str):
    return connect(url.replace("http", "ws") + "/v1/audio/stream", additional_headers=AUTH, max_size=None)


BAD_MESSAGES = {  # what: (message, what the error says)
    "5001-digit seed": ('{"type": "start", "seed": ' + "9" * 5001 + "}", "over 4300 digits"),
    "30,000 deep": ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
    "boolean seed": ('{"type": "start", "seed": true}', "valid integer"),
    "lone surrogate": ('{"type": "text", "text": "Hi \\ud800."}', "lone surrogate"),
    "cut short": ('{"type": "text", "text": "Hi."', "not JSON"),
    "an array": ("[1, 2]", "must be a JSON object"),
}


def test_websocket_malformed_messages_close_1008(watched, subtests):
    for what, (message, fragment) in BAD_MESSAGES.items():
        with watched.case(subtests, what), ws_connect(watched.url) as ws:
            ws.send(message)
            reply = json.loads(ws.recv(timeout=30))
            assert reply["type"] == "error" and fragment in reply["detail"], reply
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd.code == 1008
    with watched.case(subtests, "200 KB message"), ws_connect(watched.url) as ws:
        ws.send(json.dumps({"type": "text", "text": "x" * 200_000}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1009  # message too big: refused by the protocol layer, unread


# ---------------------------------------------------------------------------------------------- clients that leave


def idle(url: str) -> dict:
    """/health once no request is in flight (those of earlier tests' clients that left end within a chunk)."""
    deadline = time.time() + 60
    while (now := health(url))["streams"]:
        assert time.time() < deadline, now
        time.sleep(0.05)
    return now


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", headers=AUTH).json()


def wait_cancelled(url: str, before: dict, left_at: dict) -> dict:
    """/health once the abandoned request is cancelled: never completed, and at most one chunk of audio made
    after the client left (the one in progress then)."""
    deadline = time.time() + 30
    while (now := health(url))["cancelled"] == before["cancelled"] or now["streams"]:
        assert time.time() < deadline, f"the abandoned request was never cancelled: {now}"
        time.sleep(0.1)
    assert now["cancelled"] == before["cancelled"] + 1 and now["completed"] == before["completed"], now
    after = now["audio_seconds"] - left_at["audio_seconds"]
    assert after <= LARGEST_CHUNK_SECONDS + 1e-6, f"{after:.2f} s of audio made after the client left"
    time.sleep(0.5)
    assert health(url)["tokens_decoded"] == now["tokens_decoded"], "T3 went on decoding for nobody"
    return now


def wait_for_audio(url: str, before: dict) -> None:
    deadline = time.time() + 60
    while health(url)["audio_seconds"] == before["audio_seconds"]:
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("text", [ONE, SEVERAL], ids=["one-sentence", "several"])
@pytest.mark.parametrize("path", ["stream", "sse", "whole-file", "websocket"])
def test_a_client_that_leaves_stops_its_synthesis(hostile, path, text):
    """Each case is itself a valid request that gets audio (the next one shows the server still serves)."""
    url, _, log = hostile
    logged = log.stat().st_size
    before = idle(url)
    body = {"input": text, "response_format": "pcm", "seed": 3, "chunk_size": LEAVING_CHUNK}
    if path == "websocket":
        with ws_connect(url) as ws:
            ws.send(json.dumps({"type": "start", "seed": 3, "chunk_size": LEAVING_CHUNK}))
            ws.send(json.dumps({"type": "text", "text": text}))
            ws.send(json.dumps({"type": "end"}))
            assert isinstance(ws.recv(timeout=120), bytes)
            left_at = health(url)
    elif path == "whole-file":  # nothing arrives before the end: leave once the server has made some audio
        u = urlsplit(url)
        payload = json.dumps({**body, "stream": False}).encode()
        with socket.create_connection((u.hostname, u.port)) as s:
            s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode()
                      + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
            wait_for_audio(url, before)
            left_at = health(url)
    else:
        with httpx.stream("POST", f"{url}/v1/audio/speech", headers=AUTH, timeout=120,
                          json={**body, "stream_format": "sse"} if path == "sse" else body) as r:
            assert r.status_code == 200
            first = next(r.iter_lines()) if path == "sse" else next(r.iter_bytes())
            assert first
            left_at = health(url)
    wait_cancelled(url, before, left_at)
    assert "Traceback" not in log.read_text()[logged:]


# ---------------------------------------------------------------------------------------------- SIGTERM (last)


def test_sigterm_cancels_streams_after_the_grace_period(hostile):
    url, proc, log = hostile
    long_text = " ".join(f"Sentence number {i} is here." for i in range(10))  # ~16 s of audio at 40 tokens each
    received, outcome = [], {}

    def listen():
        try:
            with httpx.stream("POST", f"{url}/v1/audio/speech", headers=AUTH, timeout=120,
                              json={"input": long_text, "response_format": "pcm", "seed": 2}) as r:
                for part in r.iter_bytes():
                    received.append(part)
            outcome["ended"] = "complete"
        except httpx.HTTPError as e:
            outcome["ended"] = type(e).__name__

    client = threading.Thread(target=listen)
    client.start()
    while not received:
        assert client.is_alive(), outcome
        time.sleep(0.05)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    took = time.perf_counter() - sent
    client.join(timeout=30)
    assert 1.5 < took < 15, f"the server took {took:.1f} s to stop with a 2 s grace period"
    assert outcome["ended"] != "complete", "a cut stream must not look complete"
    assert sum(map(len, received)) < 12 * 24_000 * 2, "the stream ran to its end"
    text = log.read_text()
    assert "timeout graceful shutdown exceeded" in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
