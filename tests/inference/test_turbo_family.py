"""Turbo, Nano and multilingual v3 as users call them: the tiny-turbo preset through the CLI and the Python API,
loading folders and repo ids, the family's settings, voice references and bad input."""
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from inference import ChatterboxTurboTTS, load_chatterbox
from inference.audio import AudioError
from inference.checkpoints import CheckpointError
from inference.families import NANO, TURBO
from inference.loading import family_for
from inference.models.rates import S3GEN_SR, TOKEN_SAMPLES
from inference.models.tokenizers import TextError
from inference.models.tokenizers.normalize import split_for_synthesis

ROOT = Path(__file__).resolve().parents[2]
FEW = dict(max_new_tokens=4)  # random weights rarely say stop: keep every piece short


@pytest.fixture(scope="module")
def turbo_folder(turbo, tmp_path_factory) -> Path:
    return turbo.save_local(tmp_path_factory.mktemp("turbo") / "model")


def test_preset_is_turbo_shaped(turbo):
    assert turbo.t3.cfg.is_gpt2 and turbo.is_preset
    assert hasattr(turbo.s3gen.flow.decoder.estimator, "time_embed_mixer")  # the meanflow S3Gen
    cfg = turbo.sampling_config()
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, cfg.cfg_weight, cfg.min_p) == \
        (0.8, 1000, 0.95, 1.2, 0.0, 0.0)


