"""How each kind of golden case is run. A case's kind is recognised from the tensors it holds, so
new golden files of a known format run without changes here."""
from __future__ import annotations

from typing import Callable

import torch

from ..audio import resample
from ..models.s3gen.s3gen import RefDict, S3Gen
from ..models.s3gen.xvector import kaldi_fbank
from ..models.t3 import T3, T3Cond, T3Config, SamplingConfig
from ..models.t3.config import MULTILINGUAL_TEXT_VOCAB
from ..models.t3.sampling import logits_pipeline
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


def _gpt2_t3(g: Golden) -> T3 | None:
    """Turbo / Nano cases name their backbone (GPT2_medium, GPT2_medium_2layer, GPT2_small) in the metadata."""
    backbone = g.meta.get("backbone", "")
    if not backbone.startswith("GPT2"):
        return None
    base = T3Config.nano() if backbone.startswith("GPT2_small") else T3Config.turbo()
    cfg = base.replace(num_layers=int(g.meta.get("gpt2_layers", base.num_layers)))
    return _synthetic(("t3", cfg.backbone, cfg.hidden_size, cfg.num_layers), lambda: T3(cfg, init_weights=False))


def _t3(g: Golden) -> T3:
    if (gpt2 := _gpt2_t3(g)) is not None:
        return gpt2
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


@torch.no_grad()
def run_t3_gpt2_forward(g: Golden) -> dict:
    """Turbo / Nano teacher forcing; the kit stores a slice of the outputs (kit 5.12)."""
    t = g.tensors
    out = _t3(g)(T3Cond(t["speaker_emb"], t["cond_prompt_speech_tokens"], 0.5), t["text_tokens"],
                 t["text_token_lens"], t["speech_tokens"], t["speech_token_lens"])
    return {"cond_emb_head": out.cond_emb[:, :t["cond_emb_head"].shape[1]],
            "hidden_last_b0": out.hidden_states[0, t["hidden_positions"]],
            "text_logits_sliced": out.text_logits[..., t["text_logit_cols"]], "speech_logits": out.speech_logits}


def _sampling(g: Golden, **extra) -> SamplingConfig:
    params = g.params()
    params.pop("max_gen_len", None)  # Turbo's name for the loop length; the number of tokens is given instead
    return SamplingConfig(**{**params, **extra})


def run_t3_inference(g: Golden) -> dict:
    t = g.tensors
    model = _t3(g)
    forced = iter(t["tokens"].tolist())
    traces = []
    sampling = _sampling(g, max_new_tokens=len(t["tokens"]))
    if model.cfg.is_gpt2:
        sampling = _sampling(g, max_new_tokens=len(t["tokens"]), cfg_weight=0.0, min_p=0.0)
    cond = T3Cond(t["speaker_emb"], t["cond_prompt_speech_tokens"], t["emotion_adv"] if "emotion_adv" in t else 0.5)
    tokens = list(model.generate_tokens(cond, t["text_tokens"][:1], sampling,
                                        choose=lambda probs: next(forced), on_step=traces.append))
    out = {"step_logits": torch.stack([s.step_logits[0] for s in traces]) if model.cfg.is_gpt2
           else torch.stack([s.step_logits for s in traces]),
           "probs": torch.cat([s.stages["probs"] for s in traces]), "tokens": torch.tensor(tokens)}
    if model.cfg.is_gpt2:
        out["processed_logits"] = torch.cat([s.stages["processed_logits"] for s in traces])
    return out


def run_t3_sampling(g: Golden) -> dict:
    t = g.tensors
    turbo = t["backbone_logits"].ndim == 2  # (steps, V): no unconditional rows
    if turbo:
        cond_logits, uncond_logits = t["backbone_logits"], None
        t3_cfg, sampling = T3Config.turbo(), _sampling(g, cfg_weight=0.0, min_p=0.0)
    else:
        (cond_logits, uncond_logits), t3_cfg, sampling = t["backbone_logits"], T3Config(), _sampling(g)
    pipeline = logits_pipeline(t3_cfg, sampling)
    history = [t3_cfg.start_speech_token]
    stages: dict[str, list] = {}
    for k, token in enumerate(t["forced_tokens"].tolist()):
        trace: dict = {}
        pipeline(cond_logits[k:k + 1], None if turbo else uncond_logits[k:k + 1], torch.tensor([history]), trace)
        for name, value in trace.items():
            stages.setdefault(name, []).append(value)
        last_history = list(history)
        # Turbo's history is the tokens made so far (the start token only at step 0)
        history = history[1:] + [token] if turbo and k == 0 else history + [token]
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


def synthetic_s3gen(meanflow: bool = False) -> S3Gen:
    """The whole S3Gen (`meanflow`: the Turbo / Nano variant) with synthetic weights, built once per process
    (~1 GB)."""
    return _synthetic(("s3gen", meanflow), lambda: S3Gen(meanflow=meanflow))


