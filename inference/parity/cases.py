"""How each kind of golden case is run. A case's kind is recognised from the tensors it holds, so
new golden files of a known format run without changes here."""
from __future__ import annotations

from typing import Callable

import torch

from ..models.t3 import T3, T3Cond, T3Config, SamplingConfig
from ..models.t3.config import MULTILINGUAL_TEXT_VOCAB
from ..models.t3.sampling import LogitsPipeline
from ..models.voice_encoder import VoiceEncoder
from ..synthetic import fill_synthetic
from .golden import Golden


class UnsupportedCase(Exception):
    """The golden file is of a format this runner cannot execute."""


_cache: dict = {}


def _synthetic(key, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build + fill once per process; one model at a time so two full T3s never coexist."""
    if key not in _cache:
        _cache.clear()
        _cache[key] = fill_synthetic(build()).eval()
    return _cache[key]


def _t3(g: Golden) -> T3:
    vocab = g.meta.get("text_vocab")
    if vocab is None and "text_logits" in g.tensors:
        vocab = g.tensors["text_logits"].shape[-1]
    if vocab is None:
        multilingual = g.meta.get("alignment_analyzer") == "True" or "mtl" in g.case
        vocab = MULTILINGUAL_TEXT_VOCAB if multilingual else T3Config().text_vocab_size
    base = T3Config.multilingual() if int(vocab) == MULTILINGUAL_TEXT_VOCAB else T3Config.english()
    cfg = base.replace(num_layers=int(g.meta.get("llama_layers", base.num_layers)))
    return _synthetic(("t3", cfg.text_vocab_size, cfg.num_layers), lambda: T3(cfg, init_weights=False))


def _cond(g: Golden) -> T3Cond:
    t = g.tensors
    return T3Cond(t["speaker_emb"], t["cond_prompt_speech_tokens"], t["emotion_adv"])


@torch.no_grad()
def run_t3_forward(g: Golden) -> dict:
    t = g.tensors
    out = _t3(g)(_cond(g), t["text_tokens"], t["text_token_lens"], t["speech_tokens"], t["speech_token_lens"])
    return {"cond_emb": out.cond_emb, "hidden_last_b0": out.hidden_states[0],
            "text_logits": out.text_logits, "speech_logits": out.speech_logits}


def run_t3_inference(g: Golden) -> dict:
    t = g.tensors
    model = _t3(g)
    forced = iter(t["tokens"].tolist())
    traces = []
    sampling = SamplingConfig(max_new_tokens=len(t["tokens"]), **g.params())
    tokens = list(model.generate_tokens(_cond(g), t["text_tokens"][:1], sampling,
                                        choose=lambda probs: next(forced), on_step=traces.append))
    return {"step_logits": torch.stack([s.step_logits for s in traces]),
            "probs": torch.cat([s.stages["probs"] for s in traces]),
            "tokens": torch.tensor(tokens)}


def run_t3_sampling(g: Golden) -> dict:
    t = g.tensors
    cond_logits, uncond_logits = t["backbone_logits"]  # (steps, V) each
    start = T3Config().start_speech_token
    pipeline = LogitsPipeline(SamplingConfig(**g.params()))
    history = [start]
    stages: dict[str, list] = {}
    for k, token in enumerate(t["forced_tokens"].tolist()):
        trace: dict = {}
        pipeline(cond_logits[k:k + 1], uncond_logits[k:k + 1], torch.tensor([history]), trace)
        for name, value in trace.items():
            stages.setdefault(name, []).append(value)
        last_history = list(history)
        history.append(token)
    out = {name: torch.cat(values) for name, values in stages.items()}
    out["generated_ids_last_step"] = torch.tensor(last_history)
    return out


def run_ve_embed(g: Golden) -> dict:
    ve = _synthetic(("ve",), VoiceEncoder)
    trace: list = []
    emb = ve.embed_utterance(g.tensors["wav_16k"].numpy(), 16000, trace=trace)
    tr = trace[0]
    return {"trim_interval": torch.tensor(tr.trim_interval), "mel": torch.from_numpy(tr.mel),
            "partials": tr.partials, "partial_embeds": tr.partial_embeds, "embedding": emb[None]}


# (tensors that identify the format, runner)
KINDS: list[tuple[set[str], Callable[[Golden], dict]]] = [
    ({"text_logits", "speech_logits", "cond_emb"}, run_t3_forward),
    ({"step_logits", "probs", "tokens"}, run_t3_inference),
    ({"backbone_logits", "forced_tokens"}, run_t3_sampling),
    ({"partial_embeds", "wav_16k"}, run_ve_embed),
]

# Formats of the kit this version recognises but does not implement yet (S3Gen: next milestone).
PENDING = [
    {"log_mel", "fsq_proj"}, {"fbank", "embedding"}, {"prompt_feat", "wav_24k"},
    {"estimator_out_step0", "ode_t"}, {"sine_randn", "source"}, {"flow_noise", "wav"},
    {"t3_speaker_emb", "gen_prompt_feat"},
]


def run_case(g: Golden) -> dict:
    names = set(g.tensors)
    for required, runner in KINDS:
        if required <= names:
            return runner(g)
    if any(p <= names for p in PENDING):
        raise UnsupportedCase("S3Gen cases are not implemented yet")
    raise UnsupportedCase(f"unrecognised golden format (tensors: {sorted(names)})")
