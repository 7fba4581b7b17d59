"""The speech server, run for real on loopback (tiny preset), driven as users drive it: the official `openai` SDK,
raw HTTP, many concurrent clients, the WebSocket, a browser page of another origin. The logic behind the endpoints
is tested in-process, without a server, in test_server_app.py and test_sentences.py."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from inference.client import stream_http, stream_ws
from inference.server import ServerConfig
from inference.server.app import create_app
from inference.server.engine import Engine
from inference.server.voices import VoiceStore
from inference.settings import PROJECT_ROOT
from server_process import MAX_TOKENS, launch, wait_ready

TOKEN_BYTES = 960 * 2  # one speech token of 16-bit audio
KEY = "sk-test-7d1f0c5e"
ALLOWED = "http://app.example"


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def guarded_process(tmp_path_factory, voices_dir):
    """A locked-down server, run as users run it (command line, key from the environment): one allowed web origin,
    one request at a time and no waiting line (T3 in bfloat16). It shares the first server's voices folder, as
    replicas behind a load balancer would. Launched before that server, so it loads while the first tests run."""
    log = tmp_path_factory.mktemp("guarded") / "server.log"
    url, proc = launch(log, "--voices", str(voices_dir), "--cors-origins", ALLOWED, "--max-batch", "1",
                       "--max-queue", "0", "--t3-dtype", "bfloat16", env={"CHATTERBOX_API_KEY": KEY})
    yield url, proc, log
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def guarded(guarded_process):
    url, proc, log = guarded_process
    wait_ready(url, proc, log, {"Authorization": f"Bearer {KEY}"})
    return url, log


@pytest.fixture(scope="module")
def served(guarded_process, english, voices_dir):
    """The app on a real uvicorn server in this process, over the session's tiny model (built once for the whole
    test run); the model is left as it was found."""
    saved = dict(vars(english))
    cfg = ServerConfig(voices=str(voices_dir), max_upload_mb=1, max_batch=8, max_new_tokens=MAX_TOKENS,
                       chunk_size=16, max_chars=400, prompt_tokens=25)
    cfg.openai_voices.nova = "nova-voice"
    english.setup_model()
    voices = VoiceStore(english, cfg.voices, cfg.allow_voice_overwrite)
    voices.load_folder()
    app = create_app(Engine(english, cfg.max_batch, cfg.max_queue), voices, cfg)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", os.getpid()
    server.should_exit = True
    thread.join(timeout=30)
    listener.close()
    vars(english).clear()
    vars(english).update(saved)


@pytest.fixture(scope="module")
def server(served):
    return served[0]


def speech(url: str, headers: dict | None = None, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", json={"model": "tiny", **body}, timeout=300, headers=headers)


def pcm_of(url: str, **body) -> bytes:
    r = speech(url, response_format="pcm", **body)
    assert r.status_code == 200, r.text
    return r.content


TEXT, SEED = "Hello there.", 1  # most tests ask for this and compare with its audio, fetched once


@pytest.fixture(scope="module")
def reference_pcm(server) -> bytes:
    return pcm_of(server, input=TEXT, seed=SEED)


def decoded_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return samples / container.streams.audio[0].rate


def openai_client(url: str, key: str = "unused"):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


# ---------------------------------------------------------------------------------------------- OpenAI's API


def test_health_models_voices(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["sample_rate"] == 24000 and health["max_batch"] == 8
    assert health["family"] == "english"
    models = openai_client(server).models.list().data
    assert "tts-1" in [m.id for m in models] and {m.family for m in models} == {"english"}
    listed = httpx.get(f"{server}/v1/voices").json()
    assert listed["voices"] == ["default"]
    assert listed["openai_voices"]["alloy"] == "default" and listed["openai_voices"]["nova"] == "nova-voice"


def test_openai_sdk_quickstart_writes_a_real_mp3(server, reference_pcm, tmp_path):
    out = tmp_path / "speech.mp3"
    client = openai_client(server)
    client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input=TEXT,
                               extra_body={"seed": SEED}).write_to_file(out)
    expected = len(reference_pcm) / 2 / 24000
    with av.open(str(out)) as container:
        assert container.format.name == "mp3"
    assert abs(decoded_seconds(out.read_bytes()) - expected) < 0.1


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_response_format_streams_and_decodes(server, reference_pcm, fmt):
    client = openai_client(server)
    expected = len(reference_pcm) / 2 / 24000
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format=fmt, extra_body={"seed": SEED}) as response:
        assert response.headers["content-type"] == {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                                                    "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}[fmt]
        parts = list(response.iter_bytes())
    data = b"".join(parts)
    seconds = len(data) / 2 / 24000 if fmt == "pcm" else decoded_seconds(data)
    assert abs(seconds - expected) < 0.1, (fmt, seconds, expected)
    if fmt == "pcm":
        assert data == reference_pcm


def test_sse_stream_format(server, reference_pcm):
    body = dict(input=TEXT, seed=SEED, response_format="pcm", stream_format="sse")
    with httpx.stream("POST", f"{server}/v1/audio/speech", json=body, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done" and set(kinds[:-1]) == {"speech.audio.delta"}
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == reference_pcm
    usage = events[-1]["usage"]
    assert usage["output_tokens"] == len(audio) // TOKEN_BYTES and usage["input_tokens"] > 0


def test_speed_changes_duration(server, reference_pcm):
    """(That the pitch stays is tested on a sine in test_audio_formats.py.)"""
    normal = np.frombuffer(reference_pcm, "<i2")
    fast = np.frombuffer(pcm_of(server, input=TEXT, seed=SEED, speed=2.0), "<i2")
    assert abs(len(fast) / len(normal) - 0.5) < 0.06
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        openai_client(server).audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=5.0)
    assert "speed" in str(e.value) and e.value.body["param"] == "speed"


def test_whole_wav_carries_true_sizes(server, reference_pcm):
    r = speech(server, input=TEXT, seed=SEED, response_format="wav", stream=False)
    data = r.content
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    assert int(r.headers["content-length"]) == len(data)
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24000 and audio.tobytes() == reference_pcm


# ---------------------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("body, status, param, reason", [
    (dict(input="   "), 400, "input", "empty"),
    (dict(input="x" * 401), 413, "input", "at most 400"),
    (dict(input="Hi.", voice="nobody"), 404, "voice", "unknown voice"),
    (dict(input="Hi.", seed=2**70), 400, "seed", "less than or equal"),
    (dict(input="Hi.", language_id="fr"), 400, "language_id", "cannot speak"),
    (dict(input="Hi.", cfg_weight=1e300), 400, "cfg_weight", "less than or equal"),
    (dict(input="Hi.", top_k=50), 400, "top_k", "top_k=50 does not apply to the english model"),
    (dict(input="Hi.", top_p="abc"), 400, "top_p", "valid number"),
    (dict(input="Hi.", repetition_penalty=0.5), 400, "repetition_penalty", "greater than or equal"),
    (dict(input="Hi.", response_format="ogg"), 400, "response_format", "mp3"),
    (dict(input="Hi.", volume=3), 400, "volume", "not permitted"),
])
def test_bad_requests_are_refused_before_any_audio(server, body, status, param, reason):
    r = speech(server, **body)
    error = r.json()["error"]
    assert r.status_code == status and error["param"] == param and reason in error["message"], r.text


def test_malformed_bodies(server):
    nan = httpx.post(f"{server}/v1/audio/speech", content=b'{"input": "Hi.", "temperature": NaN}',
                     headers={"content-type": "application/json"})
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "temperature"
    broken = httpx.post(f"{server}/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]["message"]
    plain = httpx.post(f"{server}/v1/audio/speech", content=b'{"input": "Hi."}', headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        openai_client(server).audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert "unknown voice 'nobody'" in str(e.value)
    assert httpx.get(f"{server}/health").json()["failed"] == 0


# ---------------------------------------------------------------------------------------------- many clients


def server_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def timed_stream(url: str, body: dict, start: threading.Event | None = None) -> tuple[float, list[float], bytes]:
    """(request time, arrival time of every piece of audio, the audio) of one streamed pcm request."""
    if start is not None:
        start.wait()
    sent, arrivals, parts = time.perf_counter(), [], []
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={"response_format": "pcm", **body}, timeout=300) as r:
        assert r.status_code == 200, r.read()
        for part in r.iter_bytes():
            arrivals.append(time.perf_counter())
            parts.append(part)
    return sent, arrivals, b"".join(parts)


def test_twelve_concurrent_clients(served, reference_pcm):
    """12 clients at once (8 decode together, 4 wait): each gets exactly the audio it gets alone, no thread is
    held per waiting request, and a client's stream is not held up by the requests waiting behind it."""
    url, pid = served
    go = threading.Event()
    with ThreadPoolExecutor(12) as pool:  # client SEED sends the reference request, the others their own
        futures = {seed: pool.submit(timed_stream, url, {"input": TEXT if seed == SEED else f"Client {seed}.",
                                                         "seed": seed}, go) for seed in range(12)}
        threads_idle = server_threads(pid)  # the server's threads, and the 12 clients' waiting for `go`
        go.set()
        peak = threads_idle
        while not all(f.done() for f in futures.values()):
            peak = max(peak, server_threads(pid))
            time.sleep(0.05)
        results = {seed: f.result() for seed, f in futures.items()}
    assert peak <= threads_idle + 1, f"threads grew from {threads_idle} to {peak} with requests waiting"
    assert results[SEED][2] == reference_pcm, "a client got other audio than alone"
    assert len({r[2] for r in results.values()}) == 12
    start = min(r[0] for r in results.values())
    wall = max(r[1][-1] for r in results.values()) - start
    for seed, (_, arrivals, _) in results.items():
        gaps = np.diff(arrivals)
        assert len(gaps) == 0 or gaps.max() < 0.5 * wall, (seed, gaps.max(), wall)
    stats = httpx.get(f"{url}/health").json()
    assert stats["tokens_decoded"] / stats["batch_steps"] > 1.5, "requests were not decoded together"


