"""`python -m evaluation` end to end on the tiny preset (synthetic weights: the scores test the harness, not a
voice): configuration errors before any work, the run folder's contents, resume, failed samples.

The tuned model here is the tiny preset again: same weights and same seeds must give the same audio, so every
paired delta is exactly zero, which a harness that mixed up samples or seeds would not show.

Every run here uses the session's models (`evaluate(preloaded=...)`): the tiny preset, Whisper base, GE2E and
DNSMOS are loaded once, not once per run.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evaluation import evaluate as recipe
from evaluation.config import EvalConfig
from evaluation.results import RESULTS_FILE, read_results
from inference.settings import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = PROJECT_ROOT / "audio_data" / "espeak_sample"
SAMPLE_CLIP = SAMPLE / "sample_001.flac"


@pytest.fixture(scope="module", autouse=True)
def preloaded(english, turbo, whisper_base, similarity, dnsmos):
    """`main` runs `evaluate` with the session's models; the presets get their own voices back afterwards, for
    the other modules that share them."""
    conds = english.conds, turbo.conds
    models = recipe.Preloaded(tts={"tiny": english, "tiny-turbo": turbo}, asr=whisper_base, similarity=similarity,
                              quality=dnsmos)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe, "evaluate", functools.partial(recipe.evaluate, preloaded=models))
        yield models
    english.conds, turbo.conds = conds


def write_config(path: Path, **evaluation) -> Path:
    """A config.toml with an [evaluation] table; values are TOML literals."""
    lines = ["[evaluation]"] + [f"{key} = {value}" for key, value in evaluation.items() if "." not in key]
    tables: dict[str, list[str]] = {}
    for key, value in evaluation.items():
        if "." in key:
            table, leaf = key.split(".", 1)
            tables.setdefault(table, []).append(f"{leaf} = {value}")
    for table, items in tables.items():
        lines += [f"[evaluation.{table}]", *items]
    path.write_text("\n".join(lines) + "\n")
    return path


def fast(tmp_path: Path, **extra) -> dict:
    """Two sentences, short streams, 1 s of the voice prompt per chunk (S3Gen's cost is mostly the prompt); the
    language as a locale, as users write it."""
    return {"base_model_path": '"tiny"', "reference_audio": f'["{SAMPLE_CLIP}"]', "max_sentences": 2,
            "language": '"en-US"',
            "output_dir": f'"{tmp_path / "run"}"', "stream.max_new_tokens": 20, "stream.chunk_size": 10,
            "stream.prompt_tokens": 25, **extra}


@pytest.mark.parametrize("settings, message", [
    ({"base_model_path": '"/no/such/model"'}, "base_model_path='/no/such/model' does not exist"),
    ({"tuned_model_path": '"latest"', "checkpoints_dir": '"/no/such/dir"'}, "holds no training output"),
    ({"reference_audio": '["/no/such.wav"]'}, "reference clip /no/such.wav does not exist"),
    ({"sentences": '"klingon"'}, "klingon"),
    ({"colour": '"blue"'}, "unknown key 'colour'"),
    ({"max_sentences": '"many"'}, "max_sentences"),
    ({"stream.strategy": '"psychic"'}, "stream.strategy must be one of"),
    ({"asr.model": '"/no/whisper"'}, "ASR model"),
    ({"language": '"fr"'}, "the base (english) model speaks English only"),
    ({"language": '"fr"', "tuned_model_path": '"tiny-nano"', "base_model_path": '"tiny-multilingual"'},
     "the tuned (nano) model speaks English only"),
    ({"b.t3_dtype": '"float8"'}, "t3_dtype must be one of"),
    ({"stream.min_p": 0.1, "base_model_path": '"tiny-turbo"'}, "min_p=0.1 does not apply to the turbo model"),
    ({"language": '"fr"', "base_model_path": '"tiny-multilingual"', "asr.model": '"tiny.en-bundled"'},
     "--asr.model"),  # an English-only Whisper: the flag to change is named
])
def test_bad_configuration_is_refused_before_any_work(tmp_path, capsys, settings, message):
    config = write_config(tmp_path / "config.toml", **{**fast(tmp_path), **settings})
    assert recipe.main(["--config", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_silent_reference_is_refused(tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(24000 * 3, dtype=np.float32), 24000)
    config = write_config(tmp_path / "config.toml", **fast(tmp_path, reference_audio=f'["{silent}"]'))
    assert recipe.main(["--config", str(config)]) == 2
    assert f"reference clip {silent}: the audio is silent" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("evaluation")
    runs = tmp_path / "evaluation_runs"  # where runs without an output_dir go, relative to the working folder
    config = write_config(tmp_path / "config.toml", **fast(runs, tuned_model_path='"tiny"'))
    assert recipe.main(["--config", str(config)]) == 0
    return runs / "run", config


def test_run_writes_samples_scores_and_a_report(finished_run):
    run, _ = finished_run
    rows = read_results(run)
    assert sorted((r.model, r.sample) for r in rows) == [("base", 0), ("base", 0), ("tuned", 0), ("tuned", 0)]
    for row in rows:
        assert row.ok, row.error
        audio, sr = sf.read(run / row.wav)
        assert sr == 24000 and len(audio) == pytest.approx(row.audio_seconds * sr, abs=1)
        assert 0 <= row.wer and 0 <= row.cer and -1 <= row.similarity <= 1
        assert row.similarity_self is None or -1 <= row.similarity_self <= 1
        assert 0 < row.time_to_first_audio <= row.total_seconds and row.rtf > 0
        assert len(row.chunk_arrivals) == len(row.chunk_compute) == len(row.chunk_audio) >= 1
        assert sum(row.chunk_audio) == pytest.approx(row.audio_seconds)
        assert row.reference_norm == row.reference_norm.lower()
    # same weights, same seeds: identical audio, so identical scores pair by pair
    by = {(r.model, r.sentence_id): r for r in rows}
    for sid in {r.sentence_id for r in rows}:
        base, tuned = by["base", sid], by["tuned", sid]
        assert base.seed == tuned.seed and base.hypothesis == tuned.hypothesis
        assert base.similarity == pytest.approx(tuned.similarity, abs=1e-6)
        np.testing.assert_array_equal(sf.read(run / base.wav)[0], sf.read(run / tuned.wav)[0])

    # the models took turns to go first, every sample recorded the machine's load, and the tiny preset (which
    # never stops by itself) hit the token cap on every sample
    order = [(json.loads(line)["sentence_id"], json.loads(line)["model"])
             for line in (run / RESULTS_FILE).read_text().splitlines()]
    assert [m for _, m in order] == ["base", "tuned", "tuned", "base"], order
    assert all(r.load_average is not None and r.token_cap for r in rows)
    assert all(1 <= r.quality <= 5 and 1 <= r.quality_p808 <= 5 for r in rows)

    report = (run / "report.md").read_text()
    for column in ("WER", "CER", "speaker similarity", "quality (DNSMOS OVRL)", "time to first audio",
                   "real-time factor"):
        assert column in report
    # the report agrees with results.jsonl: the verdict table's means and the per-sentence lines
    verdict = table_rows(report, "Is tuned better than base?")
    assert verdict["WER"][0].startswith(f"{np.mean([r.wer for r in rows if r.model == 'base']):.3f} ")
    assert "too few sentences to decide" in verdict["WER"][-1]
    per_sentence = table_rows(report, "Per sentence")
    for row in rows:
        line = per_sentence[f"{row.sentence_id} #{row.sample}"]
        column = 2 if row.model == "base" else 7  # text, then per model: heard, WER, similarity, quality, audio
        assert line[column].startswith(f"{row.wer:.3f}") and "(token cap)" in line[column]
        assert line[column + 1] == f"{100 * row.similarity:.1f}" and line[column + 2] == f"{row.quality:.2f}"
    assert "| max_new_tokens | 20 | 20 | 20 |" in report
    assert "2 of 2 base samples stopped at max_new_tokens (20)" in report
    assert "SYNTHETIC" in report.upper()
    info = json.loads((run / "run_info.json").read_text())
    assert info["synthetic"] is True and info["reference_audio"] == [str(SAMPLE_CLIP)]
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and not re.search(r'src="https?://', html)
    # mailed alone it still plays: every sample and the reference clip are inside the page
    assert html.count('<audio controls preload="none" src="data:audio/mpeg;base64,') >= len(rows) + 1


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The markdown table under `## heading`: first cell -> the other cells."""
    section = markdown.split(f"## {heading}\n", 1)[1]
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return {c[0]: c[1:] for c in cells}


def test_finished_run_is_not_redone_and_interrupted_run_resumes(finished_run, capsys, monkeypatch):
    run, config = finished_run
    results = run / RESULTS_FILE
    lines = results.read_text().splitlines(keepends=True)
    assert recipe.main(["--config", str(config)]) == 0  # everything done: nothing generated
    assert results.read_text().splitlines(keepends=True) == lines
    assert "4 samples already done" in capsys.readouterr().out
    unnamed = write_config(config.with_name("unnamed.toml"),
                           **fast(run.parent, tuned_model_path='"tiny"', output_dir='""'))
    monkeypatch.chdir(run.parent.parent)
    assert recipe.main(["--config", str(unnamed), "--resume"]) == 0  # --resume: the newest dated run, this one
    assert results.read_text().splitlines(keepends=True) == lines
    assert "4 samples already done in evaluation_runs/run" in capsys.readouterr().out

    # killed while writing the fourth row: three rows kept, a torn line after them
    results.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    assert recipe.main(["--config", str(config)]) == 0
    after = results.read_text().splitlines(keepends=True)
    assert after[:3] == lines[:3]  # finished samples were not regenerated
    rows = read_results(run)
    assert len(rows) == 4 and all(r.ok for r in rows)
    redone = json.loads(after[-1])
    assert (redone["model"], redone["sentence_id"]) == (json.loads(lines[3])["model"],
                                                         json.loads(lines[3])["sentence_id"])


def test_changed_configuration_does_not_reuse_the_folder(finished_run, capsys):
    run, config = finished_run
    changed = write_config(config.with_name("other.toml"),
                           **fast(run.parent, tuned_model_path='"tiny"', **{"stream.temperature": 0.5}))
    assert recipe.main(["--config", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "stream.temperature: run has None, given 0.5" in err and "other settings" in err
    assert recipe.main(["--output-dir", str(run), "--stream.chunk-size", "7", "max_sentences=3"]) == 2
    err = capsys.readouterr().err
    assert "max_sentences: run has 2, given 3" in err and "stream.chunk_size: run has 10, given 7" in err

    # --compare reads two finished runs and generates nothing
    assert recipe.main(["--compare", str(run), str(run), "--output-dir", str(run.parent / "cmp")]) == 0
    assert "WER" in (run.parent / "cmp" / "compare.md").read_text()


def test_plain_resume_keeps_the_runs_own_settings(finished_run, capsys, monkeypatch):
    """The run was started from a config file with its own settings; resuming it with no flags (the shipped
    config.toml says otherwise) or with a flag that agrees continues it."""
    run, _ = finished_run
    lines = (run / RESULTS_FILE).read_text()
    monkeypatch.chdir(PROJECT_ROOT)
    assert recipe.main(["--output-dir", str(run)]) == 0
    assert recipe.main(["--output-dir", str(run), "--resume", "--tuned-model-path", "tiny",
                        "stream.max_new_tokens=20"]) == 0
    assert (run / RESULTS_FILE).read_text() == lines and capsys.readouterr().out.count("4 samples already done") == 2


def test_a_broken_tuned_model_fails_before_any_sample(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "t3_cfg.safetensors").write_bytes(b"not a checkpoint")
    config = write_config(tmp_path / "config.toml", **fast(tmp_path, tuned_model_path=f'"{broken}"'))
    assert recipe.main(["--config", str(config)]) == 2
    assert f"side B (broken): model {broken} cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing generated, nothing written


def test_synthetic_models_report_the_token_cap_they_used():
    from evaluation.config import StreamSettings

    assert recipe.stream_settings(StreamSettings(max_new_tokens=400), True).max_new_tokens == recipe.PRESET_MAX_TOKENS
    assert recipe.stream_settings(StreamSettings(max_new_tokens=400), False).max_new_tokens == 400


def test_a_failed_sample_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    real = recipe.stream_sample

    def broken_second_sentence(model, text, *args):
        audio, timing = real(model, text, *args)
        if text == first_two[1]:
            audio = np.full_like(audio, np.nan)
        return audio, timing

    from evaluation.sentences import load_sentences

    first_two = [s.text for s in load_sentences("default", "en", 2)]
    monkeypatch.setattr(recipe, "stream_sample", broken_second_sentence)
    config = write_config(tmp_path / "config.toml", **fast(tmp_path))
    assert recipe.main(["--config", str(config)]) == 1  # scripts notice
    assert "1 of 2 samples failed" in capsys.readouterr().err
    rows = {r.text: r for r in read_results(tmp_path / "run")}
    assert rows[first_two[0]].ok and rows[first_two[0]].wer is not None
    failed = rows[first_two[1]]
    assert failed.error == "ValueError: non-finite audio (NaN or inf samples)" and failed.wer is None
    assert failed.time_to_first_audio is not None  # what was measured before the failure is kept
    assert "non-finite audio" in (tmp_path / "run" / "report.md").read_text()


def test_models_made_from_the_tiny_preset_are_labelled_synthetic(tmp_path):
    from dataclasses import asdict

    from inference.chatterbox import T3_CONFIG_FILE
    from inference.models.t3 import T3Config

    assert recipe.is_synthetic("tiny") and recipe.is_synthetic("tiny-multilingual")
    merged = tmp_path / "merged"  # what training.lora writes for a fine-tune of the tiny preset
    merged.mkdir()
    (merged / T3_CONFIG_FILE).write_text(json.dumps(asdict(T3Config.tiny())))
    assert recipe.is_synthetic(str(merged))
    assert "SYNTHETIC" in recipe.describe_model(str(merged), True)
    (merged / T3_CONFIG_FILE).write_text(json.dumps({**asdict(T3Config.tiny()), "num_layers": 3}))
    assert not recipe.is_synthetic(str(merged))  # another size: an experiment, not known to be random
    assert not recipe.is_synthetic(str(tmp_path / "official"))  # official folders have no sidecar


def test_an_adapter_folder_is_a_model(tmp_path):
    """training.lora's default export is an adapter: evaluation takes it (and 'latest' finds it); a run folder
    given by mistake is answered with the folder to give."""
    from types import SimpleNamespace

    from inference.adapters import base_identity, write_base_identity
    from inference.families import ENGLISH
    from inference.presets import tiny_t3

    cfg = load_config(EvalConfig, "evaluation", PROJECT_ROOT / "config.toml", [f"checkpoints_dir={tmp_path}"])
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    write_base_identity(adapter, base_identity(SimpleNamespace(t3=tiny_t3(), FAMILY=ENGLISH), "tiny"))
    assert recipe.resolve_model_path(str(adapter), "tuned_model_path", cfg) == str(adapter)
    assert recipe.resolve_model_path("latest", "tuned_model_path", cfg) == str(adapter)
    assert recipe.is_synthetic(str(adapter))  # trained on the tiny preset
    with pytest.raises(recipe.EvaluationError, match=f"is a training run folder: give {adapter}"):
        recipe.resolve_model_path(str(tmp_path / "run"), "tuned_model_path", cfg)
    with pytest.raises(recipe.EvaluationError, match="is a LoRA adapter, i.e. a tuned model: give it as tuned_model_path"):
        recipe.resolve_model_path(str(adapter), "base_model_path", cfg)
    interrupted = tmp_path / "interrupted"  # killed before its final adapter: its newest checkpoint is named
    for step in (2, 10):
        (interrupted / f"step-{step}").mkdir(parents=True)
    with pytest.raises(recipe.EvaluationError, match=f"give {interrupted / 'step-10'} \\(its newest checkpoint"):
        recipe.resolve_model_path(str(interrupted), "tuned_model_path", cfg)
    anonymous = tmp_path / "anonymous"  # an adapter without chatterbox_base.json: merging is the way
    anonymous.mkdir()
    (anonymous / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(recipe.EvaluationError, match="python -m training.merge --checkpoint"):
        recipe.resolve_model_path(str(anonymous), "tuned_model_path", cfg)


def test_shipped_config_documents_every_key_and_each_is_a_flag():
    import tomllib

    from evaluation.config import EvalConfig
    from inference.settings import config_keys, load_config

    shipped_table = tomllib.loads((PROJECT_ROOT / "config.toml").read_text())["evaluation"]
    in_file = {f"{table}.{k}" if isinstance(v, dict) else table
               for table, v in shipped_table.items() for k in (v if isinstance(v, dict) else [None])}
    assert in_file == set(config_keys(EvalConfig))  # every key documented in the shipped file, nothing extra
    shipped = load_config(EvalConfig, "evaluation", PROJECT_ROOT / "config.toml")
    parser = recipe.build_parser()
    args = parser.parse_args(["--tuned-model-path", "latest", "--stream.chunk-size", "10", "--max-sentences", "0",
                              "--reference-audio", "a.wav,b.wav"])
    cfg = load_config(EvalConfig, "evaluation", PROJECT_ROOT / "config.toml", recipe.command_overrides(args))
    assert (cfg.tuned_model_path, cfg.stream.chunk_size, cfg.max_sentences, cfg.reference_audio) == \
        ("latest", 10, 0, ("a.wav", "b.wav"))
    assert cfg.asr == shipped.asr and cfg.similarity == shipped.similarity


def test_runs_without_an_output_dir_go_to_runs_dir(tmp_path):
    assert recipe.find_run_dir(EvalConfig(), resume=False).parent == Path("evaluation_runs")  # the working folder's
    assert recipe.find_run_dir(EvalConfig(runs_dir=str(tmp_path)), resume=False).parent == tmp_path
    with pytest.raises(recipe.EvaluationError, match=f"no evaluation run in {tmp_path}/"):
        recipe.find_run_dir(EvalConfig(runs_dir=str(tmp_path)), resume=True)


def test_preloaded_models_must_match_the_run(preloaded):
    from evaluation.similarity import SimilarityConfig
    from inference.asr import TranscribeConfig

    cfg = EvalConfig()
    asr, verifier, quality = recipe.load_scorers(preloaded.asr.config, cfg, preloaded)
    assert (asr, verifier, quality) == (preloaded.asr, preloaded.similarity, preloaded.quality)  # nothing loaded
    with pytest.raises(ValueError, match="preloaded asr model was built for"):
        recipe.load_scorers(TranscribeConfig(language="fr"), cfg, preloaded)
    with pytest.raises(ValueError, match="preloaded similarity model was built for"):
        recipe.load_scorers(preloaded.asr.config, EvalConfig(similarity=SimilarityConfig(device="cuda")), preloaded)


# Clips of the shipped espeak-ng sample (one en-us voice) and their texts, for the scales of the report.
CLIPS = ["sample_001.flac", "sample_005.flac", "sample_010.flac"]
TEXTS = {e["file"]: e["text"] for e in json.loads(
    (PROJECT_ROOT / "tests" / "fixtures" / "espeak_sample.json").read_text(encoding="utf-8"))["files"]}
SAME_VOICE_MIN = 0.85  # GE2E on the same voice, different sentences: measured 0.91-0.96
WER_BOUND = 0.25  # Whisper's WER on these clips: tiny.en 0.156, base 0.117 (measured on four clips)


def test_same_speaker_ceiling_and_asr_floor(whisper_base, similarity, tmp_path):
    """The scales printed beside the models' scores, on the speaker's real recordings."""
    clips = [SAMPLE / name for name in CLIPS]
    ceiling = recipe.similarity_ceiling(similarity, clips, [])
    assert ceiling["n"] == 3 and ceiling["mean"] > SAME_VOICE_MIN  # same voice, different sentences
    for name in CLIPS[:2]:
        shutil.copy(SAMPLE / name, tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text(TEXTS[name])
    shutil.copy(SAMPLE / CLIPS[2], tmp_path / CLIPS[2])  # no transcript: not part of the floor
    floor = recipe.asr_floor(whisper_base, sorted(tmp_path.glob("*.flac")), "en")
    assert floor["n"] == 2 and 0 <= floor["wer"] < WER_BOUND
    assert recipe.asr_floor(whisper_base, [tmp_path / CLIPS[2]], "en") is None


# ------------------------------------------------------------------------------------------ any two setups

def test_two_setups_of_one_model_report_their_full_settings(tmp_path, capsys):
    """Is int8 with a shorter voice prompt as good as float32 with the longer one? One Turbo model, two setups:
    the sides are named by what differs, each is loaded and streamed with its own settings, and the report's
    settings table shows both sides' full settings, the differing ones first."""
    config = write_config(tmp_path / "config.toml", **fast(
        tmp_path, base_model_path='"tiny-turbo"', tuned_model_path='"tiny-turbo"', **{
            "b.t3_dtype": '"int8"', "b.prompt_tokens": 10}))
    assert recipe.main(["--config", str(config)]) == 0
    a, b = "t3_dtype=float32, prompt_tokens=25", "t3_dtype=int8, prompt_tokens=10"
    rows = read_results(tmp_path / "run")
    assert {r.model for r in rows} == {a, b} and all(r.ok for r in rows) and len(rows) == 4
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"## Is {b} better than {a}?" in report
    settings = report[report.index("## Settings used"):report.index("## Per sentence")]
    lines = settings.splitlines()
    assert lines[4:6] == ["| **t3_dtype** |  | float32 | int8 |", "| **prompt_tokens** | 25 | 25 | 10 |"]
    for shared in ("| family |  | turbo | turbo |", "| top_k |  | 1000 | 1000 |", "| top_p |  | 0.95 | 0.95 |",
                   "| exaggeration |  | none (no emotion input) | none (no emotion input) |",
                   "| model |  | tiny-turbo | tiny-turbo |"):
        assert shared in settings, shared
    assert "Settings in bold differ between " + a + " and " + b + " (t3_dtype, prompt_tokens)" in settings
    assert "both sides ran on the same machine in the same run" in report
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["sides"] == [a, b]
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == sorted(recipe.safe(x) for x in (a, b))


def test_sides_are_named_by_what_differs(tmp_path):
    cfg = load_config(EvalConfig, "evaluation", None, [])
    trained = tmp_path / "run" / "adapter"
    trained.mkdir(parents=True)
    (trained / "chatterbox_base.json").write_text("{}")
    assert recipe.side_labels(cfg, {"base": "tiny"}) == {"base": "base"}
    assert recipe.side_labels(cfg, {"base": "tiny", "tuned": "tiny"}) == {"base": "base", "tuned": "tuned"}
    assert recipe.side_labels(cfg, {"base": "tiny-turbo", "tuned": str(trained)}) == {"base": "base", "tuned": "tuned"}
    assert recipe.side_labels(cfg, {"base": "tiny", "tuned": "tiny-turbo"}) == {"base": "tiny", "tuned": "tiny-turbo"}
    assert recipe.side_labels(cfg, {"base": "ResembleAI/chatterbox", "tuned": "ResembleAI/chatterbox-turbo"}) == \
        {"base": "chatterbox", "tuned": "chatterbox-turbo"}
    fast_prompt = load_config(EvalConfig, "evaluation", None, ["a.prompt_tokens=0", "b.prompt_tokens=75"])
    assert recipe.side_labels(fast_prompt, {"base": "tiny-nano", "tuned": "tiny-nano"}) == \
        {"base": "prompt_tokens=all", "tuned": "prompt_tokens=75"}
    named = load_config(EvalConfig, "evaluation", None, ["a.label=nano", "b.label=turbo"])
    assert recipe.side_labels(named, {"base": "tiny-nano", "tuned": "tiny-turbo"}) == {"base": "nano", "tuned": "turbo"}
    same = load_config(EvalConfig, "evaluation", None, ["a.label=x", "b.label=x"])
    with pytest.raises(recipe.EvaluationError, match="both sides are labelled 'x'"):
        recipe.side_labels(same, {"base": "tiny", "tuned": "tiny-turbo"})
