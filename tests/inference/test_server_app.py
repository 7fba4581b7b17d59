"""The server's pieces in-process, over a stand-in model and engine (no weights, no process, no socket): the error
shape, the service's request checks and voice names, and the HTTP and WebSocket shape of every endpoint.
What needs the real model and a real server (audio, batching, the SDK, disconnects) is in test_server.py."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from inference.families import ENGLISH, TURBO
from inference.models.tokenizers import TextError
from inference.server import ServerConfig
from inference.server.app import create_app
from inference.server.engine import Busy
from inference.server.errors import ApiError, validation_error
from inference.server.guard import host_allowed, host_name
from inference.server.schema import SpeechRequest, SynthesisOptions
from inference.server.service import SpeechService
from inference.server.voices import VoiceStore

RATE, TOKEN = 24000, 960
KEY = "sk-unit"


class FakeUtterance:
    """Two chunks of a tone per request (3 and 2 tokens of audio); the text's length + 2 text tokens."""

    def __init__(self, text: str, settings: dict):
        self.text, self.settings = text, settings
        self.pieces = [SimpleNamespace(text_tokens=np.zeros((1, len(text) + 2)))]
        tone = (0.5 * np.sin(np.arange(5 * TOKEN) / 10)).astype(np.float32)
        metrics = SimpleNamespace(time_to_first_audio=0.25, rtf=0.5)
        self.chunks = [SimpleNamespace(audio=tone[:3 * TOKEN], metrics=metrics),
                       SimpleNamespace(audio=tone[3 * TOKEN:], metrics=metrics)]


class FakeModel:
    conds = "built-in conds"

    def __init__(self, family=ENGLISH):
        self.FAMILY = family  # the real family: its unused settings are what the server refuses

    def utterance(self, text: str, conds, **settings) -> FakeUtterance:
        if "language" in settings.get("language_id", ""):
            raise TextError("this model cannot speak that language")
        if "!!" in text:
            raise ValueError("bad text")
        return FakeUtterance(text, {"conds": conds, **settings})

    def prepare_conditionals(self, path):
        return f"conds of {path.name}"

    def prepare_conditionals_from_array(self, wav, rate, source=""):
        return f"conds of an upload of {len(wav)} samples"


class FakeEngine:
    """Delivers a request's chunks at once, or refuses it as the real engine does when full."""

    def __init__(self, family=ENGLISH):
        self.model, self.busy, self.jobs = FakeModel(family), False, []

    def submit(self, job):
        if self.busy:
            raise Busy(7)
        self.jobs.append(job)
        for chunk in job.utterance.chunks:
            job.deliver(chunk)
        job.deliver(None)
        return job

    def stats(self) -> dict:
        return {"in_batch": 0, "queued": 0, "streams": 0}


def make_cfg(**overrides) -> ServerConfig:
    """Starlette's TestClient addresses every request to the host `testserver`."""
    overrides = {"allowed_hosts": ("testserver",), **overrides}
    cfg = ServerConfig(max_chars=40, chunk_size=16, prompt_tokens=0, max_upload_mb=0.1, **overrides)
    cfg.openai_voices.nova = "nova-voice"
    return cfg


@pytest.fixture()
def parts(tmp_path):
    engine = FakeEngine()
    voices = VoiceStore(engine.model, tmp_path)
    return engine, voices, make_cfg()


@pytest.fixture()
def client(parts):
    with TestClient(create_app(*parts)) as c:
        yield c


def pcm(chunks) -> bytes:
    audio = np.concatenate([c.audio for c in chunks])
    return np.rint(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


EXPECTED_PCM = pcm(FakeUtterance("", {}).chunks)


# ---------------------------------------------------------------------------------------------- the error shape


@pytest.mark.parametrize("status, kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                          (403, "permission_error"), (404, "not_found_error"),
                                          (413, "invalid_request_error"), (429, "rate_limit_error"),
                                          (500, "server_error"), (503, "server_busy")])
def test_api_error_is_openai_shaped(status, kind):
    error = ApiError(status, "why", "field", "a_code", {"Retry-After": "3"})
    assert error.body() == {"error": {"message": "why", "type": kind, "param": "field", "code": "a_code"}}
    response = error.response()
    assert response.status_code == status and response.headers["retry-after"] == "3"
    assert json.loads(response.body) == error.body()


