"""`GET /health` (the batch and queue state, for load balancers and benchmarks) and `GET /v1/models`."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from ...models.s3gen.s3gen import S3GEN_SR
from ..service import SpeechService, get_service

MODEL_IDS = ("chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted as `model`; one model serves all

router = APIRouter()


@router.api_route("/health", methods=["GET", "HEAD"])  # load balancers probe with HEAD
async def health(service: SpeechService = Depends(get_service)):
    return {"status": "ok", "model": service.cfg.model, "sample_rate": S3GEN_SR, "voices": len(service.voices.names()),
            "max_batch": service.cfg.max_batch, **service.engine.stats()}


@router.get("/v1/models")
async def models():
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatterbox"}
                                       for name in MODEL_IDS]}
