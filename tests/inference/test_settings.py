"""Settings: config.toml sections -> dataclasses, the command line every command shares (`--key value` and
`key=value`, `--help` in config.toml's words, one default model) and the limits that sampling, streaming, the
config sections and the server's requests all read from `inference/models/limits.py`.

The commands run in-process and stop at a refusal or at --help, before any model loads; one tts run is real.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
from pydantic import ValidationError

import evaluation.evaluate as evaluation_cmd
import inference.server as server_cmd
import inference.tts as tts_cmd
import inference.vc as vc_cmd
import training.lora as training_cmd
from evaluation.config import EvalConfig, StreamSettings
from inference.models.limits import LIMITS, check_limits, prompt_tokens_setting
from inference.models.t3.sampling import SAMPLING_FIELDS, SamplingConfig
from inference.server.config import ServerConfig
from inference.server.schema import SynthesisOptions
from inference.settings import (PROJECT_ROOT, command_overrides, command_parser, config_comments, config_keys,
                                load_config, parse_command)
from inference.streaming import StreamConfig
from inference.tts import TTSConfig
from inference.vc import VCConfig
from training.lora import TrainConfig

# command -> (its main, its config class, its config.toml section, the flags it cannot run without)
COMMANDS = {
    "tts": (tts_cmd.main, TTSConfig, "tts", ["--text", "Hi.", "--out", "never.wav"]),
    "vc": (vc_cmd.main, VCConfig, "vc", ["--source", "never.wav", "--out", "never.wav"]),
    "server": (server_cmd.main, ServerConfig, "server", []),
    "training": (training_cmd.main, TrainConfig, "training", []),
    "evaluation": (evaluation_cmd.main, EvalConfig, "evaluation", []),
}
# command -> (a key, a value its config refuses before any model loads, the words the refusal names)
REFUSED = {
    "tts": ("temperature", "abc", "temperature='abc' is not a valid float"),
    "vc": ("seed", "abc", "seed='abc' is not a valid int"),
    "server": ("chunk_size", "0", "chunk_size must be >= 1, got 0"),
    "training": ("epochs", "abc", "epochs='abc' is not a valid int"),
    "evaluation": ("stream.chunk_size", "0", "stream.chunk_size must be >= 1, got 0"),
}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# --- config.toml -> dataclass -----------------------------------------------------------------------------

def test_load_config_overrides():
    cfg = load_config(TTSConfig, "tts", PROJECT_ROOT / "config.toml", ["seed=none", "cfg_weight=0"])
    assert cfg.seed is None
    assert cfg.cfg_weight == 0.0 and isinstance(cfg.cfg_weight, float)


def test_load_config_reads_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[tts]\nmodel = "tiny-multilingual"\nlanguage = "de"\nmax_new_tokens = 12\n')
    cfg = load_config(TTSConfig, "tts", path, ["temperature=0.7", "multilingual=yes"])
    assert (cfg.model, cfg.language, cfg.max_new_tokens) == ("tiny-multilingual", "de", 12)
    assert cfg.temperature == 0.7 and cfg.multilingual is True
    assert cfg.cfg_weight == TTSConfig.cfg_weight  # untouched keys keep their defaults


def test_project_config_keys_are_known():
    cfg = load_config(TTSConfig, "tts", PROJECT_ROOT / "config.toml")
    assert cfg.model == "tiny"
    assert cfg == TTSConfig()  # the shipped file states the defaults ("" for the keys that default to None)


def test_config_unknown_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[tts]\ntemperature = 0.7\nbogus = 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_config(TTSConfig, "tts", path)


@pytest.mark.parametrize("override", ["bogus=1", "temperature", "temperature=abc", "multilingual=maybe",
                                      "max_new_tokens=1.5"])
def test_bad_overrides(override):
    with pytest.raises(ValueError):
        load_config(TTSConfig, "tts", PROJECT_ROOT / "config.toml", [override])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(TTSConfig, "tts", tmp_path / "nope.toml")


def test_one_default_model_for_every_command():
    from evaluation.evaluate import trained_from

    for _, cls, section, _ in COMMANDS.values():
        if cls is EvalConfig:  # side A left empty: the tuned model's base, and without one the same preset
            assert cls().base_model_path == load_config(cls, section, PROJECT_ROOT / "config.toml").base_model_path == ""
            assert trained_from(None) == "tiny"
            continue
        assert cls().model == "tiny", section
        assert load_config(cls, section, PROJECT_ROOT / "config.toml").model == "tiny", section


# --- the command line of every command ---------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_key_in_config_toml_words(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: the comments are not wrapped
    main, cls, section, _ = COMMANDS[command]
    comments = config_comments(section)
    assert set(comments) == set(config_keys(cls)), "every key documented in config.toml, nothing extra"
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for key in config_keys(cls):
        assert _flag(key) in shown, key
        assert comments[key] and " ".join(comments[key].split()) in shown, key


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("spelling", ["flag", "word"])
def test_both_spellings_reach_the_config_and_a_bad_value_is_refused_before_loading(command, spelling, capsys,
                                                                                  tmp_path):
    main, _, _, needed = COMMANDS[command]
    key, bad, message = REFUSED[command]
    given = [_flag(key), bad] if spelling == "flag" else [f"{key}={bad}"]
    needed = [str(tmp_path / a) if a == "never.wav" else a for a in needed]
    assert main([*needed, *given]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never.wav").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_and_words_give_the_same_config(command):
    _, cls, section, _ = COMMANDS[command]
    parser = command_parser(f"python -m {command}", cls, section, "")
    key, value = {"server": ("port", "8080"), "training": ("lora.rank", "8"),
                  "evaluation": ("stream.chunk_size", "10")}.get(command, ("seed", "7"))
    _, by_flag = parse_command(parser, [_flag(key), value], cls, section)
    _, by_word = parse_command(parser, [f"{key}={value}"], cls, section)
    assert by_flag == by_word != load_config(cls, section)
    args, both = parse_command(parser, [f"{key}=5", _flag(key), value], cls, section)
    assert both == by_flag and command_overrides(args) == [f"{key}=5", f"{key}={value}"]  # the flag wins


def test_words_may_sit_between_flags():
    """The README's multilingual line: a key=value word between flags."""
    args, cfg = parse_command(tts_cmd.build_parser(), ["--model", "tiny-multilingual", "multilingual=true",
                                                      "--language", "fr", "--text", "Bonjour.", "--out", "fr.wav",
                                                      "seed=3"], TTSConfig, "tts")
    assert (cfg.model, cfg.multilingual, cfg.language, cfg.seed, args.text) == ("tiny-multilingual", True, "fr", 3,
                                                                                 "Bonjour.")