def test_validation_error_names_the_first_field_and_lists_all():
    with pytest.raises(Exception) as e:
        SpeechRequest.model_validate({"input": "Hi.", "top_p": "abc", "volume": 3})
    error = validation_error(e.value)
    assert (error.status, error.param, error.code) == (400, "top_p", "invalid_value")
    assert error.message.startswith("top_p: ") and "; volume: Extra inputs are not permitted" in error.message


# ---------------------------------------------------------------------------------------------- the service


def test_openai_voice_names_play_the_configured_voice(parts):
    engine, voices, cfg = parts
    service = SpeechService(engine, voices, cfg)
    assert service.voice_name("nova") == "nova-voice" and service.voice_name("alloy") == "default"
    assert service.voice_name("bob") == "bob"
    voices.voices["alloy"] = "a voice really called alloy"
    assert service.voice_name("alloy") == "alloy"


def test_a_voice_only_on_disk_is_loaded_on_first_use(parts):
    """Another replica saved it into the shared folder."""
    engine, voices, cfg = parts
    service = SpeechService(engine, voices, cfg)
    sf.write(voices.folder / "bob.wav", np.zeros(2400, np.float32), RATE)
    assert asyncio.run(service.voice("bob")) == "conds of bob.wav" and "bob" in voices.voices
    assert asyncio.run(service.voice("default")) == "built-in conds"


def test_start_passes_the_server_settings_under_the_request_ones(parts):
    engine, voices, cfg = parts

    async def run():
        synthesis = await SpeechService(engine, voices, cfg).start(SynthesisOptions(seed=3, chunk_size=8), "Hi.")
        return synthesis, [len(c.audio) async for c in synthesis.chunks()]

    synthesis, sizes = asyncio.run(run())
    # prompt_tokens 0 reaches the model as 0: the whole voice prompt, whatever the family's default
    assert synthesis.job.utterance.settings == {"conds": "built-in conds", "chunk_size": 8, "strategy": "incremental",
                                                "max_new_tokens": 1000, "prompt_tokens": 0, "seed": 3}
    assert sizes == [3 * TOKEN, 2 * TOKEN]
    assert synthesis.job.cancelled.is_set() and synthesis.text_tokens() == 5


@pytest.mark.parametrize("text, options, status, param, code, message", [
    ("  \n", {}, 400, "input", None, "input is empty"),
    ("x" * 41, {}, 413, "input", "input_too_long", "input is 41 characters; this server takes at most 40"),
    ("Hi.", {"voice": "nobody"}, 404, "voice", None, "unknown voice 'nobody'; known: default"),
    ("Hi.", {"language_id": "language"}, 400, "language_id", None, "cannot speak"),
    ("Hi!!", {}, 400, "input", None, "bad text"),
    ("Hi.", {"top_k": 50}, 400, "top_k", "unsupported_parameter", "top_k=50 does not apply to the english model"),
])
def test_start_refuses_before_any_audio(parts, text, options, status, param, code, message):
    engine, voices, cfg = parts
    with pytest.raises(ApiError) as e:
        asyncio.run(SpeechService(engine, voices, cfg).start(SynthesisOptions(**options), text))
    assert (e.value.status, e.value.param, e.value.code) == (status, param, code) and message in e.value.message
    assert engine.jobs == []


def test_a_full_engine_answers_503_with_retry_after(parts):
    engine, voices, cfg = parts
    engine.busy = True
    with pytest.raises(ApiError) as e:
        asyncio.run(SpeechService(engine, voices, cfg).start(SynthesisOptions(), "Hi."))
    assert (e.value.status, e.value.code, e.value.headers) == (503, "server_busy", {"Retry-After": "7"})
    assert e.value.message == "the server is busy; retry in about 7 s"


def test_voice_upload_errors_name_the_field(parts):
    """Refused before the clip is decoded or the encoders run: the name's problems point at `name`, the clip's at
    `file`."""
    engine, voices, cfg = parts
    service = SpeechService(engine, voices, cfg)
    for name, clip, status, param, says in [("alloy", b"", 409, "name", "OpenAI voice name"),
                                            ("DEFAULT", b"", 409, "name", "only in case"),
                                            ("anna\n", b"", 400, "name", "a voice name is"),
                                            ("anna", b"not audio", 400, "file", "not audio this server reads")]:
        with pytest.raises(ApiError) as e:
            asyncio.run(service.add_voice(name, clip))
        assert (e.value.status, e.value.param) == (status, param) and says in e.value.message, e.value.message


