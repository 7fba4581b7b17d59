"""Chatterbox inference: models, checkpoints and the user-facing synthesis classes."""
