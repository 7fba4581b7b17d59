"""The speech server with a Turbo model, run as users run it (`python -m inference.server --model tiny-turbo`, one
process for the whole module) and driven as they drive it: our client over HTTP and the WebSocket, the official
`openai` SDK, raw HTTP. Six clients at once, each with its own settings, get the audio they get alone; the family
is named, the settings it has no use for are refused, its tags pass through. The endpoints' logic is tested
in-process in test_server_app.py, the English server in test_server.py."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf

from inference.client import ServerError, stream_http, stream_ws
from inference.families import TURBO
from inference.presets import synthetic_reference
from server_process import launch, wait_ready

RATE = 24000
TOKEN_SAMPLES = 960
TOKENS = 8  # speech tokens per sentence (random weights never stop by themselves): every request here is short
# Six clients, each its own text, seed and sampling (chunk sizes too, so S3Gen interleaves unequal chunks); one
# speaks with a voice from the voices folder, one has a text of two pieces (over 300 characters: its
# first piece leaves the batch and its second joins it while the others decode).
LONG = " ".join(["and then it goes on for a while without any end in sight"] * 6)
CLIENTS = [
    dict(text="Hi there [chuckle], one minute [clear throat] please?", seed=11, temperature=0.7, top_k=200,
         chunk_size=8),
    dict(text="Good morning [sigh], the coffee is cold.", seed=12, temperature=1.1, top_p=0.8, chunk_size=16),
    dict(text="Please hold the line.", seed=13, repetition_penalty=1.5, top_k=50, chunk_size=4),
    dict(text="We are open until nine [laugh].", seed=14, top_p=0.5, temperature=0.9, chunk_size=12),
    dict(text="Your order has shipped.", seed=15, voice="narrator", chunk_size=16),
    dict(text=f"This one is long {LONG} and it ends here.", seed=16, temperature=0.6, chunk_size=8),
]


def ask(url: str, client: dict):
    """One client's request through our client library, as `python -m inference.client` sends it (streamed pcm)."""
    options = {k: v for k, v in client.items() if k not in ("text", "voice")}
    return stream_http(url, client["text"], client.get("voice"), "pcm", timeout=300, **options)


@pytest.fixture(scope="module")
def turbo_server(tmp_path_factory):
    """`python -m inference.server --model tiny-turbo` with a voices folder holding an 8 s voice and a 3 s one
    (too short for Turbo: skipped at startup with the reason)."""
    folder = tmp_path_factory.mktemp("turbo-server")
    voices = folder / "voices"
    voices.mkdir()
    sf.write(voices / "narrator.flac", synthetic_reference(RATE, 8.0)[::-1].copy(), RATE)  # not the preset's voice
    sf.write(voices / "short.flac", synthetic_reference(RATE, 3.0), RATE)
    log = folder / "server.log"
    url, proc = launch(log, "--voices", str(voices), "--max-batch", "8", model="tiny-turbo", max_tokens=TOKENS)
    try:
        wait_ready(url, proc, log, {})
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def url(turbo_server):
    return turbo_server[0]


@pytest.fixture(scope="module")
def alone(url) -> list[bytes]:
    """Each client's audio when it is the only request on the server."""
    return [ask(url, client).pcm.tobytes() for client in CLIENTS]