def test_new_request_gets_audio_while_others_stream(server):
    long_text = " ".join(f"Sentence number {i:02d} is here." for i in range(12))  # two pieces of 16 tokens
    with ThreadPoolExecutor(4) as pool:
        long_ones = [pool.submit(timed_stream, server, {"input": long_text, "seed": s}) for s in (1, 2)]
        deadline = time.time() + 60
        while httpx.get(f"{server}/health").json()["streams"] < 2:
            assert time.time() < deadline and not any(f.done() for f in long_ones)
            time.sleep(0.05)
        sent, arrivals, _ = pool.submit(timed_stream, server, {"input": "Me too.", "seed": 4}).result()
        finished = [f.result()[1][-1] for f in long_ones]
    assert arrivals[0] < min(finished), "the new request's first audio waited for the streams before it to end"


def test_client_that_disconnects_frees_its_work(server):
    before = httpx.get(f"{server}/health").json()
    long_text = " ".join(f"Sentence number {i:02d} is here." for i in range(12))
    body = {"input": long_text, "seed": 3, "response_format": "pcm", "chunk_size": 4}  # much left to do after
    with httpx.stream("POST", f"{server}/v1/audio/speech", json=body, timeout=300) as r:  # the first chunk
        assert len(next(r.iter_bytes())) > 0
    deadline = time.time() + 30
    while httpx.get(f"{server}/health").json()["cancelled"] == before["cancelled"]:
        assert time.time() < deadline, "the abandoned request was never cancelled"
        time.sleep(0.2)
    assert httpx.get(f"{server}/health").json()["completed"] == before["completed"]


