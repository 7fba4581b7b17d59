"""Broken files in a run or model folder, and folders that are not evaluation runs: each is refused with exit
status 2 and a message naming the file (or folder) and what is wrong, before any model is loaded. A row cut
short by a kill is the one breakage that is normal, and is tolerated.

No test here loads a model: every `main` call is refused while the run is being checked.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pytest

from evaluation import evaluate as recipe
from evaluation import jsonfiles
from evaluation.config import EvalConfig
from evaluation.jsonfiles import BrokenFileError
from evaluation.report import RUN_INFO_FILE, read_run_info, write_run_info
from evaluation.results import RESULTS_FILE, SampleResult, append_result, read_results

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CLIP = PROJECT_ROOT / "audio_data" / "espeak_sample" / "sample_001.flac"
FOREIGN_ROW = {"step": 10, "loss": 2.5}  # a line of a training run's metrics.jsonl


def refused(argv: list[str], capsys) -> str:
    """What `main` printed when it refused to start (exit status 2)."""
    assert recipe.main(argv) == 2
    return capsys.readouterr().err


def started_run(tmp_path: Path, rows: list[str] | None = None) -> Path:
    """A run folder as `evaluate` leaves it once it has started: run_info.json, and results.jsonl lines."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = EvalConfig(reference_audio=(str(SAMPLE_CLIP),), max_sentences=2, output_dir=str(run))
    write_run_info(run, {"config": asdict(cfg)})
    if rows is not None:
        (run / RESULTS_FILE).write_text("".join(line + "\n" for line in rows))
    return run


def row(model: str = "base", sentence: str = "s-0", **fields) -> str:
    return json.dumps(asdict(SampleResult(model=model, sentence_id=sentence, sample=0, seed=0, language="en",
                                          text="a sentence", **fields)))


# ------------------------------------------------------------------------------------------ model folders

