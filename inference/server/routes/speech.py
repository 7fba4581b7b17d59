"""`POST /v1/audio/speech`: OpenAI's speech endpoint, every response_format, as a stream (default), as SSE events
or as one whole file (`stream: false`).

The request is checked whole (body, schema, speed, text, voice, language) before the response starts; a failure
after that cuts the audio stream (or sends an SSE `error` event) rather than ending it as if it were complete.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from ...models.s3gen.s3gen import S3GEN_SR
from ...streaming import TOKEN_SAMPLES
from ..audio_formats import CONTENT_TYPES, StreamEncoder, whole_wav
from ..errors import ApiError, ClientGone, validation_error
from ..json_body import read_json
from ..schema import SpeechRequest
from ..service import SpeechService, Synthesis, get_service

log = logging.getLogger("inference.server")

router = APIRouter()


@router.post("/v1/audio/speech")
async def speech(request: Request, service: SpeechService = Depends(get_service)):
    req = await parse_request(request)
    try:
        encoder = StreamEncoder(req.response_format, S3GEN_SR, req.speed)
    except ValueError as e:
        raise ApiError(400, str(e), "speed") from None
    synthesis = await service.start(req, req.input)
    headers = {"X-Sample-Rate": str(S3GEN_SR)}
    if not req.stream:
        data = await whole_file(request, synthesis, encoder, req)
        return Response(data, media_type=CONTENT_TYPES[req.response_format], headers=headers)
    if req.stream_format == "sse":
        return StreamingResponse(sse_events(synthesis, encoder), media_type="text/event-stream", headers=headers)
    return StreamingResponse(audio_stream(request, synthesis, encoder), media_type=CONTENT_TYPES[req.response_format],
                             headers=headers)


async def parse_request(request: Request) -> SpeechRequest:
    """The JSON body as a SpeechRequest; read by hand so that every failure is OpenAI's error shape."""
    kind, _, params = request.headers.get("content-type", "").partition(";")
    if kind.strip().lower() != "application/json":
        raise ApiError(415, "send the request as JSON (Content-Type: application/json)")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if "charset" in params.lower() else "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise ApiError(400, f"the body is declared as {charset}; JSON is sent as UTF-8 (RFC 8259)")
    try:
        return SpeechRequest.model_validate(read_json(await request.body()))
    except ValidationError as e:
        raise validation_error(e) from None


async def whole_file(request: Request, synthesis: Synthesis, encoder: StreamEncoder, req: SpeechRequest) -> bytes:
    """All the audio, encoded once complete; a WAV then carries its true sizes, as a seekable player expects.

    Nothing is sent until the end, so nothing would notice a client that leaves: the disconnect is watched for
    and cancels the synthesis (ClientGone)."""
    collecting = asyncio.create_task(collect(synthesis))
    gone = asyncio.create_task(disconnected(request))
    await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not collecting.done():
        collecting.cancel()  # its chunks() ends: the job is cancelled
        log.info("client gone before its whole file was ready: its request was cancelled")
        raise ClientGone()
    whole = collecting.result()
    if req.response_format == "wav":
        return whole_wav(whole, S3GEN_SR, req.speed)
    return encoder.encode(whole) + encoder.finish()


async def collect(synthesis: Synthesis) -> np.ndarray:
    audio = [chunk.audio async for chunk in synthesis.chunks()]
    return np.concatenate(audio) if audio else np.zeros(0, np.float32)


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read by now: the next message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def audio_stream(request: Request, synthesis: Synthesis, encoder: StreamEncoder) -> AsyncIterator[bytes]:
    """The encoded audio as it comes. An exception here aborts the connection without the final empty chunk: the
    client sees a cut stream rather than audio that looks complete (the status line is already sent)."""
    async for chunk in synthesis.chunks():
        if data := encoder.encode(chunk.audio):
            yield data
        if await request.is_disconnected():  # ASGI servers that do not cancel us when the client leaves
            return
    yield encoder.finish()


async def sse_events(synthesis: Synthesis, encoder: StreamEncoder) -> AsyncIterator[bytes]:
    """OpenAI's `stream_format: "sse"`: base64 audio deltas, then `speech.audio.done` with the token usage; a
    failure becomes an `error` event (the status line is already sent)."""
    samples = 0
    try:
        async for chunk in synthesis.chunks():
            samples += len(chunk.audio)
            if data := encoder.encode(chunk.audio):
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        if data := encoder.finish():
            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        text_tokens, speech_tokens = synthesis.text_tokens(), samples // TOKEN_SAMPLES
        yield sse({"type": "speech.audio.done", "usage": {"input_tokens": text_tokens, "output_tokens": speech_tokens,
                                                          "total_tokens": text_tokens + speech_tokens}})
    except Exception as e:  # noqa: BLE001 - the status line is sent: report in the stream
        log.exception("synthesis failed")
        yield sse(ApiError(500, f"synthesis failed ({type(e).__name__})").body() | {"type": "error"})


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()