def test_cli_tiny_turbo_with_a_tag(tmp_path):
    """The README's offline command, as a user runs it (its own process)."""
    out = tmp_path / "x.wav"
    res = subprocess.run([sys.executable, "-m", "inference.tts", "--model", "tiny-turbo", "--text",
                          "Hi there [chuckle], one minute?", "--out", str(out), "max_new_tokens=20"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    info = sf.info(str(out))
    assert info.samplerate == S3GEN_SR and info.channels == 1
    # at most 20 tokens plus the 3 silence tokens Turbo appends before S3Gen
    assert 0 < info.frames <= (20 + 3) * TOKEN_SAMPLES
    assert "not speech" in res.stdout


def test_tag_is_one_token_and_unknown_tag_is_refused(turbo):
    tagged = turbo.text_tokens("Hi there [chuckle], one minute?")[0].tolist()
    chuckle = turbo.tokenizer.encode("[chuckle]")
    assert len(chuckle) == 1 and tagged.count(chuckle[0]) == 1  # one token, not letters
    assert "[chuckle]" in turbo.tokenizer.decode(tagged)
    with pytest.raises(TextError, match=r"\[nonsense\].*\[laugh\]"):
        turbo.text_tokens("Well [nonsense] then.")


def test_text_has_no_start_stop_markers(turbo):
    ids = turbo.text_tokens("Hello there.")[0].tolist()
    assert ids == turbo.tokenizer.encode("Hello there.")


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_an_error(turbo, text):
    with pytest.raises(TextError, match="empty"):
        turbo.generate(text, seed=0, **FEW)


def test_ten_thousand_characters_are_split_not_truncated(turbo):
    """10,000 characters become pieces of at most 300 characters, every word kept and every piece tokenized
    (checked without synthesising 34 pieces); a few pieces synthesise one after the other."""
    text = " ".join(["This sentence keeps going for a while, as long sentences do."] * 164)[:10_000]
    utterance = turbo.utterance(text, seed=0)
    pieces = split_for_synthesis(text, 300)
    assert len(utterance.pieces) == len(pieces) >= 34
    assert " ".join(pieces).split() == text.split()
    assert all(p.text_tokens.shape[1] > 0 and len(p.text_tokens.shape) == 2 for p in utterance.pieces)
    short = text[:700]
    wav = turbo.generate(short, seed=0, watermark=False, max_new_tokens=2)
    n = len(split_for_synthesis(short, 300))
    # every piece: 2 tokens (fewer if it stopped) plus Turbo's 3 silence tokens
    assert n == 3 and n * 4 * TOKEN_SAMPLES <= wav.shape[1] <= n * 5 * TOKEN_SAMPLES


@pytest.mark.parametrize("setting", [{"cfg_weight": 0.7}, {"min_p": 0.05}, {"exaggeration": 0.5}])
def test_settings_turbo_does_not_use_are_refused(turbo, setting):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"{name}=.* does not apply to the turbo model"):
        turbo.generate("Hi.", seed=0, **setting, **FEW)
    turbo.generate("Hi.", seed=0, watermark=False, **{name: 0}, **FEW)  # off is fine


def test_top_k_is_refused_by_the_original_model(english):
    with pytest.raises(ValueError, match="top_k=50 does not apply to the english model"):
        english.generate_speech_tokens("Hi.", top_k=50, max_new_tokens=3)


def test_seed_determinism(turbo):
    a = turbo.generate("Hello there.", seed=3, watermark=False, max_new_tokens=8)
    b = turbo.generate("Hello there.", seed=3, watermark=False, max_new_tokens=8)
    c = turbo.generate("Hello there.", seed=4, watermark=False, max_new_tokens=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reference_must_be_longer_than_five_seconds(turbo):
    from inference.presets import synthetic_reference

    before = turbo.conds
    with pytest.raises(AudioError, match="longer than 5 s"):
        turbo.prepare_conditionals_from_array(synthetic_reference(S3GEN_SR, 3.0), S3GEN_SR)
    conds = turbo.prepare_conditionals_from_array(synthetic_reference(S3GEN_SR, 16.0), S3GEN_SR)
    assert conds.t3.cond_prompt_speech_tokens.shape[1] == 375  # the first 15 s, at most 375 tokens
    turbo.conds = before


def test_folder_round_trip_and_family_detection(turbo, turbo_folder):
    from transformers import AutoTokenizer

    assert (turbo_folder / "t3_turbo_v1.safetensors").is_file() and (turbo_folder / "s3gen_meanflow.safetensors").is_file()
    assert "tfmr.wte.weight" in load_file(str(turbo_folder / "t3_turbo_v1.safetensors"))
    assert AutoTokenizer.from_pretrained(turbo_folder).encode("[laugh]") == turbo.tokenizer.encode("[laugh]")
    loaded = load_chatterbox(turbo_folder)
    assert type(loaded) is ChatterboxTurboTTS and not loaded.is_preset
    a = turbo.generate("Hello there.", seed=5, watermark=False, max_new_tokens=6)
    b = loaded.generate("Hello there.", seed=5, watermark=False, max_new_tokens=6)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="holds a turbo model"):
        load_chatterbox(turbo_folder, family="english")


def test_renamed_key_is_listed(turbo_folder, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for f in turbo_folder.iterdir():
        (folder / f.name).symlink_to(f)
    state = load_file(str(turbo_folder / "t3_turbo_v1.safetensors"))
    state["tfmr.h.0.attn.c_attn.weight_renamed"] = state.pop("tfmr.h.0.attn.c_attn.weight")
    (folder / "t3_turbo_v1.safetensors").unlink()
    save_file(state, str(folder / "t3_turbo_v1.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_chatterbox(folder)
    assert "missing keys (1): tfmr.h.0.attn.c_attn.weight" in str(err.value)
    assert "unexpected keys (1): tfmr.h.0.attn.c_attn.weight_renamed" in str(err.value)


def test_repo_ids_offline_name_the_files():
    assert family_for("ResembleAI/chatterbox-turbo") is TURBO and family_for("resembleai/chatterbox-nano") is NANO
    res = subprocess.run([sys.executable, "-m", "inference.tts", "--model", "ResembleAI/chatterbox-turbo", "--text",
                          "Hi.", "--out", "never.wav"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    for name in ("t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "ve.safetensors", "tokenizer_config.json"):
        assert name in res.stderr


def test_voice_conversion_uses_the_meanflow_s3gen(turbo_folder, tmp_path):
    from inference.presets import synthetic_reference
    from inference.vc import ChatterboxVC

    vc = ChatterboxVC.from_local(turbo_folder)
    assert hasattr(vc.s3gen.flow.decoder.estimator, "time_embed_mixer")
    source = tmp_path / "words.wav"
    sf.write(str(source), synthetic_reference(16000, 2.0), 16000)
    wav = vc.generate(source, seed=0, watermark=False)
    assert wav.shape[1] == 50 * TOKEN_SAMPLES  # 2 s: 50 tokens of 960 samples
    assert torch.isfinite(wav).all()


# --- multilingual v3 ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v3_folder(multilingual, tmp_path_factory) -> Path:
    folder = multilingual.save_local(tmp_path_factory.mktemp("mtl") / "model")
    (folder / "t3_mtl23ls_v2.safetensors").rename(folder / "t3_mtl23ls_v3.safetensors")
    return folder


def test_v3_loads_with_upstreams_decoding(v3_folder):
    v3 = load_chatterbox(v3_folder, t3_model="v3")
    assert v3.decoding.trim_last_token and not v3.decoding.alignment_guard and not v3.t3.alignment_guard
    assert v3.sampling_config().repetition_penalty == 1.2
    same = load_chatterbox(v3_folder)  # the folder's only T3 file
    assert same.decoding == v3.decoding
    with pytest.raises(FileNotFoundError, match="t3_mtl23ls_v2.safetensors"):
        load_chatterbox(v3_folder, t3_model="v2")
    with pytest.raises(ValueError, match="t3_model"):
        load_chatterbox(v3_folder, t3_model="v9")


def test_trim_drops_exactly_the_last_token(multilingual):
    import dataclasses

    before = multilingual.decoding
    try:
        multilingual.decoding = dataclasses.replace(before, alignment_guard=False, trim_last_token=False)
        whole = multilingual.generate("Bonjour.", language_id="fr", seed=1, watermark=False, max_new_tokens=6)
        multilingual.decoding = dataclasses.replace(multilingual.decoding, trim_last_token=True)
        trimmed = multilingual.generate("Bonjour.", language_id="fr", seed=1, watermark=False, max_new_tokens=6)
    finally:
        multilingual.decoding = before
    assert trimmed.shape[1] == whole.shape[1] - TOKEN_SAMPLES
    torch.testing.assert_close(trimmed, whole[:, :trimmed.shape[1]])


def test_t3_model_is_for_the_multilingual_model_only(turbo_folder):
    with pytest.raises(ValueError, match="multilingual model only"):
        load_chatterbox(turbo_folder, t3_model="v3")


def test_reduced_precision_on_the_gpt2_t3_and_meanflow_s3gen(turbo):
    """bfloat16 T3 and S3Gen flow under bfloat16 autocast, as users ask for speed on the CPU (what load_chatterbox's
    t3_dtype/s3gen_dtype do, applied to a copy of the preset's T3 and, for the test only, to its S3Gen)."""
    import copy

    from inference.precision import set_s3gen_dtype, set_t3_dtype

    fast = ChatterboxTurboTTS(set_t3_dtype(copy.deepcopy(turbo.t3), "bfloat16"), turbo.s3gen, turbo.ve,
                              turbo.tokenizer, conds=turbo.conds)
    set_s3gen_dtype(turbo.s3gen, "bfloat16")
    try:
        assert fast.t3.speech_emb.weight.dtype == torch.bfloat16
        wav = fast.generate("Hello there.", seed=0, watermark=False, max_new_tokens=6)
    finally:
        set_s3gen_dtype(turbo.s3gen, "float32")
    full = turbo.generate("Hello there.", seed=0, watermark=False, max_new_tokens=6)
    assert wav.dtype == torch.float32 and torch.isfinite(wav).all() and wav.abs().max() > 0
    assert wav.shape[1] <= (6 + 3) * TOKEN_SAMPLES and not torch.equal(wav[:, :full.shape[1]], full[:, :wav.shape[1]])


def test_nano_folder_is_recognised(turbo, tmp_path):
    from inference import ChatterboxNanoTTS

    nano = ChatterboxNanoTTS(turbo.t3, turbo.s3gen, turbo.ve, turbo.tokenizer, conds=turbo.conds)  # same tiny parts
    folder = nano.save_local(tmp_path / "nano")
    assert (folder / "t3_nano_v1.safetensors").is_file() and not (folder / "t3_turbo_v1.safetensors").exists()
    loaded = load_chatterbox(folder)
    assert type(loaded) is ChatterboxNanoTTS and loaded.FAMILY is NANO


def test_cli_multilingual_v3(v3_folder, tmp_path, capsys):
    """`multilingual=true t3_model=v3` as a user types it."""
    from inference import tts

    out = tmp_path / "fr3.wav"
    code = tts.main(["--model", str(v3_folder), "multilingual=true", "t3_model=v3", "--language", "fr", "--text",
                     "Bonjour.", "--out", str(out), "max_new_tokens=5", "watermark=false"])
    assert code == 0, capsys.readouterr().err
    assert 0 < sf.info(str(out)).frames <= 4 * TOKEN_SAMPLES  # 5 tokens at most, the last one trimmed
    code = tts.main(["--model", str(v3_folder), "t3_model=v2", "--language", "fr", "--text", "Bonjour.", "--out",
                     str(out)])
    assert code == 2 and "t3_mtl23ls_v2.safetensors" in capsys.readouterr().err


def test_streaming_options_are_checked_against_the_family(turbo, english):
    with pytest.raises(ValueError, match="cfg_weight=0.5 does not apply to the turbo model"):
        turbo.utterance("Hi.", cfg_weight=0.5)
    with pytest.raises(ValueError, match="top_k=5 does not apply to the english model"):
        english.utterance("Hi.", top_k=5)
    assert turbo.utterance("Hi.", top_k=50).pieces[0].sampling.top_k == 50


def test_cli_refuses_a_short_reference_before_loading(tmp_path, capsys):
    from inference import tts
    from inference.presets import synthetic_reference

    ref = tmp_path / "ref3.wav"
    sf.write(str(ref), synthetic_reference(S3GEN_SR, 3.0), S3GEN_SR)
    code = tts.main(["--model", "tiny-turbo", "--voice", str(ref), "--text", "Hi.", "--out", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "Turbo needs a reference longer than 5 s; got 3.0 s" in err and "loaded" not in err


def test_cli_refuses_multilingual_switches_and_settings_before_loading(capsys, tmp_path):
    """Settings the family does not use fail with exit 2: cfg_weight and a contradicting family before the model
    loads, v3's switches on Turbo once the model's family is known."""
    from inference import tts

    out = str(tmp_path / "o.wav")
    for extra, message in ((["cfg_weight=0.5"], "cfg_weight=0.5 does not apply to the turbo model"),
                           (["family=english"], "the preset tiny-turbo is the turbo model, not english"),
                           (["trim_last_token=true"], "applies to the multilingual model only")):
        code = tts.main(["--model", "tiny-turbo", "--text", "Hi.", "--out", out, *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
