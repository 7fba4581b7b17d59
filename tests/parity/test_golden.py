"""The parity runner over the kit's golden files, plus its behaviour on files it has never seen."""
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from inference.parity import run_file
from inference.parity.golden import Tolerances, load_golden

CASES = ["t3_en_2layer", "t3_en_full", "t3_mtl_2layer", "t3_mtl_full", "t3_inference_en_2layer",
         "t3_inference_en_full", "t3_inference_mtl_full", "t3_sampling_en_defaults", "t3_sampling_alt", "ve_embed",
         "s3tokenizer", "campplus_xvector", "s3gen_embed_ref", "s3gen_flow", "s3gen_hift", "s3gen_e2e",
         "conditionals",
         # Turbo, Nano and the meanflow S3Gen (kit sections 3.5-3.6, 5.12-5.18, 7.8-7.11)
         "t3_turbo_2layer", "t3_turbo_full", "t3_nano_full", "t3_inference_turbo_full", "t3_inference_nano_full",
         "t3_sampling_turbo_defaults", "t3_sampling_turbo_alt", "turbo_conditionals", "turbo_text_norm",
         "s3gen_meanflow_flow", "s3gen_meanflow_e2e"]


def test_every_kit_file_is_covered(parity_dir):
    assert sorted(CASES) == sorted(p.stem for p in (parity_dir / "golden").glob("*.safetensors"))


@pytest.fixture(scope="module")
def kit_report(parity_dir) -> dict[str, str]:
    """Runs the parity CLI once over every kit file, in its own process: the runner pins MKL's
    reproducible FFT mode (see inference/parity/__init__.py), which must not slow the other tests."""
    # grouped by the model each builds (t3_inference_en_full beside t3_en_full): each full-size T3 is built once
    files = [str(parity_dir / "golden" / f"{case}.safetensors")
             for case in sorted(CASES, key=lambda c: c.replace("inference_", ""))]
    res = subprocess.run([sys.executable, "-m", "inference.parity", "-v", *files], capture_output=True, text=True)
    report, current = {}, None
    for line in res.stdout.splitlines():
        if not line.startswith(" "):
            current = line.split(".safetensors")[0]
            report[current] = line
        elif current:
            report[current] += "\n" + line
    assert report, res.stderr[-3000:]
    return report


@pytest.mark.parametrize("case", CASES)
def test_golden_case_passes(parity_dir, kit_report, case):
    lines = kit_report[case].splitlines()
    assert lines[0].startswith(f"{case}.safetensors PASS"), kit_report[case]
    rules = Tolerances.load(parity_dir / "tolerances.json").files[case]
    golden = load_golden(parity_dir / "golden" / f"{case}.safetensors")
    outputs = {k for k, rule in rules.items() if rule != "input"} & set(golden.tensors)
    checked = {line.split()[1].rstrip(":") for line in lines[1:]}
    assert checked == outputs  # every output of the file was compared
    assert all(line.split()[0] == "ok" for line in lines[1:])


def _renamed_copy(parity_dir, tmp_path, case, new_case, tamper=None):
    """A golden file the tolerance table has never heard of, optionally with one output changed."""
    tensors = load_file(str(parity_dir / "golden" / f"{case}.safetensors"))
    golden = load_golden(parity_dir / "golden" / f"{case}.safetensors")
    if tamper:
        tamper(tensors)
    folder = tmp_path / "golden"
    folder.mkdir(exist_ok=True)
    shutil.copy(parity_dir / "tolerances.json", tmp_path / "tolerances.json")
    out = folder / f"{new_case}.safetensors"
    save_file(tensors, str(out), metadata={**golden.meta, "case": new_case})
    return out


def test_unseen_file_of_known_format_runs(parity_dir, tmp_path):
    path = _renamed_copy(parity_dir, tmp_path, "t3_mtl_2layer", "t3_mtl_2layer_copy")
    result = run_file(path)
    assert result.status == "PASS" and len(result.comparisons) == 4


def test_tampered_output_fails(parity_dir, tmp_path):
    def bump(t):
        t["speech_logits"][0, 0, 0] += 1e-3

    result = run_file(_renamed_copy(parity_dir, tmp_path, "t3_mtl_2layer", "tampered", bump))
    assert result.status == "FAIL"
    assert [c.name for c in result.comparisons if not c.passed] == ["speech_logits"]


def test_sampling_filter_mismatch_fails(parity_dir, tmp_path):
    def unfilter(t):
        row = t["after_min_p"][2]
        row[torch.isneginf(row).nonzero()[0]] = 0.0

    result = run_file(_renamed_copy(parity_dir, tmp_path, "t3_sampling_alt", "unfiltered", unfilter))
    assert result.status == "FAIL" and not next(c for c in result.comparisons if c.name == "after_min_p").passed


def test_cli_lines_and_exit_codes(parity_dir, tmp_path):
    good = parity_dir / "golden" / "t3_sampling_en_defaults.safetensors"
    ok = subprocess.run([sys.executable, "-m", "inference.parity", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("t3_sampling_en_defaults.safetensors PASS")

    def bump(t):
        t["probs"][0, :] *= 1.5

    bad = _renamed_copy(parity_dir, tmp_path, "t3_sampling_en_defaults", "bad", bump)
    unknown = tmp_path / "golden" / "unknown.safetensors"
    save_file({"something": torch.zeros(3)}, str(unknown))
    res = subprocess.run([sys.executable, "-m", "inference.parity", str(good), str(bad), str(unknown),
                          "--tolerances", str(parity_dir / "tolerances.json")], capture_output=True, text=True)
    lines = res.stdout.splitlines()
    assert res.returncode == 1
    assert lines[0].startswith("t3_sampling_en_defaults.safetensors PASS")
    assert any(line.startswith("bad.safetensors FAIL") for line in lines)
    assert any(line.startswith("unknown.safetensors ERROR") for line in lines)


def test_cli_without_tolerances_is_an_error(parity_dir, tmp_path):
    lone = tmp_path / "lone.safetensors"
    shutil.copy(parity_dir / "golden" / "t3_sampling_alt.safetensors", lone)
    res = subprocess.run([sys.executable, "-m", "inference.parity", str(lone)], capture_output=True, text=True)
    assert res.returncode == 1 and "tolerances" in res.stdout
