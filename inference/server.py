"""Streaming TTS server: the model loaded once, named voices, audio streamed as it is made.

    python -m inference.server --model tiny --host 127.0.0.1 --port 8000 [--voices DIR]

Endpoints:
  GET  /health                 200 {"status": "ok", ...} once the model is loaded
  GET  /v1/voices              {"voices": [...]}
  POST /v1/voices?name=NAME    body: an audio file (any format soundfile reads) -> a named voice
  POST /v1/audio/speech        OpenAI-style {"model", "input", "voice", "response_format": "pcm"|"wav", "stream"}
                               (+ optional seed, temperature, cfg_weight, exaggeration, chunk_size): chunked
                               16-bit little-endian mono 24 kHz PCM, or the same behind a WAV header
  WS   /v1/audio/stream        {"type": "start", "voice", ...} then {"type": "text", "text"}... then
                               {"type": "end"}; binary PCM chunks and {"type": "chunk"} messages come back as
                               each sentence is synthesised (while later text still arrives), then {"type": "done"}

One worker thread owns the model and runs one request at a time, so requests queue and their audio never mixes;
inside a request, T3's token generation runs ahead in its own thread while S3Gen turns the previous chunk into
audio. A client that disconnects cancels its request: its generation stops at the next token.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import queue
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger("inference.server")

SAMPLE_RATE = 24000
SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+")


@dataclass
class ServerConfig:
    model: str = "tiny"
    adapter: str = ""  # LoRA adapter folder from training to put on `model` ("" : none)
    multilingual: bool = False
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    voices: str | None = None  # folder of reference clips: each becomes a voice named after its file
    max_chars: int = 5000  # longer input gets 413
    max_queue: int = 16  # requests waiting beyond this get 503
    max_new_tokens: int = 1000  # per sentence
    chunk_size: int = 25
    strategy: str = "incremental"
    prompt_tokens: int = 0  # voice-prompt tokens decoded with every chunk (0: all); fewer is faster per chunk


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def streaming_wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header whose sizes say 'unknown' (0xFFFFFFFF), as streamed WAV usually does."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
                                                                           sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", unknown))


@dataclass
class Job:
    """One synthesis request: its text, voice and options in, its audio chunks out (None ends the stream)."""

    text: str
    voice: str
    options: dict
    out: "queue.Queue[Any]" = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


class Worker:
    """The only thread that touches the model: jobs run one after another, each with its own output queue."""

    def __init__(self, model, cfg: ServerConfig):
        self.model, self.cfg = model, cfg
        self.voices = {"default": model.conds}
        self.completed = self.cancelled = 0  # requests finished / abandoned by their client (see /health)
        self.jobs: "queue.Queue[Job | tuple]" = queue.Queue(maxsize=cfg.max_queue)
        self.thread = threading.Thread(target=self._run, name="tts-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        if job.voice not in self.voices:
            raise KeyError(job.voice)
        self.jobs.put_nowait(job)  # queue.Full when the server is saturated
        return job

    def add_voice(self, name: str, path: str) -> None:
        """Prepare a voice on the worker thread (it uses the model) and wait for it."""
        done: "queue.Queue[Exception | None]" = queue.Queue()
        self.jobs.put(("voice", name, path, done))
        error = done.get()
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if isinstance(job, tuple):
                _, name, path, done = job
                try:
                    self.voices[name] = self.model.prepare_conditionals(path)
                    done.put(None)
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    done.put(e)
                continue
            try:
                if job.cancelled.is_set():
                    self.cancelled += 1
                else:
                    self._synthesise(job)
            except Exception as e:  # noqa: BLE001 - the request fails, the server goes on
                log.exception("synthesis failed")
                job.out.put(e)
            finally:
                job.out.put(None)

    def _synthesise(self, job: Job) -> None:
        self.model.conds = self.voices[job.voice]
        options = {"chunk_size": self.cfg.chunk_size, "strategy": self.cfg.strategy,
                   "max_new_tokens": self.cfg.max_new_tokens,
                   "prompt_tokens": self.cfg.prompt_tokens or None, **job.options}
        stream = self.model.generate_stream(job.text, stop=job.cancelled, **options)
        try:
            for chunk in stream:
                if job.cancelled.is_set():
                    break
                job.out.put(chunk)
        finally:
            stream.close()  # stops token generation too
        if job.cancelled.is_set():
            self.cancelled += 1
            log.info("client gone: its request was cancelled")
        else:
            self.completed += 1


class SpeechRequest(BaseModel):
    """The OpenAI speech request, plus our sampling options. `model` is accepted and ignored: one model per server."""

    model: str | None = None
    input: str
    voice: str = "default"
    response_format: Literal["pcm", "wav"] = "pcm"
    stream: bool = True
    seed: int | None = None
    temperature: float | None = Field(default=None, gt=0)
    cfg_weight: float | None = Field(default=None, ge=0)
    exaggeration: float | None = Field(default=None, ge=0)
    chunk_size: int | None = Field(default=None, ge=1, le=500)
    language_id: str | None = None


OPTION_KEYS = ("seed", "temperature", "cfg_weight", "exaggeration", "chunk_size", "language_id", "min_p", "top_p",
               "repetition_penalty")


def create_app(worker: Worker, cfg: ServerConfig):
    app = FastAPI(title="Chatterbox workbench streaming server")

    def check_text(text: str) -> str:
        if not text.strip():
            raise HTTPException(400, "input is empty")
        if len(text) > cfg.max_chars:
            raise HTTPException(413, f"input is {len(text)} characters; this server takes at most {cfg.max_chars}")
        return text

    def new_job(text: str, voice: str, options: dict) -> Job:
        if voice not in worker.voices:
            raise HTTPException(404, f"unknown voice {voice!r}; known: {', '.join(sorted(worker.voices))}")
        try:
            return worker.submit(Job(text, voice, {k: v for k, v in options.items() if v is not None}))
        except queue.Full:
            raise HTTPException(503, "the server is busy; try again shortly") from None

    async def chunks_of(job: Job):
        """The job's StreamChunks as they come; the job is cancelled however this generator ends."""
        try:
            while True:
                item = await asyncio.to_thread(job.out.get)
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            job.cancel()

    @app.get("/health")
    def health():
        return {"status": "ok", "model": cfg.model, "sample_rate": SAMPLE_RATE, "voices": len(worker.voices),
                "queued": worker.jobs.qsize(), "completed": worker.completed, "cancelled": worker.cancelled}

    @app.get("/v1/voices")
    def voices():
        return {"voices": sorted(worker.voices)}

    @app.post("/v1/voices")
    async def add_voice(request: Request, name: str = Query(..., pattern=r"^[\w.-]{1,64}$")):
        body = await request.body()
        if not body:
            raise HTTPException(400, "send the reference audio file as the request body")
        with tempfile.NamedTemporaryFile(suffix=".audio") as f:
            f.write(body)
            f.flush()
            try:
                await asyncio.to_thread(worker.add_voice, name, f.name)
            except Exception as e:  # noqa: BLE001 - unreadable or unusable audio
                raise HTTPException(400, f"cannot use this audio as a voice: {e}") from None
        return {"voice": name}

    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request):
        job = new_job(check_text(req.input), req.voice, req.model_dump(include=set(OPTION_KEYS)))

        async def body():
            if req.response_format == "wav":
                yield streaming_wav_header()
            # An exception here aborts the connection without the final empty chunk: the client sees a cut
            # stream rather than audio that looks complete (the status line is already sent). A client that
            # leaves makes Starlette cancel this generator (chunks_of then cancels the job); under ASGI 2.4
            # servers, which do not listen for it, the check below catches it between chunks.
            async for chunk in chunks_of(job):
                if await request.is_disconnected():
                    return
                yield pcm16(chunk.audio)

        media = "audio/wav" if req.response_format == "wav" else "audio/pcm"
        return StreamingResponse(body(), media_type=media, headers={"X-Sample-Rate": str(SAMPLE_RATE)})

    @app.websocket("/v1/audio/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        sentences: asyncio.Queue = asyncio.Queue()
        state = {"voice": "default", "options": {}, "chars": 0}

        async def receive():
            """Text as it arrives -> whole sentences on `sentences` (the rest waits for more); None ends."""
            buffer, started = "", False
            while True:
                message = json.loads(await ws.receive_text())
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "start" and not started:
                    SpeechRequest(input=".", **{k: v for k, v in message.items() if k != "type"})  # validates
                    state["voice"] = message.get("voice", "default")
                    state["options"] = {k: message[k] for k in OPTION_KEYS if k in message}
                elif kind == "text" and isinstance(message.get("text"), str):
                    state["chars"] += len(message["text"])
                    if state["chars"] > cfg.max_chars:
                        raise HTTPException(413, f"text over {cfg.max_chars} characters")
                    buffer += message["text"]
                    *done, buffer = SENTENCE_END.split(buffer)
                    for sentence in done:
                        await sentences.put(sentence)
                elif kind == "end":
                    if buffer.strip():
                        await sentences.put(buffer)
                    await sentences.put(None)
                    return
                else:
                    raise ValueError(f"unexpected message {message!r}: send start, text or end")
                started = True

        receiver = asyncio.create_task(receive())
        index = 0
        try:
            while True:
                getter = asyncio.create_task(sentences.get())
                finished, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in finished:
                    getter.cancel()
                    receiver.result()  # raises what went wrong with the client's messages
                    continue
                sentence = getter.result()
                if sentence is None:
                    break
                if not sentence.strip():
                    continue
                async for chunk in chunks_of(new_job(sentence, state["voice"], state["options"])):
                    await ws.send_bytes(pcm16(chunk.audio))
                    m = chunk.metrics
                    await ws.send_text(json.dumps({"type": "chunk", "index": index, "samples": len(chunk.audio),
                                                   "time_to_first_audio": m.time_to_first_audio, "rtf": m.rtf}))
                    index += 1
            await ws.send_text(json.dumps({"type": "done", "chunks": index}))
            await ws.close()
        except WebSocketDisconnect:
            log.info("websocket client left")
        except (HTTPException, ValueError, ValidationError, json.JSONDecodeError) as e:
            detail = e.detail if isinstance(e, HTTPException) else str(e)
            await ws.send_text(json.dumps({"type": "error", "detail": detail}))
            await ws.close(code=1008)
        finally:
            receiver.cancel()

    return app


def main(argv: list[str] | None = None) -> int:
    from .settings import add_config_flags, flag_overrides, load_config

    p = argparse.ArgumentParser(prog="python -m inference.server", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: ./config.toml, else the project's)")
    add_config_flags(p, ServerConfig, "server")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(ServerConfig, "server", args.config, flag_overrides(args))

    import uvicorn

    from .chatterbox import load_chatterbox

    model = load_chatterbox(cfg.model, cfg.multilingual, cfg.device, cfg.adapter or None)
    model.setup_model()
    worker = Worker(model, cfg)
    if cfg.voices:
        for path in sorted(Path(cfg.voices).iterdir()):
            if path.suffix.lower() in (".wav", ".flac", ".ogg"):
                worker.add_voice(path.stem, str(path))
                log.info("voice %r from %s", path.stem, path)
    uvicorn.run(create_app(worker, cfg), host=cfg.host, port=cfg.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