def test_cli_unknown_key(tmp_path, capsys):
    out = tmp_path / "t.wav"
    assert tts_cmd.main(["--text", "Hello.", "--out", str(out), "bogus=1"]) != 0
    assert "bogus" in capsys.readouterr().err
    assert not out.exists()


def test_cli_invalid_value(tmp_path, capsys):
    out = tmp_path / "t.wav"
    assert tts_cmd.main(["--text", "Hello.", "--out", str(out), "temperature=abc"]) != 0
    assert "temperature" in capsys.readouterr().err
    assert not out.exists()


def test_vc_keeps_no_watermark_flag():
    args, cfg = parse_command(vc_cmd.build_parser(), ["--source", "a.wav", "--out", "b.wav", "--no-watermark"],
                              VCConfig, "vc")
    assert args.no_watermark and cfg.watermark  # main() turns the watermark off for either spelling


def test_tts_runs_with_a_flag_setting(english, tmp_path, monkeypatch, capsys):
    """A real synthesis on the tiny preset, `--temperature 0.6` reaching `generate` (the session's model)."""
    seen = {}
    generate = english.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(tts_cmd, "load_model", lambda cfg: english)
    monkeypatch.setattr(english, "generate", spy)
    out = tmp_path / "x.wav"
    assert tts_cmd.main(["--temperature", "0.6", "--text", "Hi.", "--out", str(out), "max_new_tokens=10"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert seen["temperature"] == 0.6 and seen["max_new_tokens"] == 10
    assert set(seen) >= set(SAMPLING_FIELDS) and seen["repetition_penalty"] is None  # None: the family's default


# --- limits shared by sampling, streaming, config sections and requests -----------------------------------

REQUEST_BOUNDS = {  # the server's request bounds as they were before the table: no request changes its answer
    "temperature": {"ge": 0.05, "le": 5.0}, "cfg_weight": {"ge": 0.0, "le": 10.0},
    "exaggeration": {"ge": 0.0, "le": 3.0}, "min_p": {"ge": 0.0, "le": 1.0}, "top_p": {"gt": 0.0, "le": 1.0},
    "repetition_penalty": {"ge": 1.0, "le": 10.0}, "chunk_size": {"ge": 4, "le": 200},
}


def _probes(name: str) -> list[float]:
    """Values on and around every bound of `name`, valid and invalid."""
    limit = LIMITS[name]
    edges = {b for lim in (limit, limit.request or limit) for b in (lim.ge, lim.gt, lim.le) if b is not None}
    return sorted({v for b in edges for v in (b - 1, b - 1e-6, b, b + 1e-6, b + 1)} | {-1e9, 0.0, 1e9})


def test_request_bounds_come_from_the_table_unchanged():
    for name, bounds in REQUEST_BOUNDS.items():
        assert LIMITS[name].pydantic() == bounds, name


@pytest.mark.parametrize("name", REQUEST_BOUNDS)
def test_what_the_model_refuses_a_request_cannot_ask_for(name):
    owner = StreamConfig if name == "chunk_size" else SamplingConfig if name in SAMPLING_FIELDS else None
    for value in _probes(name):
        value = int(math.floor(value)) if name == "chunk_size" else value
        if not LIMITS[name].allows(value):
            with pytest.raises(ValidationError):
                SynthesisOptions(**{name: value})
            if owner is not None:
                with pytest.raises(ValueError, match=name):
                    owner(**{name: value})
    with pytest.raises(ValueError, match="chunk_size"):
        StreamConfig(chunk_size=0)
    with pytest.raises(ValidationError):
        SynthesisOptions(chunk_size=0)


def test_config_sections_check_their_stream_settings():
    with pytest.raises(ValueError, match="stream.temperature must be > 0"):
        StreamSettings(temperature=0)
    with pytest.raises(ValueError, match="stream.prompt_tokens must be >= 1"):
        StreamSettings(prompt_tokens=-1)
    with pytest.raises(ValueError, match="strategy must be one of incremental, window"):
        ServerConfig(strategy="psychic")
    with pytest.raises(ValueError, match="fade must be one of"):
        check_limits({"fade": "cubic"})
    check_limits({"prompt_tokens": None, "max_chunk_size": -5})  # None: the default; no row: not checked here


def test_the_servers_prompt_tokens_reach_a_turbo_stream(turbo):
    """Unset, a Turbo stream keeps its family's 50 prompt tokens; 0 is the whole prompt; a number is that number."""
    for value, expected in ((None, 50), (0, None), (75, 75)):
        settings = ServerConfig(prompt_tokens=value).stream_settings()
        assert turbo.utterance("Hello.", **settings).cfg.prompt_tokens == expected


def test_zero_prompt_tokens_in_a_config_file_means_the_whole_prompt():
    assert prompt_tokens_setting(0) is None and prompt_tokens_setting(25) == 25
    assert "prompt_tokens" not in ServerConfig().stream_settings()  # unset: the model family's
    assert ServerConfig(prompt_tokens=0).stream_settings()["prompt_tokens"] == 0  # the whole prompt, any family
    assert ServerConfig(prompt_tokens=75).stream_settings()["prompt_tokens"] == 75
    assert "prompt_tokens" not in StreamSettings().generate_kwargs()  # evaluation too: unset is the family's
    assert StreamSettings(prompt_tokens=0).generate_kwargs()["prompt_tokens"] == 0  # the whole prompt
    kwargs = StreamSettings(prompt_tokens=25, temperature=0.7).generate_kwargs()
    assert kwargs == {"prompt_tokens": 25, "temperature": 0.7, "chunk_size": 25, "strategy": "incremental",
                      "context_window": 50, "max_new_tokens": 400}
    with pytest.raises(ValueError, match="prompt_tokens"):
        StreamConfig(prompt_tokens=0)  # in Python, None says "the whole prompt"


def test_sampling_field_names_come_from_sampling_config():
    assert SAMPLING_FIELDS == tuple(f.name for f in dataclasses.fields(SamplingConfig))
    assert set(TTSConfig().sampling()) == set(SAMPLING_FIELDS)
    request_fields = set(SynthesisOptions.model_fields)
    assert set(SAMPLING_FIELDS) - request_fields == {"max_new_tokens"}  # the server's config sets that one
