"""`WS /v1/audio/stream`: text streamed in, speech streamed out, sentence by sentence.

The client sends `{"type": "start", "voice", ...options}` (optional, first), `{"type": "text", "text"}` as often
as it likes, then `{"type": "end"}`. Each complete sentence becomes a request while later text still arrives;
its audio comes back as 16-bit PCM frames, each followed by a `{"type": "chunk"}` message, and `{"type": "done"}`
ends the stream. A bad message gets `{"type": "error", "detail"}` and close code 1008 (1013: server busy, 1011:
synthesis failed).
"""
from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from ...models.s3gen.s3gen import S3GEN_SR
from ..audio_formats import StreamEncoder
from ..errors import ApiError, validation_error
from ..json_body import read_json
from ..schema import StreamStart, SynthesisOptions
from ..sentences import SentenceAssembler, TextTooLong
from ..service import SpeechService, get_service
from ..voices import VoiceError

log = logging.getLogger("inference.server")

router = APIRouter()


@router.websocket("/v1/audio/stream")
async def stream(ws: WebSocket, service: SpeechService = Depends(get_service)):
    await ws.accept()
    session = TextStream(ws, service)
    receiver, speaker = asyncio.create_task(session.receive()), asyncio.create_task(session.speak())
    try:
        chunks = await until_spoken(receiver, speaker)
        await ws.send_text(json.dumps({"type": "done", "chunks": chunks}))
        await ws.close()
    except WebSocketDisconnect:
        log.info("websocket client left: its synthesis was cancelled")
    except (ApiError, ValidationError, VoiceError) as e:
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
        speaker.cancel()


async def until_spoken(receiver: asyncio.Task, speaker: asyncio.Task) -> int:
    """The speaker's result (chunks sent). What goes wrong on the client's side (a bad message, the client gone)
    is raised as soon as it happens, and the speaker is cancelled then: its synthesis stops at once. (The
    receiver only ends by raising.)"""
    await asyncio.wait({receiver, speaker}, return_when=asyncio.FIRST_COMPLETED)
    if receiver.done():
        speaker.cancel()
        raise receiver.exception()
    return speaker.result()


class TextStream:
    """One WebSocket session: `receive` reads the client's messages into sentences, `speak` synthesises them one
    after another; they run side by side, so reading goes on (and a bad message is noticed) while audio plays."""

    def __init__(self, ws: WebSocket, service: SpeechService):
        self.ws, self.service = ws, service
        self.options = SynthesisOptions()
        self.assembler = SentenceAssembler(service.cfg.max_chars)
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()  # None: the client ended the text

    async def receive(self) -> None:
        """The client's messages; raises what is wrong with one, or WebSocketDisconnect when the client leaves.
        It goes on listening after `end`, so a client that leaves while its last sentences play is noticed then,
        not at the next chunk sent into a closed connection."""
        started = ended = False
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if ended:
                raise ApiError(400, "no message may follow end")
            if message.get("text") is None:
                raise ApiError(400, "binary frames are not accepted: send JSON text messages")
            message = read_json(message["text"], "the message")
            kind = message.get("type")
            if kind == "start" and not started:
                start = StreamStart.model_validate(message)
                self.options = SynthesisOptions.model_validate(start.model_dump(exclude={"type"}))
                self.service.check_options(self.options)  # a field the family does not use: refused now
                await self.service.voice(self.options.voice)  # an unknown voice is refused now, not at a sentence
            elif kind == "text" and isinstance(message.get("text"), str) and set(message) == {"type", "text"}:
                try:
                    sentences = self.assembler.add(message["text"])
                except TextTooLong as e:
                    raise ApiError(413, str(e)) from None
                for sentence in sentences:
                    await self.sentences.put(sentence)
            elif kind == "end" and set(message) == {"type"}:
                for sentence in self.assembler.end():
                    await self.sentences.put(sentence)
                await self.sentences.put(None)
                ended = True
            else:
                raise ApiError(400, f"unexpected message {json.dumps(message)[:200]}: send start (first, once), "
                                    "text or end")
            started = True

    async def speak(self) -> int:
        """Synthesise each sentence as it is complete and send its audio; returns the number of chunks sent."""
        index = 0
        while (sentence := await self.sentences.get()) is not None:
            encoder = StreamEncoder("pcm", S3GEN_SR, self.options.speed)
            synthesis = await self.service.start(self.options, sentence)
            async for chunk in synthesis.chunks():
                await self.ws.send_bytes(encoder.encode(chunk.audio))
                m = chunk.metrics
                await self.ws.send_text(json.dumps({"type": "chunk", "index": index, "samples": len(chunk.audio),
                                                    "time_to_first_audio": m.time_to_first_audio, "rtf": m.rtf}))
                index += 1
            if tail := encoder.finish():
                await self.ws.send_bytes(tail)
        return index
