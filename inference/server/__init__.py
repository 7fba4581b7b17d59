"""Speech server for many clients: OpenAI's speech API, named voices, text streamed in over a WebSocket.

    python -m inference.server --model tiny --host 127.0.0.1 --port 8000 [--voices DIR] [--max-batch 8] [key=value ...]

Any family serves: `--model ResembleAI/chatterbox-turbo`, a Nano folder, `tiny-turbo`, `synthetic-nano`, ...

Endpoints (errors are OpenAI's {"error": {"message", "type", "param", "code"}}):
  GET  /health (HEAD too)      {"status": "ok", ...} with the family and the batch and queue state
  GET  /v1/models              the model ids accepted as `model` (one model serves them all: `--model` as given, then
                               OpenAI's names), each with the `family` it is
  GET  /v1/voices              {"voices": [...], "openai_voices": {"alloy": "default", ...}}
  POST /v1/voices              multipart/form-data name=NAME file=@clip.wav -> a voice, saved into the voices folder
  POST /v1/audio/speech        OpenAI's request: model, input, voice, response_format (mp3 | opus | aac | flac | wav |
                               pcm; default mp3), speed (0.25-4, pitch kept), stream_format (audio | sse),
                               instructions (ignored); plus seed, temperature, cfg_weight, exaggeration, min_p, top_p,
                               top_k, repetition_penalty, language_id, chunk_size, stream (false: the whole file at
                               once). A field the family does not use (cfg_weight, exaggeration, min_p on Turbo/Nano;
                               top_k on English/multilingual) is a 400 naming it, unless unset or 0. Turbo's tags
                               ([chuckle], ...) reach its tokenizer as tags; an unknown one is a 400
  WS   /v1/audio/stream        {"type": "start", "voice", ...options} then {"type": "text", "text"}... then
                               {"type": "end"}; 16-bit 24 kHz PCM frames and {"type": "chunk"} messages come back
                               sentence by sentence while later text still arrives, then {"type": "done"}

Requests in flight are decoded by T3 as one batch (continuous batching: they join and leave at step boundaries);
S3Gen turns their tokens into audio chunk by chunk, the stream closest to running dry first (see engine.py). A
client that leaves cancels its request. With `api_key` set (or CHATTERBOX_API_KEY), every endpoint, the WebSocket
included, wants `Authorization: Bearer <key>`; web pages of other origins are refused unless in `cors_origins`, and
requests addressed to a host name other than localhost unless it is in `allowed_hosts` (DNS rebinding). On
SIGTERM, streams in progress get `shutdown_grace_seconds` to finish, then are cancelled.
"""
from __future__ import annotations

import logging
import os
import sys

from .config import SAMPLE_RATE, OpenAIVoices, ServerConfig

__all__ = ["SAMPLE_RATE", "OpenAIVoices", "ServerConfig", "main"]

log = logging.getLogger("inference.server")


def main(argv: list[str] | None = None) -> int:
    from ..settings import command_parser, parse_command

    parser = command_parser("python -m inference.server", ServerConfig, "server", __doc__.splitlines()[0])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _, cfg = parse_command(parser, argv, ServerConfig, "server")
        from ..adapters import is_adapter
        from ..loading import family_for

        if not is_adapter(cfg.model):  # an unknown or contradicting family is refused now; an adapter's is its base's
            family_for(cfg.model, cfg.multilingual, cfg.family or None)
    except (ValueError, FileNotFoundError) as e:  # before the model takes seconds to load
        print(f"error: {e}", file=sys.stderr)
        return 2
    api_key = cfg.api_key or os.environ.get("CHATTERBOX_API_KEY", "")

    import uvicorn

    from ..chatterbox import load_chatterbox
    from .app import create_app
    from .engine import Engine
    from .guard import body_limit
    from .voices import VoiceStore

    try:
        model = load_chatterbox(cfg.model, cfg.multilingual, cfg.device, cfg.adapter or None, cfg.t3_dtype,
                                cfg.s3gen_dtype, cfg.family or None, cfg.t3_model or None)
    except (ValueError, FileNotFoundError) as e:  # t3_model on another family, a mismatched adapter, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    model.setup_model()
    voices = VoiceStore(model, cfg.voices or None, cfg.allow_voice_overwrite)
    voices.load_folder()
    engine = Engine(model, cfg.max_batch, cfg.max_queue)
    log.info("serving %s (%s) on http://%s:%d (batch of %d, %s)", cfg.model, model.FAMILY.name, cfg.host, cfg.port,
             cfg.max_batch, "API key required" if api_key else "no API key: anyone who can connect may use it")
    uvicorn.run(create_app(engine, voices, cfg, api_key), host=cfg.host, port=cfg.port, log_level="info",
                ws_max_size=body_limit(cfg, "/v1/audio/stream"), timeout_graceful_shutdown=cfg.shutdown_grace_seconds)
    return 0