def test_health_models_and_voices(client):
    health = client.get("/health").json()
    assert health == {"status": "ok", "model": "tiny", "family": "english", "sample_rate": RATE, "voices": 1,
                      "max_batch": 8, "in_batch": 0, "queued": 0, "streams": 0}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny", "chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    assert {m["family"] for m in models["data"]} == {"english"}
    listed = client.get("/v1/voices").json()
    assert listed["voices"] == ["default"] and listed["openai_voices"]["nova"] == "nova-voice"
    assert client.get("/nowhere").json() == {"error": {"message": "Not Found", "type": "not_found_error",
                                                       "param": None, "code": None}}


def test_speech_streams_pcm_with_the_sample_rate(client):
    r = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm" and r.headers["x-sample-rate"] == "24000"
    assert r.content == EXPECTED_PCM


def test_whole_wav_has_true_sizes_and_the_streamed_samples(client):
    r = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "wav", "stream": False})
    data = r.content
    assert r.headers["content-type"] == "audio/wav" and int(r.headers["content-length"]) == len(data)
    assert struct.unpack("<4sI4s", data[:12]) == (b"RIFF", len(data) - 8, b"WAVE")
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE and audio.tobytes() == EXPECTED_PCM
    fast = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "wav", "stream": False,
                                                 "speed": 2.0}).content
    streamed = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm", "speed": 2.0}).content
    assert sf.read(io.BytesIO(fast), dtype="int16")[0].tobytes() == streamed


def test_sse_counts_speech_tokens_from_the_audio(client):
    r = client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm", "stream_format": "sse"})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == EXPECTED_PCM
    assert events[-1] == {"type": "speech.audio.done", "usage": {"input_tokens": 5, "output_tokens": 5,
                                                                 "total_tokens": 10}}


@pytest.mark.parametrize("body, headers, status, param, message", [
    (b'{"input": "Hi."}', {"content-type": "text/plain"}, 415, None,
     "send the request as JSON (Content-Type: application/json)"),
    (b"{not json", {}, 400, None, "the body is not JSON: Expecting property name enclosed in double quotes"),
    (b'{"input": "Hi.", "temperature": NaN}', {}, 400, "temperature", "temperature: Input should be a finite number"),
    (b'{"input": "Hi.", "speed": 5}', {}, 400, "speed", "speed: Input should be less than or equal to 4"),
    (b'{"input": "Hi.", "voice": "nobody"}', {}, 404, "voice", "unknown voice 'nobody'"),
    (b'{"input": "' + b"x" * 41 + b'"}', {}, 413, "input", "at most 40"),
])
def test_bad_requests_get_openai_errors(client, body, headers, status, param, message):
    r = client.post("/v1/audio/speech", content=body, headers={"content-type": "application/json", **headers})
    error = r.json()["error"]
    assert r.status_code == status and error["param"] == param and message in error["message"], r.text


def test_busy_answer_has_retry_after(client, parts):
    parts[0].busy = True
    r = client.post("/v1/audio/speech", json={"input": "Hi."})
    assert r.status_code == 503 and r.headers["retry-after"] == "7" and r.json()["error"]["type"] == "server_busy"


def test_voice_upload_checks(client, parts):
    _, voices, _ = parts
    clip = io.BytesIO()
    sf.write(clip, np.zeros(4800, np.float32), RATE, format="WAV")

    def upload(name="carol", data=clip.getvalue(), kind="audio/wav"):
        return client.post("/v1/voices", data={"name": name}, files={"file": ("c.wav", data, kind)})

    assert upload().status_code == 201 and upload().json()["error"]["param"] == "name"  # 409: no overwriting
    assert voices.voices["carol"] == "conds of an upload of 4800 samples" and (voices.folder / "carol.flac").is_file()
    assert client.post("/v1/voices", content=b"raw").status_code == 415
    typed = upload(kind="text/plain")
    assert typed.status_code == 415
    assert typed.json()["error"]["message"] == "the file is text/plain; send an audio file (audio/*)"
    too_big = upload(data=bytes(100_001))
    assert too_big.status_code == 413 and too_big.json()["error"]["message"].endswith("at most 0.1 MB")
    unsized = client.post("/v1/voices", content=iter([b"--x--"]), headers={"content-type": "multipart/form-data"})
    assert unsized.status_code == 411


# ---------------------------------------------------------------------------------------------- WebSocket


