"""The meanflow S3Gen (Turbo / Nano, kit sections 3.5, 5.15-5.16, 7.10): its state-dict layout, its solver (linear
grid, x += (r - t) v, no guidance), its start noise in the reference's draw order, the two golden cases, and the
streaming entry points on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from inference.models.s3gen.decoder import ConditionalDecoder, timestep_embedding
from inference.models.s3gen.flow import FlowConfig, FlowMatching, MeanFlowMatching
from inference.models.s3gen.hifigan import draw_source_randomness
from inference.models.s3gen.s3gen import RefDict, S3Gen
from inference.models.rates import TOKEN_SAMPLES
from inference.parity import run_file
from inference.parity.cases import synthetic_s3gen
from inference.parity.golden import load_golden
from inference.streaming import StreamConfig, make_streamer

MIXER = "flow.decoder.estimator.time_embed_mixer.weight"


@pytest.fixture(scope="module")
def meta_models() -> dict[bool, S3Gen]:
    """Both variants on the meta device: layout only, no memory."""
    with torch.device("meta"):
        return {flag: S3Gen(meanflow=flag) for flag in (False, True)}


@pytest.fixture(scope="module")
def s3gen() -> S3Gen:
    """The synthetic meanflow S3Gen the parity runner uses (built once per process, ~6 s)."""
    return synthetic_s3gen(meanflow=True)


@pytest.fixture(scope="module")
def ref() -> RefDict:
    """A short made-up voice: 10 prompt tokens, 20 prompt frames."""
    g = torch.Generator().manual_seed(5)
    return RefDict(torch.randint(0, 6561, (1, 10), generator=g), torch.tensor([10]),
                   torch.randn(1, 20, 80, generator=g), torch.randn(1, 192, generator=g))


def _tokens(n: int, seed: int = 3) -> Tensor:
    return torch.randint(0, 6561, (1, n), generator=torch.Generator().manual_seed(seed))


def test_state_dict_matches_manifest(parity_dir, meta_models):
    expected = json.loads((parity_dir / "manifests" / "s3gen_meanflow.json").read_text())
    ours = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in meta_models[True].state_dict().items()}
    assert sorted(ours) == sorted(expected)
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}
    assert ours[MIXER] == {"shape": [1024, 2048], "dtype": "float32"}


def test_parameter_and_buffer_counts_match_the_kit(meta_models):
    model = meta_models[True]
    assert sum(p.numel() for p in model.parameters()) == 266_030_919
    plain = sum(p.numel() for p in meta_models[False].parameters())
    assert sum(p.numel() for p in model.parameters()) - plain == 2048 * 1024  # the mixer only
    buffers = dict(model.named_buffers())
    persistent = [k for k in model.state_dict() if k in buffers]
    assert len(persistent) == 368 and sum(buffers[k].numel() for k in persistent) == 108_426


def test_original_s3gen_has_no_mixer_and_keeps_its_solver(meta_models):
    plain = meta_models[False]
    assert plain.flow.decoder.estimator.time_embed_mixer is None
    assert not any("time_embed_mixer" in k for k in plain.state_dict())
    assert type(plain.flow.decoder) is FlowMatching and plain.flow.decoder.cfg.n_timesteps == 10
    assert isinstance(meta_models[True].flow.decoder, MeanFlowMatching)
    assert meta_models[True].flow.decoder.cfg.n_timesteps == 2


def test_constructed_mixer_passes_the_start_time_through():
    """[I | 0] before loading weights (the reference's initialisation); any other mixer also sees r."""
    small = ConditionalDecoder(channels=16, heads=2, head_dim=8, n_blocks=1, mid_blocks=1, meanflow=True)
    t, r = torch.tensor([0.25]), torch.tensor([0.75])
    start_only = small.time_mlp(timestep_embedding(t, small.in_channels))
    torch.testing.assert_close(small.time_embedding(t, r), start_only)
    with torch.no_grad():
        small.time_embed_mixer.weight.normal_()
    assert not torch.allclose(small.time_embedding(t, r), small.time_embedding(t, torch.tensor([0.5])))
    with pytest.raises(ValueError, match="end time"):
        small.time_embedding(t)


class RecordingEstimator(nn.Module):
    """Stands in for the U-Net: v = 10 t + r, and records what each call was given."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, Tensor, Tensor]] = []

    def forward(self, x, mask, mu, t, spks, cond, r=None):
        self.calls.append((x.shape[0], t.clone(), r.clone()))
        return torch.zeros_like(x) + (10 * t + r)[:, None, None]


def test_solver_steps_linearly_without_guidance():
    solver = MeanFlowMatching(FlowConfig(n_timesteps=2, cfg_rate=0.0, meanflow=True))
    torch.testing.assert_close(solver.time_span("cpu"), torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(solver.time_span("cpu", 4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    solver.estimator = RecordingEstimator()
    noise = torch.randn(3, 80, 7)
    ones = torch.ones(3, 1, 7)
    trace: dict = {}
    out = solver(noise, ones, torch.zeros(3, 80, 7), torch.zeros(3, 80), torch.zeros(3, 80, 7), trace)
    # (t, r) = (0, 0.5): v = 0.5; (0.5, 1): v = 6. x = noise + 0.5 * 0.5 + 0.5 * 6
    torch.testing.assert_close(out, noise + 3.25)
    assert [(b, t.tolist(), r.tolist()) for b, t, r in solver.estimator.calls] == [
        (3, [0.0] * 3, [0.5] * 3), (3, [0.5] * 3, [1.0] * 3)]  # batch 3, not 6: no unconditional rows
    assert trace["ode_x_in"].shape == (6, 80, 7) and trace["estimator_out"].shape == (6, 80, 7)
    assert trace["ode_t"].tolist() == [0.0] * 3 + [0.5] * 3 and trace["ode_r"].tolist() == [0.5] * 3 + [1.0] * 3


@pytest.mark.parametrize("case, seed, frames, new", [("s3gen_meanflow_flow", 1108, 280, 80),
                                                     ("s3gen_meanflow_e2e", 1109, 150, 50)])
def test_seeded_start_noise_is_the_references(parity_dir, meta_models, case, seed, frames, new):
    """The golden noise is what the reference drew after torch.manual_seed(seed): new frames first, then all."""
    golden = load_golden(parity_dir / "golden" / f"{case}.safetensors")
    assert int(golden.meta["seed"]) == seed
    g = torch.Generator().manual_seed(seed)
    noise = MeanFlowMatching(FlowConfig.distilled_meanflow()).start_noise(frames, new, g)
    assert torch.equal(noise, golden.tensors["noise" if "noise" in golden.tensors else "flow_noise"])
    if "sine_phase" in golden.tensors:  # the vocoder draws next, from the same generator
        phase, sine = draw_source_randomness(1, golden.tensors["wav"].shape[1], meta_models[True].mel2wav.cfg, g)
        assert torch.equal(phase, golden.tensors["sine_phase"]) and torch.equal(sine, golden.tensors["sine_randn"])


@pytest.mark.parametrize("case", ["s3gen_meanflow_flow", "s3gen_meanflow_e2e"])
def test_golden_case_passes(parity_dir, s3gen, case):
    result = run_file(parity_dir / "golden" / f"{case}.safetensors")
    assert result.status == "PASS", result.summary()
    assert len(result.comparisons) == (8 if case.endswith("flow") else 2)


def test_seeded_inference_reproduces_the_e2e_golden(parity_dir, s3gen):
    """No draws injected: the global RNG seeded as the reference gives its waveform (flow, then vocoder)."""
    t = load_golden(parity_dir / "golden" / "s3gen_meanflow_e2e.safetensors").tensors
    torch.manual_seed(1109)
    wav = s3gen.inference(t["speech_tokens"][0], RefDict(t["prompt_token"], t["prompt_token_len"],
                                                         t["prompt_feat"], t["embedding"]))
    assert (wav - t["wav"]).abs().max() < 5e-3


def test_generator_seeds_decide_the_output(s3gen, ref):
    tokens = _tokens(15)

    def mel(seed: int) -> Tensor:
        return s3gen.flow_inference(tokens, ref, generator=torch.Generator().manual_seed(seed))

    first = mel(1)
    assert first.shape == (1, 80, 30) and torch.isfinite(first).all()
    assert torch.equal(first, mel(1))
    assert (first - mel(2)).abs().mean() > 0.1
    one_step = s3gen.flow_inference(tokens, ref, generator=torch.Generator().manual_seed(1), n_timesteps=1)
    assert (first - one_step).abs().mean() > 1e-3


def test_solver_rows_are_independent(s3gen):
    """Batch of two = each row alone (no row is an unconditional copy of another)."""
    g = torch.Generator().manual_seed(8)
    noise, mu, cond = (torch.randn(2, 80, 12, generator=g) for _ in range(3))
    spks, mask = torch.randn(2, 80, generator=g), torch.ones(2, 1, 12)
    solver = s3gen.flow.decoder
    with torch.inference_mode():
        both = solver(noise, mask, mu, spks, cond)
        rows = [solver(noise[i:i + 1], mask[i:i + 1], mu[i:i + 1], spks[i:i + 1], cond[i:i + 1]) for i in range(2)]
    torch.testing.assert_close(both, torch.cat(rows), atol=1e-4, rtol=0)
    assert (rows[0] - rows[1]).abs().mean() > 0.1


@pytest.mark.parametrize("strategy", ["incremental", "window"])
def test_streaming_runs_on_the_meanflow_s3gen(s3gen, ref, strategy):
    tokens = _tokens(30, seed=4)[0]
    streamer = make_streamer(s3gen, ref, StreamConfig(strategy=strategy, chunk_size=10),
                             torch.Generator().manual_seed(0))
    chunks = [streamer.push(tokens[i:i + 10].tolist()) for i in range(0, 30, 10)] + [streamer.finish()]
    audio = np.concatenate(chunks)
    assert len(audio) == 30 * TOKEN_SAMPLES
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
