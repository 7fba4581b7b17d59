"""Checkpoint I/O: the official layout, strict loading with readable errors, atomic saves, conds.pt,
and what the loaders say when files, folders or the network are missing."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from inference.chatterbox import T3_CONFIG_FILE, ChatterboxMultilingualTTS, ChatterboxTTS
from inference.checkpoints import CheckpointError, load_module, read_state_dict, save_module
from inference.families import ENGLISH, MULTILINGUAL
from inference.conditionals import Conditionals
from inference.models.t3 import T3, T3Config

PROMPT = "Hello there."


# --- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def english_dir(english, tmp_path_factory) -> Path:
    """A saved tiny English model; tests must not modify it (copy files they want to damage)."""
    return english.save_local(tmp_path_factory.mktemp("english"))


@pytest.fixture(scope="module")
def multilingual_dir(multilingual, tmp_path_factory) -> Path:
    return multilingual.save_local(tmp_path_factory.mktemp("multilingual"))


def _copy_model(src: Path, dst: Path, copy: tuple[str, ...] = ()) -> Path:
    """A model folder whose files link to `src`, except the ones in `copy`, which are real copies.

    The S3Gen file is ~1 GB: link it. Tests may delete links, but must name in `copy` every file
    they rewrite (writing through a link would damage the shared model)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in copy:
            (dst / f.name).write_bytes(f.read_bytes())
        else:
            (dst / f.name).symlink_to(f)
    return dst


@pytest.fixture(scope="module")
def english_reloaded(english_dir) -> ChatterboxTTS:
    return ChatterboxTTS.from_local(english_dir)


def _assert_same_weights(name: str, original: torch.nn.Module, loaded: torch.nn.Module) -> None:
    expected, actual = original.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{name}.{key} changed"


def _message_line(err: pytest.ExceptionInfo, label: str) -> str:
    """The line of a load_strict message that starts with `label` ("missing", "unexpected", "shape")."""
    lines = [line for line in str(err.value).splitlines() if line.strip().startswith(label)]
    assert lines, f"no line starting with {label!r} in:\n{err.value}"
    return lines[0]


# --- save_local / from_local round trips -------------------------------------------------------------

def test_english_save_local_writes_official_names(english_dir):
    names = {p.name for p in english_dir.iterdir()}
    assert names == {"t3_cfg.safetensors", "ve.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt",
                     T3_CONFIG_FILE}
    assert ENGLISH.files.t3 == "t3_cfg.safetensors" and ENGLISH.files.ve == "ve.safetensors"
    assert ENGLISH.files.s3gen == "s3gen.safetensors"


def test_english_round_trip_generates_identical_tokens(english, english_reloaded):
    reloaded = english_reloaded
    assert reloaded.t3.cfg == english.t3.cfg == T3Config.tiny()
    assert not reloaded.is_preset
    before = english.generate_speech_tokens(PROMPT, seed=3, max_new_tokens=40)
    after = reloaded.generate_speech_tokens(PROMPT, seed=3, max_new_tokens=40)
    assert len(before) > 0
    assert torch.equal(before, after)


def test_round_trip_keeps_weights_exactly(english, english_reloaded):
    for name in ("t3", "ve", "s3gen"):
        _assert_same_weights(name, getattr(english, name), getattr(english_reloaded, name))


def test_round_trip_keeps_the_voice(english, english_reloaded):
    """conds.pt carries both halves of the voice: T3's conditioning and S3Gen's reference."""
    for key, value in english.conds.gen.items():
        loaded = english_reloaded.conds.gen[key]
        assert (loaded is None) if value is None else torch.equal(loaded, value), key
    assert torch.equal(english_reloaded.conds.t3.speaker_emb, english.conds.t3.speaker_emb)


def test_multilingual_save_local_writes_official_names(multilingual_dir):
    names = {p.name for p in multilingual_dir.iterdir()}
    assert {"t3_mtl23ls_v2.safetensors", "ve.pt", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json", "conds.pt",
            T3_CONFIG_FILE} <= names
    assert MULTILINGUAL.files.t3 in names and MULTILINGUAL.files.tokenizer in names
    assert MULTILINGUAL.files.s3gen == "s3gen.pt"
    assert not any(n.endswith(".partial") for n in names)


