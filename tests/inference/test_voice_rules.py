"""Voice building with per-family rules (inference/voice.py): Turbo's minimum length and loudness normalisation,
and the original rules giving exactly what the facade's current `prepare_conditionals_from_array` gives."""
from __future__ import annotations

import logging

import numpy as np
import pyloudnorm
import pytest
import torch

from inference.audio import AudioError
from inference.presets import synthetic_reference
from inference.voice import ORIGINAL_VOICE, TURBO_VOICE, build_conditionals, normalize_loudness

SR = 24000
TURBO_PROMPT_LEN = 375  # Turbo/Nano's speech_cond_prompt_len (kit 3.6)


def loudness(wav: np.ndarray, sample_rate: int = SR) -> float:
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(wav))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """7 s: longer than Turbo's 5 s minimum and than the original model's 6 s T3 window."""
    return synthetic_reference(SR, seconds=7.0)


@pytest.fixture(scope="module")
def turbo_voice(english, clip):
    trace: dict = {}
    conds = build_conditionals(clip, SR, s3gen=english.s3gen, ve=english.ve, prompt_len=TURBO_PROMPT_LEN,
                               rules=TURBO_VOICE, device=english.device, trace=trace)
    return conds, trace


def test_turbo_rules_are_the_reference_numbers() -> None:
    assert (TURBO_VOICE.t3_prompt_seconds, TURBO_VOICE.s3gen_prompt_seconds) == (15, 10)
    assert (TURBO_VOICE.min_seconds, TURBO_VOICE.loudness_lufs) == (5.0, -27.0)
    original = ORIGINAL_VOICE
    assert (original.t3_prompt_seconds, original.min_seconds, original.loudness_lufs) == (6, None, None)


@pytest.mark.parametrize(("seconds", "shown"), [(3.0, "3.0"), (5.0, "5.0"), (4.99, "4.990")])
def test_turbo_refuses_a_short_reference(english, clip, seconds, shown) -> None:
    """Not longer than 5 s is refused (the reference asserts > 5 s), before any model runs."""
    with pytest.raises(AudioError, match=rf"Turbo needs a reference longer than 5 s; got {shown} s"):
        build_conditionals(clip[: int(seconds * SR)], SR, s3gen=english.s3gen, ve=english.ve,
                           prompt_len=TURBO_PROMPT_LEN, rules=TURBO_VOICE)


def test_short_reference_at_another_rate_is_refused(english) -> None:
    with pytest.raises(AudioError, match="got 4.0 s"):
        build_conditionals(synthetic_reference(16000, seconds=4.0), 16000, s3gen=english.s3gen, ve=english.ve,
                           prompt_len=TURBO_PROMPT_LEN, rules=TURBO_VOICE)


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_loudness_reaches_the_target(clip, scale) -> None:
    wav = (clip * scale).astype(np.float32)
    out, gain = normalize_loudness(wav, SR, -27.0)
    assert out.dtype == np.float32
    assert abs(loudness(out) + 27.0) < 0.1
    assert gain == pytest.approx(10 ** ((-27.0 - loudness(wav)) / 20))
    assert np.array_equal(out, wav * np.float32(gain))  # one float32 product, as the reference under NumPy 1.x


@pytest.mark.parametrize("wav", [np.zeros(2 * SR, np.float32),  # silence: -inf LUFS
                                 (2e-4 * np.sin(np.arange(2 * SR) * 0.1)).astype(np.float32),  # under the -70 gate
                                 np.full(SR // 4, 0.1, np.float32)],  # shorter than one 400 ms block
                         ids=["silent", "below_gate", "too_short"])
def test_unmeasurable_clip_keeps_its_level(wav, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.voice"):
        out, gain = normalize_loudness(wav, SR, -27.0, source="quiet.wav")
    assert gain is None and out.dtype == np.float32 and np.array_equal(out, wav)
    assert "quiet.wav" in caplog.text and "level left as it is" in caplog.text


def test_turbo_voice_is_built_from_the_normalised_clip(turbo_voice, clip) -> None:
    conds, trace = turbo_voice
    wav = trace["wav_24k"]
    assert wav.dtype == np.float32 and trace["ref_16k"].dtype == np.float32
    assert abs(loudness(wav) + 27.0) < 0.1 and abs(loudness(clip) + 27.0) > 1  # the gain did something
    assert len(trace["ref_16k"]) == 7 * 16000
    # T3 prompt: all 7 s at 25 tokens/s (the original rules would stop at 6 s / 150 tokens)
    assert conds.t3.cond_prompt_speech_tokens.shape == (1, 175)
    assert conds.gen["prompt_feat"].shape == (1, 7 * 50, 80)  # S3Gen: under 10 s, the whole clip
    assert conds.t3.speaker_emb.shape == (1, 256) and torch.isfinite(conds.t3.speaker_emb).all()
    assert conds.t3.emotion_adv.item() == 0.5


def test_original_rules_give_what_the_facade_gives(english, clip) -> None:
    """Same tensors, bit for bit, as Chatterbox.prepare_conditionals_from_array (which the facade will delegate to
    build_conditionals): the refactor changes nothing for the original model. The input is at 22.05 kHz to go
    through the resampling step too."""
    import librosa

    wav = librosa.resample(clip, orig_sr=SR, target_sr=22050)
    saved = english.conds
    try:
        expected = english.prepare_conditionals_from_array(wav, 22050, exaggeration=0.3)
    finally:
        english.conds = saved
    got = build_conditionals(wav, 22050, s3gen=english.s3gen, ve=english.ve,
                             prompt_len=english.t3.cfg.speech_cond_prompt_len, rules=ORIGINAL_VOICE,
                             exaggeration=0.3, device=english.device)
    assert got.t3.cond_prompt_speech_tokens.shape == (1, 150)
    for name in ("speaker_emb", "cond_prompt_speech_tokens", "emotion_adv"):
        assert torch.equal(getattr(got.t3, name), getattr(expected.t3, name)), name
    assert got.gen.keys() == expected.gen.keys()
    for name, value in expected.gen.items():
        assert (value is None and got.gen[name] is None) or torch.equal(got.gen[name], value), name
