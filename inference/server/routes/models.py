"""`GET /health` (the family, the batch and queue state, for load balancers and benchmarks) and `GET /v1/models`."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from ...models.s3gen.s3gen import S3GEN_SR
from ..service import SpeechService, get_service

MODEL_IDS = ("chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted as `model`; one model serves all

router = APIRouter()


@router.api_route("/health", methods=["GET", "HEAD"])  # load balancers probe with HEAD
async def health(service: SpeechService = Depends(get_service)):
    return {"status": "ok", "model": service.cfg.model, "family": service.model.FAMILY.name, "sample_rate": S3GEN_SR,
            "voices": len(service.voices.names()), "max_batch": service.cfg.max_batch, **service.engine.stats()}


@router.get("/v1/models")
async def models(service: SpeechService = Depends(get_service)):
    """OpenAI's list: the model as the server was started (`--model`), then the names OpenAI's clients send, each
    with the family that serves it (its settings and tags differ: README, "Models")."""
    ids = dict.fromkeys((service.cfg.model, *MODEL_IDS))  # --model may be one of OpenAI's names: listed once
    family = service.model.FAMILY.name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "chatterbox",
                                        "family": family} for name in ids]}
