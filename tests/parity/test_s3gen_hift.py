"""HiFT vocoder (`mel2wav.`): official layout, golden parity, explicit randomness, input checks, old key names."""
import json

import pytest
import torch

from inference.models.s3gen.hifigan import HiFTConfig, HiFTGenerator, draw_source_randomness, remap_weight_norm_keys
from inference.parity.golden import load_golden
from inference.parity.cases import synthetic_s3gen

PREFIX = "mel2wav."


def synthetic_vocoder():
    return synthetic_s3gen().mel2wav

CASE = "s3gen_hift"


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the goldens were computed with 2 threads
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def golden(parity_dir):
    return load_golden(parity_dir / "golden" / f"{CASE}.safetensors")


def test_state_dict_matches_manifest(parity_dir):
    manifest = json.loads((parity_dir / "manifests" / "s3gen.json").read_text())
    expected = {k.removeprefix(PREFIX): v for k, v in manifest.items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        module = HiFTGenerator()
    ours = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in module.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:10]}, unexpected {unexpected[:10]}"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape/dtype differences: {list(wrong.items())[:5]}"
    assert len(ours) == 328
    assert sum(p.numel() for p in module.parameters()) == 20_821_295



def test_seeded_generator_replays_the_recorded_draws(golden):
    """Same draw order as the reference, so a generator seeded like its global RNG gives the stored draws."""
    t = golden.tensors
    seeded = torch.Generator().manual_seed(int(golden.meta["seed"]))
    phase, noise = draw_source_randomness(1, t["sine_randn"].shape[-1], HiFTConfig(), seeded)
    assert torch.equal(phase, t["sine_phase"]) and torch.equal(noise, t["sine_randn"])
    wav, source = synthetic_vocoder().inference(
        t["mel"], generator=torch.Generator().manual_seed(int(golden.meta["seed"])))
    explicit = synthetic_vocoder().synthesize(t["mel"], t["sine_phase"], t["sine_randn"])
    assert torch.equal(wav, explicit.wav) and torch.equal(source, explicit.source)


def test_batch_rows_are_independent_and_shapes_follow_frames():
    vocoder = synthetic_vocoder()
    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, 80, 3, generator=gen) - 4.0
    phase, noise = draw_source_randomness(2, 3 * 480, vocoder.cfg, gen)
    both = vocoder.synthesize(mel, phase, noise)
    assert both.wav.shape == (2, 1440) and both.source.shape == (2, 1, 1440)
    assert both.f0.shape == (2, 3) and both.uv.shape == (2, 1, 1440)
    assert both.wav.abs().max() <= vocoder.cfg.audio_limit
    one = vocoder.synthesize(mel[1:], phase[1:], noise[1:])
    torch.testing.assert_close(one.wav, both.wav[1:], atol=1e-5, rtol=0)
    cached = vocoder.synthesize(mel, phase, noise, cache_source=torch.zeros(2, 1, 100))
    assert torch.equal(cached.source[..., :100], torch.zeros(2, 1, 100))
    assert torch.equal(cached.source[..., 100:], both.source[..., 100:])


@pytest.mark.parametrize("make_inputs, message", [
    (lambda: (torch.zeros(80, 10),), "mel must have shape"),
    (lambda: (torch.zeros(1, 40, 10),), "mel must have shape"),
    (lambda: (torch.zeros(1, 80, 0),), "mel must have shape"),
    (lambda: (torch.zeros(1, 80, 10, dtype=torch.long),), "floating-point"),
    (lambda: (torch.full((1, 80, 10), float("nan")),), "NaN"),
    (lambda: (torch.zeros(1, 80, 10), torch.zeros(1, 8, 1)), "phase must have shape"),
    (lambda: (torch.zeros(1, 80, 10), None, torch.zeros(1, 9, 4799)), "noise must have shape"),
])
def test_bad_input_raises_value_error(make_inputs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_vocoder().inference(*make_inputs())


def test_bad_cache_source_raises_value_error():
    with pytest.raises(ValueError, match="cache_source"):
        synthetic_vocoder().inference(torch.zeros(1, 80, 2), cache_source=torch.zeros(1, 1, 961))


def test_old_weight_norm_names_are_remapped_and_load():
    current = synthetic_vocoder().state_dict()
    old = {}
    for key, value in current.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        old[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    assert any(k.endswith(".weight_g") for k in old) and any(k.endswith(".weight_v") for k in old)
    remapped = remap_weight_norm_keys(old)
    assert list(remapped) == list(current)
    assert all(remapped[k] is current[k] for k in current)
    fresh = HiFTGenerator()
    fresh.load_state_dict(remapped, strict=True)
    assert torch.equal(fresh.conv_post.weight, synthetic_vocoder().conv_post.weight)
    assert remap_weight_norm_keys({"a.bias": current["conv_pre.bias"]}) == {"a.bias": current["conv_pre.bias"]}


def test_remap_rejects_both_spellings_of_one_weight():
    v = torch.zeros(2, 1, 1)
    with pytest.raises(ValueError, match="twice"):
        remap_weight_norm_keys({"conv.weight_g": v, "conv.parametrizations.weight.original0": v})