def test_websocket_speaks_each_sentence_as_it_completes(client, parts):
    engine = parts[0]
    with client.websocket_connect("/v1/audio/stream") as ws:
        ws.send_json({"type": "start", "voice": "alloy", "seed": 2})
        for fragment in ("Hello the", "re. How are", " you?", "  "):
            ws.send_json({"type": "text", "text": fragment})
        ws.send_json({"type": "end"})
        audio, messages = b"", []
        while (message := ws.receive())["type"] == "websocket.send":
            if message.get("bytes") is not None:
                audio += message["bytes"]
            else:
                messages.append(json.loads(message["text"]))
                if messages[-1]["type"] == "done":
                    break
    assert [job.utterance.text for job in engine.jobs] == ["Hello there.", "How are you?"]
    assert all(job.utterance.settings["seed"] == 2 for job in engine.jobs)
    assert audio == EXPECTED_PCM * 2
    assert messages == [{"type": "chunk", "index": i, "samples": n, "time_to_first_audio": 0.25, "rtf": 0.5}
                        for i, n in enumerate([3 * TOKEN, 2 * TOKEN] * 2)] + [{"type": "done", "chunks": 4}]


@pytest.mark.parametrize("messages, detail, code", [
    ([{"type": "text", "text": "x" * 41}], "text over 40 characters", 1008),
    ([{"type": "start"}, {"type": "start"}], 'unexpected message {"type": "start"}: send start (first, once), '
                                             "text or end", 1008),
    ([{"type": "text", "text": "Hi", "voice": "x"}], "unexpected message", 1008),
    ([{"type": "start", "speed": 9}], "speed: Input should be less than or equal to 4", 1008),
    ([{"type": "start", "voice": "nobody"}], "unknown voice 'nobody'", 1008),
    (["not json"], "Expecting value", 1008),
    ([{"type": "text", "text": "Hi. "}, {"type": "end"}], "the server is busy; retry in about 7 s", 1013),
])
def test_websocket_errors_then_closes(client, parts, messages, detail, code):
    parts[0].busy = True
    with client.websocket_connect("/v1/audio/stream") as ws:
        for message in messages:
            ws.send_text(message if isinstance(message, str) else json.dumps(message))
        reply = ws.receive_json()
        assert reply["type"] == "error" and detail in reply["detail"], reply
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == code


# ---------------------------------------------------------------------------------------------- a Turbo model


@pytest.fixture()
def turbo_parts(tmp_path):
    engine = FakeEngine(TURBO)
    return engine, VoiceStore(engine.model, tmp_path), make_cfg(model="ResembleAI/chatterbox-turbo")


@pytest.fixture()
def turbo_client(turbo_parts):
    with TestClient(create_app(*turbo_parts)) as c:
        yield c


def ws_session(client, messages: list[dict]) -> tuple[bytes, list[dict]]:
    """(the audio, the JSON messages) a WebSocket session answers `messages` with, up to `done` or an error."""
    with client.websocket_connect("/v1/audio/stream") as ws:
        for message in messages:
            ws.send_json(message)
        audio, replies = b"", []
        while (message := ws.receive())["type"] == "websocket.send":
            if message.get("bytes") is not None:
                audio += message["bytes"]
            else:
                replies.append(json.loads(message["text"]))
                if replies[-1]["type"] in ("done", "error"):
                    break
    return audio, replies


def test_models_name_the_family_and_the_model_served(turbo_client):
    data = turbo_client.get("/v1/models").json()["data"]
    assert data[0] == {"id": "ResembleAI/chatterbox-turbo", "object": "model", "created": 0, "owned_by": "chatterbox",
                       "family": "turbo"}
    assert [m["id"] for m in data[1:]] == ["chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    assert {m["family"] for m in data} == {"turbo"}
    assert turbo_client.get("/health").json()["family"] == "turbo"


@pytest.mark.parametrize("field, value, reason", [("cfg_weight", 0.5, "it has no classifier-free guidance"),
                                                  ("exaggeration", 0.7, "its T3 has no emotion conditioning"),
                                                  ("min_p", 0.05, "its T3 has no min-p filter")])
def test_a_field_the_family_does_not_use_is_refused_on_every_route(turbo_client, turbo_parts, field, value, reason):
    """OpenAI's shape over HTTP (streamed, SSE and whole-file requests alike), the reason as the family gives it;
    the WebSocket refuses it in `start`, before any text."""
    message = f"{field}={value} does not apply to the turbo model: {reason}. Leave it unset (or 0)."
    for extra in ({}, {"stream_format": "sse"}, {"stream": False}):
        r = turbo_client.post("/v1/audio/speech", json={"input": "Hi.", field: value, **extra})
        assert r.status_code == 400 and r.json() == {"error": {"message": message, "type": "invalid_request_error",
                                                               "param": field, "code": "unsupported_parameter"}}
    audio, replies = ws_session(turbo_client, [{"type": "start", "seed": 1, field: value}])
    assert audio == b"" and replies == [{"type": "error", "detail": message}]
    assert turbo_parts[0].jobs == []


def test_fields_left_unset_or_off_are_not_refused(turbo_client, turbo_parts):
    r = turbo_client.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm", "cfg_weight": 0,
                                                    "min_p": 0.0, "exaggeration": None, "top_k": 50})
    assert r.status_code == 200 and r.content == EXPECTED_PCM
    settings = turbo_parts[0].jobs[0].utterance.settings
    assert settings["top_k"] == 50 and settings["cfg_weight"] == 0 and "exaggeration" not in settings


