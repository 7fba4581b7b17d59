"""The GPT-2 T3 of Turbo and Nano at toy size: its decoding against teacher forcing, its sampling chain, its
checkpoint rule for GPT-2's unused token table, and int8."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from inference.checkpoints import CheckpointError, load_module, save_module
from inference.models.t3 import T3, SamplingConfig, T3Cond, T3Config
from inference.models.t3.sampling import TurboLogitsPipeline
from inference.synthetic import fill_synthetic

TURBO_SAMPLING = SamplingConfig(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2, min_p=0.0,
                                cfg_weight=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def model():
    return fill_synthetic(T3(T3Config.tiny_turbo(512), init_weights=False)).eval()


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(1)
    return T3Cond(torch.rand(1, 256, generator=g), torch.randint(0, 6561, (1, 30), generator=g))


def test_layout_has_no_llama_parts(model):
    keys = set(model.state_dict())
    assert not any(k.startswith(("text_pos_emb", "speech_pos_emb", "cond_enc.perceiver", "cond_enc.emotion"))
                   for k in keys)
    assert "speech_head.bias" in keys and "tfmr.wte.weight" not in keys and "tfmr.wpe.weight" in keys
    assert model.unused_checkpoint_keys == {"tfmr.wte.weight": (512, 64)}


def test_conditioning_is_speaker_then_prompt_embeddings(model, cond):
    with torch.no_grad():
        emb = model.embed_conditioning(cond)
    assert emb.shape == (1, 31, 64)
    torch.testing.assert_close(emb[0, 1:], model.speech_emb(cond.cond_prompt_speech_tokens[0]))
    # exaggeration has no path into the GPT-2 T3
    other = T3Cond(cond.speaker_emb, cond.cond_prompt_speech_tokens, torch.full((1, 1, 1), 2.0))
    with torch.no_grad():
        assert torch.equal(model.embed_conditioning(other), emb)


def test_cached_decoding_matches_teacher_forcing(model, cond):
    """Every decoding step's logits equal the teacher-forced logits of the same sequence: the KV cache and GPT-2's
    positions continue where the prompt ended, and there is one start token."""
    text = torch.randint(0, 512, (1, 9), generator=torch.Generator().manual_seed(2))
    steps = []
    tokens = list(model.generate_tokens(cond, text, TURBO_SAMPLING, generator=torch.Generator().manual_seed(3),
                                        on_step=steps.append))
    assert len(tokens) == len(steps) >= 2
    speech = torch.tensor([[model.cfg.start_speech_token, *tokens[:-1]]])
    marked = torch.cat([torch.tensor([[255]]), text, torch.tensor([[0]])], 1)  # forward asserts the markers
    with torch.no_grad():
        cond_emb = model.embed_conditioning(cond)
        embeds = torch.cat([cond_emb, model.text_emb(text), model.speech_emb(speech)], 1)
        hidden = model.tfmr(inputs_embeds=embeds, use_cache=False).last_hidden_state
        forced = model.speech_head(hidden[0, -len(tokens):])
    torch.testing.assert_close(torch.stack([s.step_logits[0] for s in steps]), forced, atol=2e-5, rtol=1e-4)
    # teacher forcing takes the text as decoding does, without start/stop text tokens (training feeds it so)
    out = model(cond, text, torch.tensor([9]), speech, torch.tensor([speech.shape[1]]))
    torch.testing.assert_close(out.speech_logits[0], forced, atol=2e-5, rtol=1e-4)


def test_a_stop_token_first_does_not_stop(model, cond):
    """The reference samples the first token before its loop checks for the stop token."""
    stop = model.cfg.stop_speech_token
    picks = iter([stop, 5, stop])
    tokens = list(model.generate_tokens(cond, torch.tensor([[3, 4]]), TURBO_SAMPLING, choose=lambda p: next(picks)))
    assert tokens == [stop, 5, stop]


def test_turbo_chain_order_and_history():
    """Repetition penalty after the filters, on the survivors only; the start token penalised at step 0 only."""
    torch.manual_seed(0)
    logits = torch.randn(1, 6563)
    logits[0, 6561] = 9.0
    chain = TurboLogitsPipeline(SamplingConfig(temperature=1.0, top_k=20, top_p=1.0, repetition_penalty=2.0,
                                               min_p=0.0, cfg_weight=0.0))
    trace = {}
    chain(logits, None, torch.tensor([[6561, 7]]), trace)
    kept = torch.isfinite(trace["after_top_k"])
    assert int(kept.sum()) == 20 and trace["after_top_k"][0, 6561] == 9.0
    assert trace["after_repetition_penalty"][0, 6561] == 4.5  # positive: divided
    assert torch.isneginf(trace["after_repetition_penalty"][0, 7]) == (not kept[0, 7])
    with pytest.raises(ValueError, match="guidance"):
        chain(logits, logits, torch.tensor([[6561]]))


def test_checkpoint_holds_the_unused_table(model, tmp_path):
    """Our files carry tfmr.wte.weight as the official ones do (the reference loads strictly); a file without it,
    or with another shape, is refused with the key named."""
    path = tmp_path / "t3_turbo_v1.safetensors"
    save_module(model, path)
    state = load_file(str(path))
    assert state["tfmr.wte.weight"].shape == (512, 64)
    fresh = load_module(T3(model.cfg, init_weights=False), path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    del state["tfmr.wte.weight"]
    save_file(state, str(tmp_path / "no_wte.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): tfmr.wte.weight"):
        load_module(T3(model.cfg, init_weights=False), tmp_path / "no_wte.safetensors")
    state["tfmr.wte.weight"] = torch.zeros(10, 64)
    save_file(state, str(tmp_path / "bad_wte.safetensors"))
    with pytest.raises(CheckpointError, match=r"tfmr.wte.weight: file \(10, 64\) vs model \(512, 64\)"):
        load_module(T3(model.cfg, init_weights=False), tmp_path / "bad_wte.safetensors")


def test_int8_gpt2_t3_stays_close(model, cond):
    """Dynamic int8 quantizes GPT-2's Conv1D projections too (as Linear); the logits stay close to float32."""
    from transformers.pytorch_utils import Conv1D

    from inference.precision import set_t3_dtype

    quantized = set_t3_dtype(fill_synthetic(T3(model.cfg, init_weights=False)).eval(), "int8")
    assert not any(isinstance(m, Conv1D) for m in quantized.modules())
    text = torch.tensor([[3, 4, 5, 6]])
    picks = [1, 2, 3, 4]
    ref_steps, q_steps = [], []
    for m, out in ((model, ref_steps), (quantized, q_steps)):
        it = iter(picks)
        list(m.generate_tokens(cond, text, SamplingConfig(**{**vars(TURBO_SAMPLING), "max_new_tokens": 4}),
                               choose=lambda p, it=it: next(it), on_step=out.append))
    ref = torch.stack([s.step_logits for s in ref_steps])
    q = torch.stack([s.step_logits for s in q_steps])
    assert not torch.equal(ref, q)
    assert float((ref - q).abs().max()) < 0.05 * float(ref.abs().max())


