"""A voice: T3 conditioning plus S3Gen's reference dictionary, saved as the official `conds.pt`."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .checkpoints import CheckpointError
from .models.t3 import T3Cond


@dataclass
class Conditionals:
    t3: T3Cond
    gen: dict  # prompt_token, prompt_token_len, prompt_feat, prompt_feat_len, embedding (S3Gen.embed_ref)

    def to(self, device) -> "Conditionals":
        gen = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.gen.items()}
        return Conditionals(self.t3.to(device=device), gen)

    def save(self, path: str | Path) -> None:
        t3 = {f.name: getattr(self.t3, f.name) for f in fields(self.t3)}
        torch.save({"t3": t3, "gen": dict(self.gen)}, Path(path))

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "Conditionals":
        try:
            data = torch.load(Path(path), map_location=map_location, weights_only=True)
            t3 = T3Cond(**data["t3"])
            return cls(t3, dict(data.get("gen") or {}))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path} is not a Chatterbox conditionals file ({type(e).__name__}: {e})") from e