def test_multilingual_round_trip_generates_identical_tokens(multilingual, multilingual_dir):
    reloaded = ChatterboxMultilingualTTS.from_local(multilingual_dir)
    assert reloaded.t3.cfg == multilingual.t3.cfg == T3Config.tiny(multilingual=True)
    before = multilingual.generate_speech_tokens(PROMPT, language_id="fr", seed=3, max_new_tokens=40)
    after = reloaded.generate_speech_tokens(PROMPT, language_id="fr", seed=3, max_new_tokens=40)
    assert len(before) > 0
    assert torch.equal(before, after)
    _assert_same_weights("s3gen", multilingual.s3gen, reloaded.s3gen)  # s3gen.pt (torch format) round trip


# --- strict loading -----------------------------------------------------------------------------------

def test_missing_key_is_listed(english_dir, tmp_path):
    folder = _copy_model(english_dir, tmp_path / "model", copy=(ENGLISH.files.t3,))
    path = folder / ENGLISH.files.t3
    state = load_file(str(path))
    removed = "speech_head.weight" if "speech_head.weight" in state else sorted(state)[0]
    del state[removed]
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        ChatterboxTTS.from_local(folder)
    line = _message_line(err, "missing")
    assert removed in line
    assert not any(line.strip().startswith("unexpected") for line in str(err.value).splitlines())
    assert str(path) in str(err.value)


def test_unexpected_key_is_listed(english_dir, tmp_path):
    path = tmp_path / ENGLISH.files.t3
    state = load_file(str(english_dir / ENGLISH.files.t3))
    state["bogus.extra_weight"] = torch.zeros(3)
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_module(T3(T3Config.tiny(), init_weights=False), path)
    line = _message_line(err, "unexpected")
    assert "bogus.extra_weight" in line
    assert not any(line.strip().startswith("missing") for line in str(err.value).splitlines())


def test_english_weights_into_multilingual_t3_report_shape(english_dir):
    t3 = T3(T3Config.tiny(multilingual=True), init_weights=False)
    with pytest.raises(CheckpointError) as err:
        load_module(t3, english_dir / ENGLISH.files.t3)
    line = _message_line(err, "shape")
    assert "text_emb.weight" in line


def test_english_folder_loaded_as_multilingual_fails_clearly(english_dir):
    with pytest.raises(FileNotFoundError) as err:
        ChatterboxMultilingualTTS.from_local(english_dir)
    assert MULTILINGUAL.files.t3 in str(err.value)


# --- unreadable files ---------------------------------------------------------------------------------

