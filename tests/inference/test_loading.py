"""Model sources and families: one rule for "preset, folder or repo id?" and one for "which family?"."""
from __future__ import annotations

import pytest

from inference import loading
from inference.families import ENGLISH, FAMILIES, MULTILINGUAL, PRESETS, family_named
from inference.models.tokenizers import TextError


@pytest.mark.parametrize("text, expected", [
    ("ResembleAI/chatterbox", True), ("owner/name-2.1", True),
    ("tiny", False), ("./model", False), ("/abs/model", False), ("a/b/c", False), ("~/model", False),
    ("owner/", False), ("/name", False), ("with space/name", False),
])
def test_is_repo_id(text, expected):
    assert loading.is_repo_id(text) is expected


def test_an_existing_folder_is_a_folder_not_a_repo_id(tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not loading.is_repo_id("owner/name")
    assert loading.describe_source("owner/name") == "folder"


def test_describe_source_names_the_three_choices(tmp_path):
    assert [loading.describe_source(p) for p in PRESETS] == ["preset"] * len(PRESETS)
    assert loading.describe_source(tmp_path) == "folder"
    assert loading.describe_source("ResembleAI/chatterbox") == "repo"
    with pytest.raises(FileNotFoundError, match="neither a preset .*tiny.*existing folder.*repo id"):
        loading.describe_source("./no/such/folder")


def test_family_for_every_source(tmp_path):
    assert loading.family_for("tiny") is ENGLISH and loading.family_for("tiny-multilingual") is MULTILINGUAL
    assert loading.family_for("tiny", multilingual=True) is MULTILINGUAL  # `--model tiny multilingual=true`
    assert loading.family_for("ResembleAI/chatterbox") is ENGLISH
    assert loading.family_for("ResembleAI/chatterbox", multilingual=True) is MULTILINGUAL
    (tmp_path / MULTILINGUAL.files.t3.replace(".safetensors", ".pt")).write_bytes(b"")  # either format counts
    assert loading.family_for(tmp_path) is MULTILINGUAL


def test_families_differ_only_by_their_descriptions():
    assert set(FAMILIES) == {"english", "multilingual", "turbo", "nano"} and family_named("english") is ENGLISH
    assert {f.files.t3 for f in FAMILIES.values()} == {"t3_cfg.safetensors", "t3_mtl23ls_v2.safetensors",
                                                       "t3_turbo_v1.safetensors", "t3_nano_v1.safetensors"}
    assert (ENGLISH.repetition_penalty, MULTILINGUAL.repetition_penalty) == (1.2, 2.0)
    assert FAMILIES["turbo"].sampling == FAMILIES["nano"].sampling and FAMILIES["turbo"].sampling.top_k == 1000
    with pytest.raises(ValueError, match="known: english, multilingual, turbo, nano"):
        family_named("turbo-v2")


class _Echo:
    def encode(self, text, language=None):
        return [text, language]


def test_language_rule_of_each_family():
    assert ENGLISH.encode(_Echo(), "hi", None) == ["hi", None]
    assert ENGLISH.encode(_Echo(), "hi", "en") == ["hi", None]
    with pytest.raises(TextError, match="cannot speak language 'fr'"):
        ENGLISH.encode(_Echo(), "hi", "fr")
    with pytest.raises(TextError, match="needs language_id"):
        MULTILINGUAL.encode(_Echo(), "hi", None)
    assert MULTILINGUAL.encode(_Echo(), "hi", "FR") == ["hi", "fr"]


def test_constant_buffers_may_be_missing_from_a_file():
    assert loading.constant_buffer("tokenizer._mel_filters") and loading.constant_buffer("x.num_batches_tracked")
    assert not loading.constant_buffer("flow.encoder.weight")