@pytest.mark.parametrize("name, content, message", [
    ("chatterbox_base.json", "[1]", "holds the list [1], not a JSON object"),
    ("chatterbox_base.json", '{"model": "tiny", "t3_config": {"num_layers": "30"}}',
     't3_config.num_layers: Input should be a valid integer, got "30"'),
    ("adapter_config.json", '["LORA"]', 'holds the list ["LORA"], not a JSON object'),
    ("heldout_clips.json", '{"heldout_clips": "a.wav"}', 'heldout_clips: Input should be a valid array, got "a.wav"'),
    ("training_config.json", '{"lora": [4]}', "lora: Input should be an object, got [4]"),
    ("t3_config.json", '{"num_layers": 3', "is not JSON (EOF while parsing an object"),
])
def test_a_broken_file_in_a_model_folder_is_named(tmp_path, capsys, name, content, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    (adapter / "chatterbox_base.json").write_text(json.dumps({"model": "tiny", "family": "english",
                                                              "t3_config": {"num_layers": 2}}))
    (adapter / name).write_text(content)
    err = refused(["--tuned-model-path", str(adapter), "--output-dir", str(tmp_path / "run")], capsys)
    assert f"error: {adapter / name}" in err and message in err
    assert f"the model folder {adapter} is damaged: export it again" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ run folders

@pytest.mark.parametrize("content, message", [
    ('{"config": {"base_model_path": "tiny", "max_sen', "is not JSON (EOF while parsing a string"),  # cut short
    ("[1]", "holds the list [1], not a JSON object"),
    ('{"config": {}, "resume_key": {"resolved_models": {"base": 1}}}',
     "resume_key.resolved_models.base: Input should be a valid string, got 1"),
])
def test_a_broken_run_info_is_named(tmp_path, capsys, content, message):
    run = started_run(tmp_path)
    (run / RUN_INFO_FILE).write_text(content)
    err = refused(["--output-dir", str(run)], capsys)
    assert f"error: {run / RUN_INFO_FILE}" in err and message in err
    assert "give another --output-dir to start a new run" in err
    assert sorted(p.name for p in run.iterdir()) == [RUN_INFO_FILE]  # nothing written


@pytest.mark.parametrize("line, message", [
    (json.dumps(FOREIGN_ROW), "line 2: missing model, sentence_id, sample, seed, language, text"),
    (json.dumps([1, 2]), "line 2 holds the list [1, 2], not a JSON object"),
    (row(sentence="s-1", wer="0.1"), 'line 2: wer: Input should be a valid number, got "0.1"'),
])
def test_a_foreign_row_in_the_results_is_named(tmp_path, capsys, line, message):
    run = started_run(tmp_path, [row(), line, row(sentence="s-2")])
    results = run / RESULTS_FILE
    for argv in (["--output-dir", str(run)], ["--compare", str(run), str(run), "--output-dir", str(tmp_path / "c")]):
        err = refused(argv, capsys)
        assert f"error: {results} {message}" in err
        assert ("it is not a result row of `python -m evaluation`, and only the last line can be cut short by a "
                "kill: delete that line to go on") in err
    assert not (tmp_path / "c").exists()


def test_a_row_cut_short_by_a_kill_is_dropped_and_cut_off(tmp_path, caplog):
    """A kill while a row is written leaves its start without a newline: that row is dropped (its sample is run
    again), and the next row written replaces it, so no broken line stays inside the file."""
    run = tmp_path / "run"
    run.mkdir()
    whole = [row(sentence="s-0"), row(sentence="s-1")]
    for torn in (row(sentence="s-2")[:40], row(sentence="s-2")):  # half a row; a whole row without its newline
        (run / RESULTS_FILE).write_text("".join(line + "\n" for line in whole) + torn)
        with caplog.at_level(logging.WARNING, logger="evaluation"):
            assert [r.sentence_id for r in read_results(run)] == ["s-0", "s-1"]
        assert f"{run / RESULTS_FILE}: the last row was cut short" in caplog.text
        redone = SampleResult(model="base", sentence_id="s-2", sample=0, seed=0, language="en", text="a sentence")
        append_result(run, redone)
        assert (run / RESULTS_FILE).read_text().splitlines() == whole + [json.dumps(asdict(redone))]
        assert [r.sentence_id for r in read_results(run)] == ["s-0", "s-1", "s-2"]


def test_a_broken_line_inside_the_results_is_refused(tmp_path, capsys):
    """Only the last line can be cut short by a kill: a broken line before other rows means other damage."""
    run = started_run(tmp_path, [row(), row(sentence="s-1")[:40], row(sentence="s-2")])
    with pytest.raises(BrokenFileError, match="line 2 is not JSON .*only the last line can be cut short"):
        read_results(run)
    err = refused(["--output-dir", str(run)], capsys)
    assert f"error: {run / RESULTS_FILE} line 2 is not JSON" in err


def test_run_info_is_written_atomically(tmp_path, monkeypatch):
    """A kill (here: a failing rename) while run_info.json is rewritten leaves the old file whole."""
    write_run_info(tmp_path, {"config": {"seed": 1}})
    assert read_run_info(tmp_path) == {"config": {"seed": 1}}

    def killed(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(jsonfiles.os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        write_run_info(tmp_path, {"config": {"seed": 2}})
    assert read_run_info(tmp_path) == {"config": {"seed": 1}}
    assert [p.name for p in tmp_path.iterdir()] == [RUN_INFO_FILE]  # no temporary file left behind


# ------------------------------------------------------------------------------------------ what a run folder is

@pytest.mark.parametrize("resume", [True, False])
def test_a_training_run_is_not_an_evaluation_run(tmp_path, capsys, resume):
    training = tmp_path / "my-voice"  # what training.lora leaves in checkpoints_dir/<run>
    for folder in ("adapter", "step-10"):
        (training / folder).mkdir(parents=True)
    (training / "training_config.json").write_text("{}")
    (training / "metrics.jsonl").write_text(json.dumps(FOREIGN_ROW) + "\n")
    before = sorted(p.name for p in training.rglob("*"))
    err = refused([*(["--resume"] if resume else []), "--output-dir", str(training)], capsys)
    assert (f"error: {training} is not an evaluation run (it has no {RUN_INFO_FILE}) but holds adapter, "
            "metrics.jsonl, step-10, training_config.json (a training run or model folder?)") in err
    assert "give --output-dir a new or empty folder to start a run, or an evaluation run's folder to continue it" in err
    assert sorted(p.name for p in training.rglob("*")) == before


def test_a_run_may_start_in_a_new_or_empty_folder(tmp_path):
    recipe.check_run_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("")  # hidden files do not count
    recipe.check_run_dir(tmp_path / "empty")
    recipe.check_run_dir(started_run(tmp_path))
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(recipe.EvaluationError, match="is a file: give a new or empty folder"):
        recipe.check_run_dir(tmp_path / "notes.txt")
    with pytest.raises(recipe.EvaluationError, match=r"holds empty, notes.txt, run: give --output-dir"):
        recipe.check_run_dir(tmp_path)
