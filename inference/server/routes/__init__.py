"""The server's endpoints, one router per area; `inference.server.app.create_app` mounts them all."""
from . import models, speech, stream, voices

ROUTERS = (models.router, voices.router, speech.router, stream.router)

__all__ = ["ROUTERS"]
