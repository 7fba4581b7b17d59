"""`GET /v1/voices` (the voices and what OpenAI's voice names play) and `POST /v1/voices` (an upload, multipart).

The upload's size is checked from its Content-Length before the body is read, so a large file is refused
without being received."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile

from ..errors import ApiError
from ..service import SpeechService, get_service

router = APIRouter()


@router.get("/v1/voices")
async def list_voices(service: SpeechService = Depends(get_service)):
    return {"voices": service.voices.names(),
            "openai_voices": {k: service.voice_name(k) for k in vars(service.cfg.openai_voices)}}


@router.post("/v1/voices", status_code=201)
async def add_voice(request: Request, service: SpeechService = Depends(get_service)):
    name, clip = await read_upload(request, service.cfg.max_upload_mb)
    await service.add_voice(name, clip)
    return {"voice": name}


async def read_upload(request: Request, max_mb: float) -> tuple[str, bytes]:
    """(voice name, clip bytes) of a multipart upload, or the reason it is refused."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "send the clip as multipart/form-data with the fields name=<voice name> and "
                            "file=<audio file>", "file")
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise ApiError(411, "send the upload with a Content-Length header")
    if int(length) > int(max_mb * 1e6):
        raise ApiError(413, f"the upload is {int(length) / 1e6:.1f} MB; this server takes at most {max_mb:g} MB",
                       "file")
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
        return name, await clip.read()
    finally:
        await form.close()