def _s3gen_parts() -> S3Gen:
    """For the tokenizer, x-vector and vocoder cases: both variants hold the same weights there, so whichever
    is built serves (no rebuild when meanflow and original cases alternate)."""
    for meanflow in (False, True):
        if ("s3gen", meanflow) in _cache:
            return _cache[("s3gen", meanflow)]
    return synthetic_s3gen()


def _is_meanflow(g: Golden) -> bool:
    return g.meta.get("meanflow") == "True" or "ode_r" in g.tensors


def _ref(t: dict, prefix: str = "") -> RefDict:
    return RefDict(t[prefix + "prompt_token"], t[prefix + "prompt_token_len"], t[prefix + "prompt_feat"],
                   t[prefix + "embedding"])


@torch.no_grad()
def run_s3tokenizer(g: Golden) -> dict:
    tok = _s3gen_parts().tokenizer
    wav = g.tensors["wav_16k"]
    trace: dict = {}
    tokens, lens = tok([wav], trace=trace)
    n_mel, n_tok = int(trace["mel_lens"][0]), int(lens[0])
    short, short_lens = tok([wav], max_len=50)
    return {"log_mel": trace["log_mel"][0, :, :n_mel], "encoder_out": trace["encoder_out"][0, :n_tok],
            "fsq_proj": trace["fsq_proj"][0, :n_tok], "tokens": tokens, "token_lens": lens,
            "tokens_max_len_50": short, "token_lens_max_len_50": short_lens, "mel_filters": tok._mel_filters}


@torch.no_grad()
def run_campplus(g: Golden) -> dict:
    wav = g.tensors["wav_16k"]
    fbank = kaldi_fbank(wav.reshape(-1, wav.shape[-1])[0])
    return {"fbank": fbank - fbank.mean(dim=0, keepdim=True),
            "embedding": _s3gen_parts().speaker_encoder.inference(wav)}


def run_embed_ref(g: Golden) -> dict:
    wav = g.tensors["wav_24k"]
    ref = _s3gen_parts().embed_ref(wav, 24000)
    return {"wav_16k_resampled": resample(wav[None], 24000, 16000)[0], "prompt_token": ref.prompt_token,
            "prompt_token_len": ref.prompt_token_len, "prompt_feat": ref.prompt_feat, "embedding": ref.embedding}


def run_flow(g: Golden) -> dict:
    """Token-to-mel with the golden start noise; the meanflow variant also reports the mixed time embedding
    each estimator call used (caught at the mixer, so it is the one the U-Net saw)."""
    t = g.tensors
    trace: dict = {}
    s3 = synthetic_s3gen(_is_meanflow(g))
    mixed: list[torch.Tensor] = []
    mixer = s3.flow.decoder.estimator.time_embed_mixer
    hook = mixer.register_forward_hook(lambda _m, _i, out: mixed.append(out)) if mixer is not None else None
    try:
        mel = s3.flow.inference(t["speech_tokens"], t["prompt_token"], t["prompt_feat"], t["embedding"],
                                noise=t["noise"], trace=trace, n_steps=int(g.meta.get("n_timesteps", 0)) or None)
    finally:
        if hook is not None:
            hook.remove()
    if mixed:
        trace["time_emb_mixed"] = torch.cat(mixed)
    return {"mel": mel, **trace}


def run_hift(g: Golden) -> dict:
    t = g.tensors
    out = _s3gen_parts().mel2wav.synthesize(t["mel"], phase=t["sine_phase"], noise=t["sine_randn"])
    return {"f0": out.f0, "uv": out.uv, "source": out.source, "wav": out.wav}


def run_s3gen_e2e(g: Golden) -> dict:
    """`S3Gen.inference` in its two stages, so the mel between them (which meanflow files hold) is reported too."""
    t = g.tensors
    s3 = synthetic_s3gen(_is_meanflow(g))
    mel = s3.flow_inference(t["speech_tokens"], _ref(t), noise=t["flow_noise"],
                            n_timesteps=int(g.meta.get("n_timesteps", 0)) or None)
    wav = s3.vocode(mel, sine_phase=t["sine_phase"], sine_noise=t["sine_randn"])
    return {"mel": mel, "wav": wav}


