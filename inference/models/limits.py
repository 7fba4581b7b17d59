"""The allowed values of every sampling and streaming setting, in one table.

SamplingConfig, StreamConfig and the config sections that carry these settings (`[tts]`, `[server]`,
`[evaluation.stream]`) check their fields against it; the server's request schema takes its pydantic bounds from
it. It sits below all of them (SamplingConfig is a model part, and models import nothing above them).

A server may hold its clients to a narrower range than the model takes (`request`): a temperature of 50 is
valid but a request asking for it is refused, as are longer-than-useful chunks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

STRATEGIES = ("incremental", "window")
FADES = ("linear", "hann", "equal_power")
WHOLE_PROMPT = 0  # prompt_tokens in a config file or on a command line (TOML has no None): the whole voice prompt


@dataclass(frozen=True)
class Limit:
    """Bounds with pydantic's names (`ge` >=, `gt` >, `le` <=) or a list of `choices`; None always passes (it
    stands for the default). `note` is added to the refusal."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    request: Limit | None = None  # what a server's client may ask for (None: the same)
    note: str = ""

    def allows(self, value) -> bool:
        if value is None:
            return True
        if self.choices:
            return value in self.choices
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    def __str__(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        if low is not None and self.le is not None:
            return f"in {low}, {self.le:g}]"
        if low is not None:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        return f"<= {self.le:g}"

    def pydantic(self) -> dict[str, float]:
        """The request bounds as keyword arguments of pydantic's `Field`."""
        limit = self.request or self
        return {k: v for k, v in (("ge", limit.ge), ("gt", limit.gt), ("le", limit.le)) if v is not None}


LIMITS: dict[str, Limit] = {
    # sampling (SamplingConfig)
    "temperature": Limit(gt=0.0, request=Limit(ge=0.05, le=5.0)),
    "top_p": Limit(gt=0.0, le=1.0),
    "min_p": Limit(ge=0.0, le=1.0),
    "repetition_penalty": Limit(gt=0.0, request=Limit(ge=1.0, le=10.0)),
    "cfg_weight": Limit(ge=0.0, request=Limit(ge=0.0, le=10.0)),
    "max_new_tokens": Limit(ge=1),
    "top_k": Limit(ge=0, note="0 turns top-k off"),
    # conditioning
    "exaggeration": Limit(ge=0.0, request=Limit(ge=0.0, le=3.0)),
    # streaming (StreamConfig), sizes in speech tokens
    "strategy": Limit(choices=STRATEGIES),
    "fade": Limit(choices=FADES),
    "chunk_size": Limit(ge=1, request=Limit(ge=4, le=200)),
    "context_window": Limit(ge=0),
    "left_context": Limit(ge=0),
    "hold_tokens": Limit(ge=0),
    "prompt_tokens": Limit(ge=1, note=f"None, or {WHOLE_PROMPT} in a config file: the whole voice prompt"),
}


def check_limits(values: Mapping[str, object], where: str = "") -> None:
    """Refuse the first of `values` (setting name -> value) outside its row of LIMITS; names without a row pass."""
    for name, value in values.items():
        limit = LIMITS.get(name)
        if limit is not None and not limit.allows(value):
            note = f" ({limit.note})" if limit.note else ""
            raise ValueError(f"{where}{name} must be {limit}{note}, got {value!r}")


def prompt_tokens_setting(value: int | None) -> int | None:
    """A config file's prompt_tokens as StreamConfig takes it: WHOLE_PROMPT becomes None."""
    return None if value == WHOLE_PROMPT else value