def test_the_voices_conditioning_is_computed_once(model, cond):
    """The second text in the same voice reuses the voice's keys and values and gets the logits of a full prefill;
    another voice, a copy of T3 or weights changed in place compute them afresh."""
    import copy

    text = torch.randint(0, 512, (1, 7), generator=torch.Generator().manual_seed(4))
    model.voice_prefixes.clear()
    hits, misses = model.voice_prefixes.hits, model.voice_prefixes.misses

    def first_logits(t3, c):
        steps = []
        next(iter(t3.generate_tokens(c, text, TURBO_SAMPLING, generator=torch.Generator().manual_seed(0),
                                     on_step=steps.append)))
        return steps[0].step_logits

    fresh = first_logits(model, cond)
    reused = first_logits(model, cond)
    assert (model.voice_prefixes.misses - misses, model.voice_prefixes.hits - hits) == (1, 1)
    torch.testing.assert_close(reused, fresh, atol=0, rtol=0)
    with torch.no_grad():  # the reference: conditioning, text and start token in one call
        embeds, _ = model.decoding_prompt(cond, text, use_cfg=False)
        full = model.speech_head(model.tfmr(inputs_embeds=embeds).last_hidden_state[:, -1])
    torch.testing.assert_close(fresh, full, atol=2e-5, rtol=1e-4)
    other = T3Cond(cond.speaker_emb.flip(-1), cond.cond_prompt_speech_tokens)
    first_logits(model, other)
    assert model.voice_prefixes.misses - misses == 2
    assert len(copy.deepcopy(model).voice_prefixes._items) == 0
    changed = copy.deepcopy(model)
    first_logits(changed, cond)
    with torch.no_grad():
        changed.tfmr.h[0].attn.c_attn.weight.mul_(1.5)  # an in-place change: the stored keys are stale
    assert not torch.allclose(first_logits(changed, cond), fresh)
    assert changed.voice_prefixes.misses == 2