def openai_client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_startup_names_the_family_and_loads_the_voices(turbo_server):
    url, log = turbo_server
    health = httpx.get(f"{url}/health").json()
    assert (health["status"], health["model"], health["family"]) == ("ok", "tiny-turbo", "turbo")
    models = openai_client(url).models.list().data
    assert [m.id for m in models] == ["tiny-turbo", "chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    assert {m.family for m in models} == {"turbo"}
    assert httpx.get(f"{url}/v1/voices").json()["voices"] == ["default", "narrator"]
    assert "voice 'short' skipped" in log.read_text() and "longer than 5 s" in log.read_text()
    unusable = httpx.post(f"{url}/v1/audio/speech", json={"input": "Hi.", "voice": "short"}, timeout=60)
    error = unusable.json()["error"]
    assert unusable.status_code == 400 and error["param"] == "voice", unusable.text
    assert error["message"].startswith("the voice 'short' cannot be used: short.flac: Turbo needs a reference longer "
                                       "than 5 s") and str(log.parent) not in error["message"]
    wav = io.BytesIO()
    sf.write(wav, synthetic_reference(RATE, 3.0), RATE, format="WAV")
    r = httpx.post(f"{url}/v1/voices", data={"name": "brief"}, files={"file": ("c.wav", wav.getvalue(), "audio/wav")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file" and "longer than 5 s" in r.text


def test_six_concurrent_clients_get_the_audio_they_get_alone(url, alone):
    """The six requests decode in one T3 batch (one GPT-2 row each, no CFG pair) and take turns on S3Gen; each
    client's audio is byte for byte what it gets alone (its seed, sampling and stop are its own)."""
    before = httpx.get(f"{url}/health").json()
    go = threading.Event()

    def client(i: int):
        go.wait()
        sent = time.perf_counter()
        result = ask(url, CLIENTS[i])
        return result, sent + result.total_seconds

    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        futures = [pool.submit(client, i) for i in range(len(CLIENTS))]
        go.set()
        results, ends = zip(*(f.result() for f in futures))
    for i, (result, solo) in enumerate(zip(results, alone)):
        assert result.pcm.tobytes() == solo, f"client {i} got other audio than alone"
    assert len(set(alone)) == len(CLIENTS)
    pieces = [2 if len(c["text"]) > 300 else 1 for c in CLIENTS]
    assert [len(solo) // 2 for solo in alone] == [n * (TOKENS + 3) * TOKEN_SAMPLES for n in pieces]  # + 3 silence
    after = httpx.get(f"{url}/health").json()
    steps, tokens = after["batch_steps"] - before["batch_steps"], after["tokens_decoded"] - before["tokens_decoded"]
    assert tokens == sum(pieces) * TOKENS and tokens / steps > 2, "requests were not decoded together"
    # S3Gen serves a stream with no audio yet first: the short requests are not held up behind the long one, whose
    # second piece joins the batch after its first has left
    assert all(end < ends[-1] for end in ends[:-1]), ends
    assert after["failed"] == 0


def test_openai_sdk_gets_the_same_audio_and_openai_errors(url, alone):
    import openai

    client = openai_client(url)
    c = CLIENTS[1]
    extra = {k: v for k, v in c.items() if k not in ("text", "voice")}
    out = client.audio.speech.create(model="tts-1", voice="coral", input=c["text"], response_format="pcm",
                                     extra_body=extra)
    assert out.content == alone[1]
    for field, value in (("cfg_weight", 0.5), ("exaggeration", 0.7), ("min_p", 0.05)):
        with pytest.raises(openai.BadRequestError) as e:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", extra_body={field: value})
        error = e.value.body
        assert (error["param"], error["code"], error["type"]) == (field, "unsupported_parameter",
                                                                 "invalid_request_error")
        assert error["message"].startswith(f"{field}={value} does not apply to the turbo model")
    # unset, or 0 (off), is not refused
    ok = httpx.post(f"{url}/v1/audio/speech", timeout=300, json={"input": c["text"], "response_format": "pcm",
                                                                 "cfg_weight": 0, "min_p": 0, **extra})
    assert ok.status_code == 200 and ok.content == alone[1]


def test_tags_pass_through_and_an_unknown_tag_is_refused(url, alone):
    """The SSE usage counts the text tokens the server made: a tag is one token, as the tokenizer makes it here."""
    c = CLIENTS[0]
    body = {"input": c["text"], "response_format": "pcm", "stream_format": "sse",
            **{k: v for k, v in c.items() if k != "text"}}
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=300) as r:
        assert r.status_code == 200
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == alone[0]
    tokenizer = TURBO.tiny_tokenizer()
    ids = TURBO.encode(tokenizer, TURBO.normalize(c["text"]), None)
    tags = [tokenizer.hf_tokenizer.convert_tokens_to_ids(t) for t in ("[chuckle]", "[clear throat]")]
    assert all(ids.count(t) == 1 for t in tags)
    assert events[-1]["usage"]["input_tokens"] == len(ids)

    refused = httpx.post(f"{url}/v1/audio/speech", json={"input": "Hello [nonsense] there."}, timeout=60)
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["param"] == "input" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("unknown tag [nonsense]: this model's tags are [chuckle], [clear throat]")
    with pytest.raises(ServerError) as e:
        stream_ws(url, "Hello [nonsense] there.", seed=1, timeout=60)
    assert "unknown tag [nonsense]" in e.value.detail and (e.value.result is None or e.value.result.samples == 0)
    assert httpx.get(f"{url}/health").json()["failed"] == 0


def test_websocket_takes_text_as_it_arrives(url, alone):
    """Our client sends the text word by word (`[clear throat]` cut in two); each sentence is spoken as it
    completes, the first exactly as the same request over HTTP."""
    c = CLIENTS[0]
    options = {k: v for k, v in c.items() if k not in ("text", "voice")}
    result = stream_ws(url, c["text"] + " Then [laugh] bye.", timeout=300, **options)
    first = np.frombuffer(alone[0], "<i2")
    assert np.array_equal(result.pcm[:len(first)], first)
    assert len(result.pcm) == 2 * len(first)  # the second sentence: as many tokens and the silence tail
    done = [e for e in result.events if e.get("type") == "done"]
    assert done and done[0]["chunks"] == sum(1 for e in result.events if e.get("type") == "chunk")
