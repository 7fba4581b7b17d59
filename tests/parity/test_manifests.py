"""Our modules must have exactly the official state-dict layout (keys, shapes, dtypes)."""
import json

import pytest
import torch

from inference.checkpoints import unused_entries
from inference.models.t3 import T3, T3Config
from inference.models.s3gen.s3gen import S3Gen
from inference.models.voice_encoder import VoiceEncoder

MODULES = {
    "t3_cfg.json": lambda: T3(T3Config.english(), init_weights=False),
    "t3_mtl23ls_v2.json": lambda: T3(T3Config.multilingual(), init_weights=False),
    "t3_turbo_v1.json": lambda: T3(T3Config.turbo(), init_weights=False),
    "t3_nano_v1.json": lambda: T3(T3Config.nano(), init_weights=False),
    "ve.json": VoiceEncoder,
    "s3gen.json": S3Gen,
    "s3gen_meanflow.json": lambda: S3Gen(meanflow=True),
}


@pytest.mark.parametrize("manifest", sorted(MODULES))
def test_state_dict_matches_manifest(parity_dir, manifest):
    expected = json.loads((parity_dir / "manifests" / manifest).read_text())
    with torch.device("meta"):  # layout only: no memory, no initialisation
        module = MODULES[manifest]()
    # what our files hold: the state dict plus the entries kept only for the reference's strict loader
    ours = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in {**module.state_dict(), **unused_entries(module, device="meta")}.items()}
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:10]}, unexpected {unexpected[:10]}"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape/dtype differences: {list(wrong.items())[:5]}"


def test_parameter_counts_match_the_kit():
    with torch.device("meta"):
        en, mtl = T3(T3Config.english()), T3(T3Config.multilingual())
    assert sum(p.numel() for p in en.parameters()) == 532_405_248
    assert sum(p.numel() for p in mtl.parameters()) == 535_989_248
    assert sum(p.numel() for p in VoiceEncoder().parameters()) == 1_423_618
    with torch.device("meta"):
        turbo, nano = T3(T3Config.turbo()), T3(T3Config.nano())
    # the kit counts tfmr.wte too: 478,862,755 / 217,471,139 with it, as loaded; without it, as used
    assert sum(p.numel() for p in turbo.parameters()) == 427_380_131
    assert sum(p.numel() for p in nano.parameters()) == 178_859_171
    with torch.device("meta"):
        s3gen = S3Gen()
    assert sum(p.numel() for p in s3gen.parameters()) == 263_933_767
    buffers = dict(s3gen.named_buffers())
    persistent = [k for k in s3gen.state_dict() if k in buffers]
    assert len(persistent) == 368 and sum(buffers[k].numel() for k in persistent) == 108_426
