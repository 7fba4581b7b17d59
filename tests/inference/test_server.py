"""The streaming server, run for real on loopback (tiny preset), driven by real HTTP and WebSocket clients."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from inference.client import stream_http, stream_ws
from inference.settings import PROJECT_ROOT

TOKEN_BYTES = 960 * 2  # one speech token of 16-bit audio
MAX_TOKENS = 16  # per sentence: the tiny preset rarely stops by itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "inference.server", "--model", "tiny", "--port", str(port),
                                 "--max-new-tokens", str(MAX_TOKENS), "--chunk-size", "8", "--max-chars", "400",
                                 "--prompt-tokens", "25"],  # 1 s of voice prompt per chunk: S3Gen ~2x cheaper
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def speech(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", json={"model": "tiny", **body}, timeout=300)


def test_health_and_voices(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["sample_rate"] == 24000
    assert httpx.get(f"{server}/v1/voices").json() == {"voices": ["default"]}


def test_pcm_and_wav_streams(server):
    pcm = speech(server, input="Hello there.", response_format="pcm", seed=1)
    assert pcm.status_code == 200 and pcm.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) > 0 and len(pcm.content) % TOKEN_BYTES == 0
    assert len(pcm.content) <= MAX_TOKENS * TOKEN_BYTES
    wav = speech(server, input="Hello there.", response_format="wav", seed=1)
    assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
    assert int.from_bytes(wav.content[24:28], "little") == 24000
    assert wav.content[44:] == pcm.content  # same seed, same audio, behind a header


def test_concurrent_clients_get_their_own_audio(server):
    alone = {seed: speech(server, input="Two at once.", seed=seed).content for seed in (5, 6)}
    assert alone[5] != alone[6]
    results = {}

    def fetch(seed):
        results[seed] = speech(server, input="Two at once.", seed=seed).content

    threads = [threading.Thread(target=fetch, args=(seed,)) for seed in (5, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == alone  # queued one after the other: nothing mixed


def test_bad_requests_get_4xx_and_the_server_goes_on(server):
    cases = [
        (dict(input="   "), 400, "empty"),
        (dict(input="x" * 401), 413, "at most 400"),
        (dict(input="Hi.", voice="nobody"), 404, "unknown voice"),
        (dict(input="Hi.", response_format="mp3"), 422, "response_format"),
        (dict(input="Hi.", temperature=-1), 422, "temperature"),
    ]
    for body, status, reason in cases:
        r = speech(server, **body)
        assert r.status_code == status and reason in r.text, (body, r.status_code, r.text)
    r = httpx.post(f"{server}/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert speech(server, input="Still here.", seed=2).status_code == 200


def test_client_that_disconnects_frees_its_work(server):
    before = httpx.get(f"{server}/health").json()
    # over 300 characters: two pieces, so work remains after the first piece's audio has been sent
    long_text = " ".join(f"Sentence number {i:02d} is here." for i in range(12))
    assert 300 < len(long_text) <= 400
    with httpx.stream("POST", f"{server}/v1/audio/speech", json={"input": long_text, "seed": 3}, timeout=300) as r:
        first = next(r.iter_bytes())
        assert len(first) > 0
    # the abandoned request is cancelled (not run to its end), and the next one is served
    deadline = time.time() + 30
    while httpx.get(f"{server}/health").json()["cancelled"] == before["cancelled"]:
        assert time.time() < deadline, "the abandoned request was never cancelled"
        time.sleep(0.2)
    assert httpx.get(f"{server}/health").json()["completed"] == before["completed"]
    assert speech(server, input="Next please.", seed=4).status_code == 200


def test_websocket_takes_text_as_it_comes(server):
    result = stream_ws(server, "Hello there. How are you today? Fine thanks.", seed=7)
    assert len(result.audio) > 0 and len(result.audio) % 960 == 0
    done = [e for e in result.events if e.get("type") == "done"]
    assert done and done[0]["chunks"] == sum(1 for e in result.events if e.get("type") == "chunk")
    assert result.time_to_first_audio is not None and result.time_to_first_audio <= result.total_seconds


def test_websocket_rejects_bad_messages(server):
    from websockets.sync.client import connect

    with connect(server.replace("http", "ws") + "/v1/audio/stream") as ws:
        ws.send(json.dumps({"type": "dance"}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["type"] == "error" and "unexpected message" in reply["detail"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_named_voice_upload(server, tmp_path):
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    ref = tmp_path / "alice.wav"
    subprocess.run([espeak, "-w", str(ref), "This is the voice of Alice, speaking clearly."], check=True)
    r = httpx.post(f"{server}/v1/voices", params={"name": "alice"}, content=ref.read_bytes(), timeout=120)
    assert r.status_code == 200, r.text
    assert "alice" in httpx.get(f"{server}/v1/voices").json()["voices"]
    bad = httpx.post(f"{server}/v1/voices", params={"name": "junk"}, content=b"not audio", timeout=60)
    assert bad.status_code == 400 and "cannot use" in bad.text
    default = speech(server, input="Same words.", seed=8).content
    alice = speech(server, input="Same words.", seed=8, voice="alice").content
    assert alice and alice != default


def test_client_command_writes_the_stream(server, tmp_path):
    out = tmp_path / "out.wav"
    done = subprocess.run([sys.executable, "-m", "inference.client", "--url", server, "--text", "Hello there.",
                           "--out", str(out), "--seed", "1"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "time to first audio" in (done.stdout + done.stderr).lower()
    audio, sr = sf.read(out, dtype="int16")
    assert sr == 24000
    direct = np.frombuffer(speech(server, input="Hello there.", seed=1).content, dtype="<i2")
    assert np.array_equal(audio, direct)
    result = stream_http(server, "Hello there.", seed=1, fmt="wav")
    assert np.array_equal(result.pcm, direct)