# ---------------------------------------------------------------------------------------------- WebSocket


def test_websocket_takes_text_as_it_comes(server):
    result = stream_ws(server, "Hello there. How are you?", seed=7)
    assert len(result.audio) > 0 and len(result.audio) % 960 == 0
    done = [e for e in result.events if e.get("type") == "done"]
    assert done and done[0]["chunks"] == sum(1 for e in result.events if e.get("type") == "chunk")


@pytest.mark.parametrize("message, reason", [
    (b"\x00\x01binary", "binary frames"),
    ({"type": "dance"}, "unexpected message"),
    ({"type": "start", "voice": "default", "colour": "blue"}, "colour"),
    ({"type": "start", "top_p": "abc"}, "top_p"),
    ({"type": "start", "voice": "../etc"}, "voice"),
    ({"type": "start", "voice": "nobody"}, "unknown voice"),
])
def test_websocket_bad_messages_get_an_error_and_1008(server, message, reason):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(server.replace("http", "ws") + "/v1/audio/stream") as ws:
        ws.send(message if isinstance(message, bytes) else json.dumps(message))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["type"] == "error" and reason in reply["detail"], reply
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1008
    assert httpx.get(f"{server}/health").status_code == 200


# ---------------------------------------------------------------------------------------------- voices


def espeak_clip(path: Path, text: str) -> Path:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    subprocess.run([espeak, "-w", str(path), text], check=True)
    return path


def upload(url: str, name: str, data: bytes, kind: str = "audio/wav", headers: dict | None = None):
    return httpx.post(f"{url}/v1/voices", data={"name": name}, files={"file": ("clip.wav", data, kind)},
                      timeout=120, headers=headers)