def test_truncated_safetensors(english_dir, tmp_path):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes((english_dir / ENGLISH.files.t3).read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_truncated_pt(multilingual_dir, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes((multilingual_dir / MULTILINGUAL.files.ve).read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_nonexistent_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "nope.pt")


@pytest.mark.parametrize("payload", [torch.zeros(3), [torch.zeros(3)], {"a": 1}], ids=["tensor", "list", "int"])
def test_pt_without_state_dict(tmp_path, payload):
    path = tmp_path / "weird.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_legacy_model_wrapper_loads(english, tmp_path):
    state = {k: v.clone() for k, v in english.ve.state_dict().items()}
    path = tmp_path / "legacy.pt"
    torch.save({"model": [state]}, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_state_dict_of_pt_and_safetensors_agree(multilingual, multilingual_dir):
    ve = read_state_dict(multilingual_dir / MULTILINGUAL.files.ve)  # torch .pt
    t3 = read_state_dict(multilingual_dir / MULTILINGUAL.files.t3)  # safetensors
    for module, state in ((multilingual.ve, ve), (multilingual.t3, t3)):
        expected = module.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)


# --- save_module ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_save_module_is_atomic(english, tmp_path, name):
    path = tmp_path / "sub" / name
    save_module(english.ve, path)
    save_module(english.ve, path)  # overwriting an existing file works too
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [name]
    state = read_state_dict(path)
    assert all(torch.equal(state[k], v) for k, v in english.ve.state_dict().items())


# --- Conditionals ---------------------------------------------------------------------------------------

def test_conditionals_round_trip(tmp_path, english):
    # a new Conditionals: the preset fixture is shared by the whole session and keeps its own voice
    conds = Conditionals(english.conds.t3,
                         {"prompt_token": torch.arange(6).view(1, 6), "prompt_token_len": torch.tensor([6]),
                          "embedding": torch.randn(1, 192)})
    path = tmp_path / "conds.pt"
    conds.save(path)
    loaded = Conditionals.load(path)
    for f in fields(conds.t3):
        a, b = getattr(conds.t3, f.name), getattr(loaded.t3, f.name)
        if torch.is_tensor(a):
            assert torch.equal(a, b), f.name
            assert a.dtype == b.dtype
        else:
            assert a == b, f.name
    assert loaded.gen.keys() == conds.gen.keys()
    assert all(torch.equal(loaded.gen[k], v) for k, v in conds.gen.items())


def test_conditionals_garbage_file(tmp_path):
    path = tmp_path / "conds.pt"
    path.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(CheckpointError) as err:
        Conditionals.load(path)
    assert str(path) in str(err.value)


def test_conditionals_wrong_content(tmp_path):
    path = tmp_path / "conds.pt"
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError):
        Conditionals.load(path)


def test_conditionals_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Conditionals.load(tmp_path / "conds.pt")


# --- missing folders / files / network ----------------------------------------------------------------

def test_from_local_without_tokenizer(english_dir, tmp_path):
    folder = _copy_model(english_dir, tmp_path / "model")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as err:
        ChatterboxTTS.from_local(folder)
    assert "tokenizer.json" in str(err.value)


@pytest.mark.parametrize("family", ["english", "multilingual"])
def test_from_local_without_s3gen(family, request, tmp_path):
    cls, files = ((ChatterboxTTS, ENGLISH.files) if family == "english"
                  else (ChatterboxMultilingualTTS, MULTILINGUAL.files))
    folder = _copy_model(request.getfixturevalue(f"{family}_dir"), tmp_path / "model")
    (folder / files.s3gen).unlink()
    with pytest.raises(FileNotFoundError) as err:
        cls.from_local(folder)
    assert files.s3gen in str(err.value).split("(expected")[0]  # named as missing, not only in the layout list


def test_from_local_nonexistent_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        ChatterboxTTS.from_local(tmp_path / "does-not-exist")


def test_from_local_without_conds_has_no_voice(english_dir, tmp_path):
    folder = _copy_model(english_dir, tmp_path / "model")
    (folder / "conds.pt").unlink()
    model = ChatterboxTTS.from_local(folder)
    assert model.conds is None
    with pytest.raises(RuntimeError, match="conds.pt"):
        model.generate_speech_tokens(PROMPT, max_new_tokens=5)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and an empty HF cache; huggingface_hub reads both settings at import time."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.chdir(tmp_path)  # relative paths in load() must not hit the project folder


def test_from_pretrained_offline_tells_to_pass_a_folder(offline_hub):
    with pytest.raises(CheckpointError) as err:
        ChatterboxTTS.from_pretrained()
    message = str(err.value)
    assert "folder" in message
    assert ENGLISH.files.t3 in message
    assert "offline" in message.lower()  # the hub refused because of offline mode, not a network failure


def test_load_repo_id_offline(offline_hub):
    with pytest.raises(CheckpointError):
        ChatterboxTTS.load("no/such-dir-and-not-a-repo")


def test_load_unknown_name():
    with pytest.raises(FileNotFoundError, match="preset"):
        ChatterboxTTS.load("nonsense")


def test_load_dispatch(english, english_dir, monkeypatch):
    from inference import presets

    monkeypatch.setattr(presets, "synthetic_s3gen", lambda family=None: english.s3gen)  # dispatch only: skip a 1 GB build
    assert ChatterboxTTS.load("tiny").is_preset
    assert ChatterboxMultilingualTTS.load("tiny-multilingual").t3.cfg.is_multilingual
    assert not ChatterboxTTS.load(english_dir).is_preset
    assert not ChatterboxTTS.load(str(english_dir)).is_preset


def test_weights_in_the_other_format_are_found(english_dir, tmp_path):
    """ve.pt / s3gen.pt beside an English tokenizer load like ve.safetensors / s3gen.safetensors."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in english_dir.iterdir():
        if f.name in ("ve.safetensors", "s3gen.safetensors"):
            torch.save(read_state_dict(f), folder / f.name.replace(".safetensors", ".pt"))
        else:
            (folder / f.name).symlink_to(f)
    reloaded = ChatterboxTTS.from_local(folder)
    original = read_state_dict(english_dir / "ve.safetensors")
    assert all(torch.equal(v, original[k]) for k, v in reloaded.ve.state_dict().items())