def test_tags_reach_the_model_as_typed(turbo_client, turbo_parts):
    """Over HTTP, and over the WebSocket with a tag cut across text messages: the model gets the brackets whole
    (its tokenizer makes each tag one token: test_turbo_text.py; the real server: test_server_turbo.py)."""
    typed = "Hi [chuckle], so? [Clear  throat] Ok."
    assert turbo_client.post("/v1/audio/speech", json={"input": typed}).status_code == 200
    fragments = ["So [clear", " throat]. Hi", " [chuck", "le]! [sigh]"]  # 39 characters: the limit is 40
    audio, replies = ws_session(turbo_client, [{"type": "start"}, *({"type": "text", "text": f} for f in fragments),
                                               {"type": "end"}])
    assert replies[-1] == {"type": "done", "chunks": 6} and audio == EXPECTED_PCM * 3
    assert [job.utterance.text for job in turbo_parts[0].jobs] == [typed, "So [clear throat].", "Hi [chuckle]!",
                                                                   "[sigh]"]


# ---------------------------------------------------------------------------------------------- the guard


def test_api_key_and_origins(parts):
    engine, voices, _ = parts
    app = create_app(engine, voices, make_cfg(cors_origins=("http://app.example",)), KEY)
    with TestClient(app) as c:
        refused = c.get("/health")
        assert refused.status_code == 401 and refused.json()["error"] == {
            "message": "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            "type": "authentication_error", "param": None, "code": "invalid_api_key"}
        auth = {"Authorization": f"Bearer {KEY}"}
        assert c.get("/health", headers=auth).status_code == 200
        foreign = c.get("/health", headers={**auth, "Origin": "http://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["message"] == (
            "requests from the web origin http://evil.example are not allowed (server setting cors_origins)")
        assert c.get("/health", headers={**auth, "Origin": "http://testserver"}).status_code == 200  # its own page
        allowed = c.get("/health", headers={**auth, "Origin": "http://app.example"})
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        assert allowed.headers["access-control-expose-headers"] == "X-Sample-Rate, Retry-After"
        preflight = c.options("/v1/audio/speech", headers={"Origin": "http://app.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            with c.websocket_connect("/v1/audio/stream"):
                pass
        assert closed.value.code == 1008


@pytest.mark.parametrize("header, allowed, expected", [
    ("127.0.0.1:8000", (), True), ("localhost:8000", (), True), ("[::1]:8000", (), True), ("10.1.2.3", (), True),
    ("evil.example:8000", (), False), ("EVIL.example", ("evil.example",), True), ("a.tts.example", (".tts.example",), True),
    ("tts.example", (".tts.example",), True), ("xtts.example", (".tts.example",), False), ("anything", ("*",), True),
    ("", (), False), ("localhost.evil.example", (), False),
])
def test_host_rule(header, allowed, expected):
    """DNS rebinding: only addresses, localhost and the configured names are answered."""
    assert host_allowed(host_name(header), allowed) is expected


def test_foreign_host_is_refused_before_the_key_or_the_body(parts):
    engine, voices, _ = parts
    app = create_app(engine, voices, make_cfg(allowed_hosts=("tts.example",)), KEY)
    with TestClient(app, base_url="http://evil.example") as c:
        refused = c.post("/v1/audio/speech", json={"input": "Hi."})
        assert refused.status_code == 403 and "'evil.example'" in refused.json()["error"]["message"]
    with TestClient(app, base_url="http://tts.example") as c:
        assert c.get("/health").status_code == 401  # the host passes; the key is checked next