def test_voice_upload(server, reference_pcm, voices_dir, tmp_path):
    clip = espeak_clip(tmp_path / "alice.wav", "This is the voice of Alice, speaking clearly.").read_bytes()
    r = upload(server, "alice", clip)
    assert r.status_code == 201, r.text
    assert (voices_dir / "alice.flac").is_file(), "uploaded voices are kept in the voices folder"
    assert "alice" in httpx.get(f"{server}/v1/voices").json()["voices"]
    assert pcm_of(server, input=TEXT, seed=SEED, voice="alice") != reference_pcm
    refused = {
        "default": upload(server, "default", clip),  # the built-in voice
        "again": upload(server, "alice", clip),  # no overwriting unless configured
        "dots": upload(server, "..", clip),
        "not audio": upload(server, "junk", b"not audio at all"),
        "text type": upload(server, "junk", clip, kind="text/plain"),
        "too big": upload(server, "big", clip + bytes(1_100_000)),
        "raw body": httpx.post(f"{server}/v1/voices", params={"name": "raw"}, content=clip),
    }
    statuses = {k: r.status_code for k, r in refused.items()}
    assert statuses == {"default": 409, "again": 409, "dots": 400, "not audio": 400, "text type": 415,
                        "too big": 413, "raw body": 415}, statuses
    for r in refused.values():
        assert "/tmp" not in r.text and str(voices_dir) not in r.text, r.text
    assert sorted(p.name for p in voices_dir.iterdir()) == ["alice.flac"]


# ---------------------------------------------------------------------------------------------- a guarded server


def test_api_key_on_every_endpoint(guarded):
    url, log = guarded
    assert httpx.get(f"{url}/health").status_code == 401
    assert httpx.get(f"{url}/v1/voices", headers={"Authorization": "Bearer wrong"}).status_code == 401
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai_client(url, "wrong").audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    out = openai_client(url, KEY).audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="wav")
    assert out.content[:4] == b"RIFF"
    # the voice uploaded to the other server is here too: voices live in the shared folder
    assert "alice" in httpx.get(f"{url}/v1/voices", headers={"Authorization": f"Bearer {KEY}"}).json()["voices"]
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as e:
        connect(url.replace("http", "ws") + "/v1/audio/stream")
    assert e.value.response.status_code == 403
    result = stream_ws(url, "Hello.", seed=1, api_key=KEY)
    assert len(result.audio) > 0
    assert KEY not in log.read_text(), "the API key was written to the log"


def test_other_web_origins_are_refused(guarded):
    url, _ = guarded
    auth = {"Authorization": f"Bearer {KEY}"}
    # a "simple" request, which browsers send without a preflight: refused before it runs
    for path in ("/v1/audio/speech", "/v1/voices?name=evil"):
        r = httpx.post(url + path, content=b'{"input": "Hi."}',
                       headers={**auth, "Origin": "http://evil.example", "Content-Type": "text/plain"})
        assert r.status_code == 403 and "origin" in r.json()["error"]["message"]
    preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(f"{url}/v1/audio/speech", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED
    foreign = httpx.options(f"{url}/v1/audio/speech", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers
    allowed = speech(url, {**auth, "Origin": ALLOWED}, input="Hi.", response_format="pcm", seed=1)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus):
        connect(url.replace("http", "ws") + "/v1/audio/stream", origin="http://evil.example",
                additional_headers=auth)


def test_full_server_answers_503_with_retry_after(guarded):
    url, _ = guarded
    auth = {"Authorization": f"Bearer {KEY}"}
    long_text = " ".join(f"Sentence number {i:02d} is here." for i in range(12))
    with httpx.stream("POST", f"{url}/v1/audio/speech", json={"input": long_text, "response_format": "pcm"},
                      headers=auth, timeout=300) as first:
        assert first.status_code == 200
        busy = speech(url, auth, input="Me too.")
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["code"] == "server_busy"


# ---------------------------------------------------------------------------------------------- our client


def test_client_command_writes_the_stream(server, reference_pcm, tmp_path):
    out = tmp_path / "out.wav"
    done = subprocess.run([sys.executable, "-m", "inference.client", "--url", server, "--text", "Hello there.",
                           "--out", str(out), "--seed", "1"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "time to first audio" in (done.stdout + done.stderr).lower()
    audio, sr = sf.read(out, dtype="int16")
    assert sr == 24000
    direct = np.frombuffer(reference_pcm, dtype="<i2")
    assert np.array_equal(audio, direct)
    result = stream_http(server, "Hello there.", seed=1, fmt="wav")
    assert np.array_equal(result.pcm, direct)
