"""Our synthetic-weight procedure must reproduce the kit's fingerprints for every manifest key."""
import json
import math

import pytest

from inference.synthetic import KEEP, synthetic_tensor


def test_fingerprints_of_every_key(parity_dir):
    prints = json.loads((parity_dir / "manifests" / "synthetic_fingerprints.json").read_text())
    checked, done = 0, {}
    for manifest, keys in sorted(prints.items()):
        layout = json.loads((parity_dir / "manifests" / f"{manifest}.json").read_text())
        for key, fp in keys.items():
            shape = tuple(layout[key]["shape"])
            if key in KEEP:
                continue
            if (key, shape) not in done:  # T3 English/multilingual share most tensors
                t = synthetic_tensor(key, shape).double()
                done[(key, shape)] = (float(t.sum()), float(t.abs().sum()), t.flatten()[:3].tolist())
            total, abs_total, first = done[(key, shape)]
            assert math.isclose(abs_total, fp["abs_sum"], rel_tol=1e-9, abs_tol=1e-9), (manifest, key)
            assert math.isclose(total, fp["sum"], rel_tol=1e-6, abs_tol=1e-6 * max(1.0, fp["abs_sum"])), (manifest, key)
            assert first == pytest.approx(fp["first"][: len(first)], rel=1e-6, abs=1e-9), (manifest, key)
            checked += 1
    assert checked > 3000  # all four manifests, not a subset
