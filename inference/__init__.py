"""Chatterbox inference: models, checkpoints and the user-facing synthesis classes."""

__all__ = ["ChatterboxTTS", "ChatterboxMultilingualTTS", "ChatterboxTurboTTS", "ChatterboxNanoTTS", "load_chatterbox"]


def __getattr__(name: str):
    # Lazy, so `python -m inference.parity` and friends do not pay for what they do not use.
    if name in __all__:
        from . import chatterbox

        return getattr(chatterbox, name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
