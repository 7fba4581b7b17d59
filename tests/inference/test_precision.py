"""Reduced-precision options (inference.precision): what they change, how far their output is from float32's,
and that the user's way of choosing them (load_chatterbox, [tts] / [server] t3_dtype, s3gen_dtype) works.
Speed is measured in bench/t3_precision.py and bench/end_to_end.py, not here."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from inference.chatterbox import load_chatterbox
from inference.models.s3gen.s3gen import RefDict
from inference.models.t3 import T3, SamplingConfig, T3Cond, T3Config
from inference.precision import check_dtypes, set_t3_dtype
from inference.presets import tiny_t3
from inference.server.config import ServerConfig
from inference.stream_quality import snr_db
from inference.streaming import last_prompt_tokens


def cond_and_text(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cond = T3Cond(torch.rand(1, 256, generator=g), torch.randint(0, 6561, (1, 40), generator=g),
                  torch.full((1, 1, 1), 0.5))
    text = torch.cat([torch.tensor([[255]]), torch.randint(1, 600, (1, 30), generator=g), torch.tensor([[0]])], 1)
    return cond, text


def logits(model: T3, cond, text) -> torch.Tensor:
    speech = torch.randint(0, 6561, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = model(cond, text, torch.tensor([text.shape[1]]), speech, torch.tensor([20]))
    return out.speech_logits.float()


@pytest.mark.parametrize("dtype, bound, agreement", [("bfloat16", 0.03, 0.95), ("int8", 0.1, 0.7)])
def test_reduced_t3_logits_stay_close_to_float32(dtype, bound, agreement):
    """Mean logit error against the logits' spread, and how often the best speech token agrees. Measured on the
    tiny preset: bfloat16 1.3 % and 100 %, int8 5.5 % and 80 % (full size, bench/RESULTS.md: 1.4 % / 100 % and
    6.7 % / 92 %; random weights give nearly flat logits, so the argmax flips easily)."""
    base = tiny_t3()
    cond, text = cond_and_text()
    want = logits(base, cond, text)
    reduced = set_t3_dtype(copy.deepcopy(base), dtype)
    got = logits(reduced, cond, text)
    relative = float((got - want).abs().mean() / want.std())
    assert 0 < relative < bound, relative
    assert float((got.argmax(-1) == want.argmax(-1)).float().mean()) >= agreement


def test_int8_replaces_every_linear_layer_and_keeps_embeddings():
    model = set_t3_dtype(tiny_t3(), "int8")
    assert not any(type(m) is nn.Linear for m in model.modules())
    quantized = [m for m in model.modules() if type(m).__name__ == "Linear" and type(m) is not nn.Linear]
    assert len(quantized) >= 7 * T3Config.tiny().num_layers  # q k v o gate up down per layer, plus the heads
    assert model.speech_emb.weight.dtype == torch.float32 and model.device.type == "cpu"
    tokens = list(model.generate_tokens(*cond_and_text(), SamplingConfig(max_new_tokens=12),
                                        generator=torch.Generator().manual_seed(0)))
    assert len(tokens) >= 1 and all(0 <= t < model.cfg.speech_vocab_size for t in tokens)


def test_bad_precision_choices_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="float32, bfloat16, float16, int8"):
        check_dtypes("int4", "float32")
    with pytest.raises(ValueError, match="s3gen_dtype must be one of float32, bfloat16"):
        check_dtypes("float32", "int8")
    with pytest.raises(ValueError, match="t3_dtype"):
        ServerConfig(t3_dtype="fp8")
    with pytest.raises(ValueError, match="CPU only"):
        set_t3_dtype(T3(T3Config.tiny(), init_weights=False).to("meta"), "int8")


def test_flow_in_bfloat16_stays_close_to_float32(english):
    """The flow's mel with autocast bfloat16 against float32 on the same tokens and noise (full-size synthetic
    S3Gen: about 40 dB), and the ODE state stays float32."""
    s3gen, ref = english.s3gen, last_prompt_tokens(RefDict.from_dict(english.conds.gen), 25)
    tokens = torch.randint(0, 6561, (30,), generator=torch.Generator().manual_seed(2))
    noise = torch.randn(1, 80, ref.prompt_feat.shape[1] + 60, generator=torch.Generator().manual_seed(3))
    want = s3gen.flow_inference(tokens, ref, noise=noise)
    try:
        s3gen.set_flow_dtype(torch.bfloat16)
        got = s3gen.flow_inference(tokens, ref, noise=noise)
    finally:
        s3gen.set_flow_dtype(torch.float32)
    assert got.dtype == torch.float32 and got.shape == want.shape
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        s3gen.set_flow_dtype(torch.float16)
    assert 25 < snr_db(want.numpy(), got.numpy()) < 80  # close, and not silently float32


def test_load_chatterbox_with_the_fast_settings_streams():
    model = load_chatterbox("tiny", t3_dtype="int8", s3gen_dtype="bfloat16")
    assert model.s3gen.flow_dtype == torch.bfloat16
    assert not any(type(m) is nn.Linear for m in model.t3.modules())
    chunks = list(model.generate_stream("Fast settings.", seed=1, max_new_tokens=16, chunk_size=8,
                                        prompt_tokens=10))
    audio = np.concatenate([c.audio for c in chunks])
    assert len(audio) > 0 and np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_vocoder_filter_in_bfloat16_stays_close_to_float32(english):
    """s3gen_dtype bfloat16 also runs the vocoder's convolutions under autocast: the waveform from the same mel
    and source stays near float32's (measured 34 dB on the synthetic vocoder), in float32, not silently equal."""
    s3gen = english.s3gen
    mel = torch.randn(1, 80, 60, generator=torch.Generator().manual_seed(4))

    def vocode():
        return s3gen.vocode(mel, generator=torch.Generator().manual_seed(5))[0]

    want = vocode()
    try:
        s3gen.set_flow_dtype(torch.bfloat16)
        assert s3gen.mel2wav.filter_dtype == torch.bfloat16
        got = vocode()
    finally:
        s3gen.set_flow_dtype(torch.float32)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert 25 < snr_db(want.numpy(), got.numpy()) < 80
    torch.testing.assert_close(vocode(), want, atol=0, rtol=0)  # float32 again: the parity path
