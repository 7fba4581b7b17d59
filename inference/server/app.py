"""The HTTP and WebSocket API: OpenAI's speech endpoint (every response_format, SSE), named voices, a text stream.

Every error is OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so the `openai` SDK shows the
reason. Requests are checked whole (schema, voice, text, language) before the response starts; a failure after
that cuts the audio stream (or sends an SSE `error` event) rather than ending it as if it were complete.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..audio import AudioError
from ..models.tokenizers import TextError
from .audio_formats import CONTENT_TYPES, StreamEncoder
from .config import SAMPLE_RATE, ServerConfig
from .engine import Busy, Engine, Job
from .schema import SENTENCE_END, SpeechRequest, StreamStart, SynthesisOptions
from .voices import VoiceError, VoiceStore

log = logging.getLogger("inference.server")

MODEL_IDS = ("chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted as `model`; one model serves all


class ApiError(Exception):
    """An error answered in OpenAI's shape, before any audio was sent."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error", 503: "server_busy"}.get(self.status, "invalid_request_error"
                                                                  if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def validation_error(e: ValidationError | RequestValidationError) -> ApiError:
    first = e.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'request'}: {err['msg']}"
                        for err in e.errors())
    return ApiError(400, message, param, "invalid_value")


class Guard:
    """ASGI middleware in front of every endpoint, WebSocket included: the API key, and the web origins allowed.

    Browsers send "simple" cross-origin POSTs without asking first, so a foreign `Origin` is refused here, before
    the request runs; CORS headers alone would only hide the answer from the page."""

    def __init__(self, app, api_key: str, origins: list[str]):
        self.app, self.api_key, self.origins = app, api_key, set(origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and "*" not in self.origins and origin not in self.origins \
                and urlsplit(origin).netloc != headers.get("host"):
            return await self._refuse(scope, send, ApiError(403, f"requests from the web origin {origin} are not "
                                                                 "allowed (server setting cors_origins)"))
        if self.api_key and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                return await self._refuse(scope, send, ApiError(
                    401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", None,
                    "invalid_api_key"))
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, error: ApiError) -> None:
        if scope["type"] == "websocket":  # before the handshake completes: the client sees HTTP 403
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
            return
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(engine: Engine, voices: VoiceStore, cfg: ServerConfig, api_key: str = "") -> FastAPI:
    app = FastAPI(title="Chatterbox workbench speech server")
    model = engine.model

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        return validation_error(e).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        return ApiError(e.status_code, str(e.detail)).response()

    @app.exception_handler(Exception)
    async def crashed(_, e: Exception):
        log.exception("request failed")
        return ApiError(500, f"the server failed on this request ({type(e).__name__})").response()

    # ------------------------------------------------------------------ jobs
    def voice_name(name: str) -> str:
        """OpenAI's voice names play the voice configured for them, unless a voice of that very name exists."""
        if name in voices.voices:
            return name
        return getattr(cfg.openai_voices, name, name)

    async def voice(name: str):
        """A loaded voice at once; one only on disk (saved by another replica) is prepared in a worker thread."""
        name = voice_name(name)
        return voices.voices[name] if name in voices.voices else await asyncio.to_thread(voices.get, name)

    async def start(options: SynthesisOptions, text: str) -> tuple[Job, asyncio.Queue]:
        """Check everything about the request, then queue it; its chunks arrive on the returned queue."""
        if not text.strip():
            raise ApiError(400, "input is empty", "input")
        if len(text) > cfg.max_chars:
            raise ApiError(413, f"input is {len(text)} characters; this server takes at most {cfg.max_chars}",
                           "input", "input_too_long")
        try:
            conds = await voice(options.voice)
        except VoiceError as e:
            raise ApiError(e.status, str(e), "voice") from None
        settings = {"chunk_size": cfg.chunk_size, "strategy": cfg.strategy, "max_new_tokens": cfg.max_new_tokens,
                    "prompt_tokens": cfg.prompt_tokens or None, **options.synthesis_kwargs()}
        try:
            utterance = model.utterance(text, conds=conds, **settings)
        except (TextError, ValueError) as e:
            param = "language_id" if "language" in str(e) else "input"
            raise ApiError(400, str(e), param) from None
        loop, out = asyncio.get_running_loop(), asyncio.Queue()
        job = Job(utterance, lambda item: loop.call_soon_threadsafe(out.put_nowait, item))
        try:
            engine.submit(job)
        except Busy as e:
            raise ApiError(503, str(e), code="server_busy", headers={"Retry-After": str(e.retry_after)}) from None
        return job, out

    async def chunks(job: Job, out: asyncio.Queue):
        """The job's StreamChunks as they come; the job is cancelled however this generator ends."""
        try:
            while (item := await out.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            job.cancel()

    # ------------------------------------------------------------------ endpoints
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": cfg.model, "sample_rate": SAMPLE_RATE, "voices": len(voices.names()),
                "max_batch": cfg.max_batch, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatterbox"}
                                           for name in MODEL_IDS]}

    @app.get("/v1/voices")
    async def list_voices():
        return {"voices": voices.names(), "openai_voices": {k: voice_name(k) for k in vars(cfg.openai_voices)}}

    @app.post("/v1/voices", status_code=201)
    async def add_voice(request: Request):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "send the clip as multipart/form-data with the fields name=<voice name> and "
                                "file=<audio file>", "file")
        length = request.headers.get("content-length")
        limit = int(cfg.max_upload_mb * 1e6)
        if length is None or not length.isdigit():
            raise ApiError(411, "send the upload with a Content-Length header")
        if int(length) > limit:
            raise ApiError(413, f"the upload is {int(length) / 1e6:.1f} MB; this server takes at most "
                                f"{cfg.max_upload_mb:g} MB", "file")
        form = await request.form(max_files=1, max_fields=1)
        try:
            name, clip = form.get("name"), form.get("file")
            if not isinstance(name, str):
                raise ApiError(400, "the form needs a text field 'name'", "name")
            if not isinstance(clip, UploadFile):
                raise ApiError(400, "the form needs a file field 'file' with the audio", "file")
            kind = (clip.content_type or "").split(";")[0].strip()
            if not (kind.startswith("audio/") or kind == "application/octet-stream"):
                raise ApiError(415, f"the file is {kind or 'untyped'}; send an audio file (audio/*)", "file")
            data = await clip.read()
        finally:
            await form.close()
        try:
            await asyncio.to_thread(voices.add, name, data, cfg.max_voice_seconds)
        except VoiceError as e:
            raise ApiError(e.status, str(e), "name" if e.status == 409 else "file") from None
        except AudioError as e:
            raise ApiError(400, str(e), "file") from None
        return {"voice": name}

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ApiError(415, "send the request as JSON (Content-Type: application/json)")
        try:
            req = SpeechRequest.model_validate(json.loads(await request.body()))
        except json.JSONDecodeError as e:
            raise ApiError(400, f"the body is not JSON: {e}") from None
        except ValidationError as e:
            raise validation_error(e) from None
        try:
            encoder = StreamEncoder(req.response_format, SAMPLE_RATE, req.speed)
        except ValueError as e:
            raise ApiError(400, str(e), "speed") from None
        job, out = await start(req, req.input)
        headers = {"X-Sample-Rate": str(SAMPLE_RATE)}

        if not req.stream:
            audio = []
            async for chunk in chunks(job, out):
                audio.append(chunk.audio)
            whole = np.concatenate(audio) if audio else np.zeros(0, np.float32)
            if req.response_format == "wav":  # the true sizes in the header, as a seekable player expects
                pcm = StreamEncoder("pcm", SAMPLE_RATE, req.speed)
                samples = np.frombuffer(pcm.encode(whole) + pcm.finish(), dtype="<i2")
                buffer = io.BytesIO()
                sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
                data = buffer.getvalue()
            else:
                data = encoder.encode(whole) + encoder.finish()
            return Response(data, media_type=CONTENT_TYPES[req.response_format], headers=headers)

        if req.stream_format == "sse":
            async def events():
                samples = 0
                try:
                    async for chunk in chunks(job, out):
                        samples += len(chunk.audio)
                        if data := encoder.encode(chunk.audio):
                            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                    if data := encoder.finish():
                        yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                    text_tokens = sum(p.text_tokens.shape[1] for p in job.utterance.pieces)
                    speech_tokens = samples // 960
                    yield sse({"type": "speech.audio.done", "usage": {
                        "input_tokens": text_tokens, "output_tokens": speech_tokens,
                        "total_tokens": text_tokens + speech_tokens}})
                except Exception as e:  # noqa: BLE001 - the status line is sent: report in the stream
                    log.exception("synthesis failed")
                    yield sse(ApiError(500, f"synthesis failed ({type(e).__name__})").body() | {"type": "error"})

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

        async def body():
            # An exception here aborts the connection without the final empty chunk: the client sees a cut stream
            # rather than audio that looks complete (the status line is already sent).
            async for chunk in chunks(job, out):
                if data := encoder.encode(chunk.audio):
                    yield data
                if await request.is_disconnected():  # ASGI servers that do not cancel us when the client leaves
                    return
            yield encoder.finish()

        return StreamingResponse(body(), media_type=CONTENT_TYPES[req.response_format], headers=headers)

    @app.websocket("/v1/audio/stream")
    async def stream(ws: WebSocket):
        await ws.accept()
        sentences: asyncio.Queue = asyncio.Queue()
        state: dict = {"options": SynthesisOptions(), "chars": 0}

        async def receive():
            """Text as it arrives -> whole sentences on `sentences` (the rest waits for more); None ends."""
            buffer, started = "", False
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message.get("code", 1000))
                if message.get("text") is None:
                    raise ApiError(400, "binary frames are not accepted: send JSON text messages")
                message = json.loads(message["text"])
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "start" and not started:
                    start_message = StreamStart.model_validate(message)
                    state["options"] = SynthesisOptions.model_validate(start_message.model_dump(exclude={"type"}))
                    await voice(state["options"].voice)  # an unknown voice is refused now, not at the first sentence
                elif kind == "text" and isinstance(message.get("text"), str) and set(message) == {"type", "text"}:
                    state["chars"] += len(message["text"])
                    if state["chars"] > cfg.max_chars:
                        raise ApiError(413, f"text over {cfg.max_chars} characters")
                    buffer += message["text"]
                    *done, buffer = SENTENCE_END.split(buffer)
                    for sentence in done:
                        await sentences.put(sentence)
                elif kind == "end" and set(message) == {"type"}:
                    if buffer.strip():
                        await sentences.put(buffer)
                    await sentences.put(None)
                    return
                else:
                    raise ApiError(400, f"unexpected message {json.dumps(message)[:200]}: send start (first, once), "
                                        "text or end")
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
                options = state["options"]
                encoder = StreamEncoder("pcm", SAMPLE_RATE, options.speed)
                job, out = await start(options, sentence)
                async for chunk in chunks(job, out):
                    await ws.send_bytes(encoder.encode(chunk.audio))
                    m = chunk.metrics
                    await ws.send_text(json.dumps({"type": "chunk", "index": index, "samples": len(chunk.audio),
                                                   "time_to_first_audio": m.time_to_first_audio, "rtf": m.rtf}))
                    index += 1
                if tail := encoder.finish():
                    await ws.send_bytes(tail)
            await ws.send_text(json.dumps({"type": "done", "chunks": index}))
            await ws.close()
        except WebSocketDisconnect:
            log.info("websocket client left")
        except (ApiError, ValidationError, json.JSONDecodeError, VoiceError) as e:
            if isinstance(e, ValidationError):
                e = validation_error(e)
            detail = e.message if isinstance(e, ApiError) else str(e)
            await ws.send_text(json.dumps({"type": "error", "detail": detail}))
            await ws.close(code=1013 if isinstance(e, ApiError) and e.status == 503 else 1008)
        except Exception as e:  # noqa: BLE001 - synthesis failed: say so, then close as a server error
            log.exception("synthesis failed")
            await ws.send_text(json.dumps({"type": "error", "detail": f"synthesis failed ({type(e).__name__})"}))
            await ws.close(code=1011)
        finally:
            receiver.cancel()

    app.add_middleware(Guard, api_key=api_key, origins=cfg.cors_origins)
    app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Sample-Rate", "Retry-After"])
    return app


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()