def run_conditionals(g: Golden) -> dict:
    """`prepare_conditionals` on a float WAV holding the golden clip, all parts synthetic."""
    import tempfile
    from pathlib import Path

    import librosa
    import soundfile as sf

    from .. import presets
    from ..chatterbox import ChatterboxTTS

    wav = g.tensors["wav_24k"].numpy()
    tts = ChatterboxTTS(presets.tiny_t3(), synthetic_s3gen(), fill_synthetic(VoiceEncoder()).eval(),
                        presets.tiny_tokenizer())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.wav"
        sf.write(str(path), wav, 24000, subtype="FLOAT")
        conds = tts.prepare_conditionals(path, exaggeration=0.5)
    return {"ref_16k_librosa": torch.from_numpy(librosa.resample(wav, orig_sr=24000, target_sr=16000)),
            "t3_speaker_emb": conds.t3.speaker_emb, "t3_cond_prompt_speech_tokens": conds.t3.cond_prompt_speech_tokens,
            "t3_emotion_adv": conds.t3.emotion_adv, "gen_prompt_token": conds.gen["prompt_token"],
            "gen_prompt_token_len": conds.gen["prompt_token_len"], "gen_prompt_feat": conds.gen["prompt_feat"],
            "gen_embedding": conds.gen["embedding"]}


def run_turbo_conditionals(g: Golden) -> dict:
    """Turbo's `prepare_conditionals` (kit 5.17) through `inference.voice` with Turbo's rules, all parts synthetic.
    The plain S3Gen serves: `embed_ref` does not reach the meanflow decoder, and the keys both share hold the same
    synthetic values."""
    from ..voice import TURBO_VOICE, build_conditionals

    trace: dict = {}
    conds = build_conditionals(g.tensors["wav_24k"].numpy(), 24000, s3gen=synthetic_s3gen(),
                               ve=fill_synthetic(VoiceEncoder()).eval(), prompt_len=T3Config.turbo().speech_cond_prompt_len,
                               rules=TURBO_VOICE, exaggeration=0.5, trace=trace)
    gain = trace["loudness_gain"]
    return {"loudness_gain": torch.tensor([gain if gain is not None else float("nan")], dtype=torch.float32),
            "wav_24k_norm": torch.from_numpy(trace["wav_24k"]), "ref_16k_librosa": torch.from_numpy(trace["ref_16k"]),
            "t3_speaker_emb": conds.t3.speaker_emb, "t3_cond_prompt_speech_tokens": conds.t3.cond_prompt_speech_tokens,
            "t3_emotion_adv": conds.t3.emotion_adv,
            **{f"gen_{k}": conds.gen[k] for k in ("prompt_token", "prompt_token_len", "prompt_feat", "embedding")}}


def _utf8_strings(data: torch.Tensor, offsets: torch.Tensor) -> list[str]:
    raw, bounds = bytes(data.to(torch.uint8).tolist()), offsets.tolist()
    return [raw[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]


def _utf8_tensors(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = [0]
    for e in encoded:
        offsets.append(offsets[-1] + len(e))
    return torch.tensor(list(b"".join(encoded)), dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64)


def run_turbo_text_norm(g: Golden) -> dict:
    """Turbo's `punc_norm` (kit 5.18) on each string of the file."""
    from ..models.tokenizers.turbo import turbo_punc_norm

    texts = _utf8_strings(g.tensors["input_utf8"], g.tensors["input_offsets"])
    data, offsets = _utf8_tensors([turbo_punc_norm(t) for t in texts])
    return {"output_utf8": data, "output_offsets": offsets}


# (tensors that identify the format, runner); the first whose tensors are all present wins
KINDS: list[tuple[set[str], Callable[[Golden], dict]]] = [
    ({"text_logits", "speech_logits", "cond_emb"}, run_t3_forward),
    ({"text_logits_sliced", "speech_logits", "cond_emb_head"}, run_t3_gpt2_forward),
    ({"step_logits", "probs", "tokens"}, run_t3_inference),
    ({"backbone_logits", "forced_tokens"}, run_t3_sampling),
    ({"partial_embeds", "wav_16k"}, run_ve_embed),
    ({"log_mel", "fsq_proj"}, run_s3tokenizer),
    ({"fbank", "embedding", "wav_16k"}, run_campplus),
    ({"loudness_gain", "wav_24k_norm", "gen_prompt_feat"}, run_turbo_conditionals),
    ({"t3_speaker_emb", "gen_prompt_feat"}, run_conditionals),
    ({"input_utf8", "input_offsets", "output_utf8"}, run_turbo_text_norm),
    ({"wav_16k_resampled", "wav_24k"}, run_embed_ref),
    ({"estimator_out_step0", "ode_t"}, run_flow),
    ({"estimator_out", "ode_t", "ode_r"}, run_flow),
    ({"sine_randn", "source"}, run_hift),
    ({"flow_noise", "sine_randn", "wav"}, run_s3gen_e2e),
]


def _runner(g: Golden) -> Callable[[Golden], dict] | None:
    names = set(g.tensors)
    return next((runner for required, runner in KINDS if required <= names), None)


def run_case(g: Golden) -> dict:
    runner = _runner(g)
    if runner is None:
        raise UnsupportedCase(f"unrecognised golden format (tensors: {sorted(g.tensors)})")
    return runner(g)
