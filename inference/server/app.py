"""The server's web app: the endpoints (`routes/`) over one `SpeechService`, OpenAI-shaped errors, and in front
of everything the host, origin, API key and body size checks (`Guard`) and CORS."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .config import ServerConfig
from .engine import Engine
from .errors import add_error_handlers
from .guard import Guard
from .routes import ROUTERS
from .service import SpeechService
from .voices import VoiceStore


def create_app(engine: Engine, voices: VoiceStore, cfg: ServerConfig, api_key: str = "") -> FastAPI:
    app = FastAPI(title="Chatterbox workbench speech server")
    app.state.service = SpeechService(engine, voices, cfg)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(Guard, cfg=cfg, api_key=api_key)  # inside CORS: refusals get its headers
    app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Sample-Rate", "Retry-After"])
    return app
