"""T3 behaviour on the tiny preset: teacher forcing, loss, KV-cached decoding, guard, bad input."""
import pytest
import torch

from inference.models.t3 import T3, SamplingConfig, T3Cond, T3Config
from inference.models.t3.attention import attention_probs, set_observer
from inference.synthetic import fill_synthetic


@pytest.fixture(scope="module")
def model():
    return fill_synthetic(T3(T3Config.tiny(), init_weights=False)).eval()


@pytest.fixture(scope="module")
def cond(model):
    g = torch.Generator().manual_seed(1)
    return T3Cond(torch.rand(1, 256, generator=g), torch.randint(0, 6561, (1, 40), generator=g),
                  torch.full((1, 1, 1), 0.5))


def _text(model, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(1, 200, (1, n), generator=g)
    return torch.cat([torch.tensor([[model.cfg.start_text_token]]), body, torch.tensor([[model.cfg.stop_text_token]])], 1)


def test_forward_shapes_and_zeroed_padding(model, cond):
    text = torch.cat([_text(model), _text(model)])
    text[1, 6:] = 0
    speech = torch.randint(0, 6561, (2, 7))
    out = model(cond, text, torch.tensor([10, 6]), speech, torch.tensor([7, 3]))
    assert out.text_logits.shape == (2, 10, model.cfg.text_vocab_size)
    assert out.speech_logits.shape == (2, 7, model.cfg.speech_vocab_size)
    assert out.hidden_states.shape == (2, model.cfg.cond_len + 17, model.cfg.hidden_size)
    assert torch.all(out.text_logits[1, 6:] == 0) and torch.all(out.speech_logits[1, 3:] == 0)
    assert out.text_logits[1, :6].abs().sum() > 0 and out.speech_logits[1, :3].abs().sum() > 0


def test_packed_rows_see_what_decoding_sees(model, cond):
    """Packed, a row of a padded batch gets the logits it gets alone (no text padding before its speech);
    the reference layout does not, which is why training uses the packed one."""
    short, long = _text(model, n=3, seed=2), _text(model, n=8, seed=3)
    text = torch.zeros(2, long.shape[1], dtype=torch.long)
    text[0, :short.shape[1]], text[1] = short[0], long[0]
    speech = torch.randint(0, 6561, (2, 9), generator=torch.Generator().manual_seed(4))
    text_lens, speech_lens = torch.tensor([short.shape[1], long.shape[1]]), torch.tensor([6, 9])
    cond2 = T3Cond(cond.speaker_emb.expand(2, -1), cond.cond_prompt_speech_tokens.expand(2, -1),
                   cond.emotion_adv.expand(2, -1, -1))
    with torch.no_grad():
        both = model(cond2, text, text_lens, speech, speech_lens, packed=True)
        alone = model(cond, short, text_lens[:1], speech[:1, :6], speech_lens[:1])
        alone_long = model(cond, long, text_lens[1:], speech[1:], speech_lens[1:])
        reference_layout = model(cond2, text, text_lens, speech, speech_lens)
    torch.testing.assert_close(both.speech_logits[0, :6], alone.speech_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.text_logits[0, :5], alone.text_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.speech_logits[1], alone_long.speech_logits[0], atol=1e-5, rtol=1e-5)
    assert torch.all(both.speech_logits[0, 6:] == 0) and torch.all(both.text_logits[0, 5:] == 0)
    assert not torch.allclose(reference_layout.speech_logits[0, :6], alone.speech_logits[0], atol=1e-3)


def test_loss_ignores_padding_and_trains(model, cond):
    text = torch.cat([_text(model), _text(model, seed=1)])
    speech = torch.randint(0, 6561, (2, 9))
    lens = (torch.tensor([10, 10]), torch.tensor([9, 5]))
    lt, ls = model.loss(cond, text, lens[0], speech, lens[1])
    speech2 = speech.clone()
    speech2[1, 5:] = 6562  # different padding, same valid tokens
    lt2, ls2 = model.loss(cond, text, lens[0], speech2, lens[1])
    assert torch.isfinite(lt) and torch.isfinite(ls)
    assert torch.allclose(ls, ls2, atol=1e-6)  # padding is ignored by the loss (and hidden only by causality)
    model.zero_grad()
    (lt + ls).backward()
    assert model.speech_head.weight.grad.abs().sum() > 0
    assert model.cond_enc.perceiver.attn.to_q.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_kv_cached_decoding_matches_teacher_forcing(model, cond):
    """The logits the decoder sees at each step equal a full forward over the same sequence."""
    text = _text(model)
    traces, forced = [], [11, 2048, 6000, 7]
    it = iter(forced)
    list(model.generate_tokens(cond, text, SamplingConfig(cfg_weight=0.0, max_new_tokens=4),
                               choose=lambda p: next(it), on_step=traces.append))
    # Decoding input = [cond, text, start, start, t0, t1, ...]; position embeddings 0,0,1,2,...
    start = model.cfg.start_speech_token
    with torch.no_grad():
        emb, _ = model.embed_inputs(cond, text, torch.tensor([[start]]))
        emb = torch.cat([emb, model.embed_speech(torch.tensor([[start]]))], 1)
        for i, tok in enumerate(forced[:3]):
            emb = torch.cat([emb, model.embed_speech(torch.tensor([[tok]]), offset=i + 1)], 1)
        hidden = model.tfmr(inputs_embeds=emb, use_cache=False).last_hidden_state
        full = model.speech_head(hidden[0, -4:])
    step = torch.stack([t.step_logits[0] for t in traces])
    assert torch.allclose(step, full, atol=1e-4)


def test_cfg_rows_differ_only_by_text(model, cond):
    traces = []
    list(model.generate_tokens(cond, _text(model), SamplingConfig(cfg_weight=0.5, max_new_tokens=1),
                               choose=lambda p: 5, on_step=traces.append))
    cond_row, uncond_row = traces[0].step_logits
    assert not torch.allclose(cond_row, uncond_row)
    st = traces[0].stages
    assert torch.allclose(st["cfg_logits"], cond_row + 0.5 * (cond_row - uncond_row))


def test_decoding_stops_on_eos_and_respects_budget(model, cond):
    stop = model.cfg.stop_speech_token
    choices = iter([3, 4, stop, 9])
    out = list(model.generate_tokens(cond, _text(model), SamplingConfig(max_new_tokens=10),
                                     choose=lambda p: next(choices)))
    assert out == [3, 4, stop]
    assert len(list(model.generate_tokens(cond, _text(model), SamplingConfig(max_new_tokens=6),
                                          choose=lambda p: 1))) == 6


def test_sampling_is_reproducible_with_a_generator(model, cond):
    def run(seed):
        return model.inference(cond, _text(model), SamplingConfig(max_new_tokens=12),
                               generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_repetition_penalty_includes_start_token(model, cond):
    traces = []
    list(model.generate_tokens(cond, _text(model), SamplingConfig(repetition_penalty=2.0, max_new_tokens=1),
                               choose=lambda p: 5, on_step=traces.append))
    st = traces[0].stages
    start = model.cfg.start_speech_token
    x = st["cfg_logits"][0, start]
    expected = x * 2.0 if x < 0 else x / 2.0
    assert torch.isclose(st["after_repetition_penalty"][0, start], expected)
    assert torch.equal(st["after_repetition_penalty"][0, :start], st["cfg_logits"][0, :start])


def test_observer_sees_causal_probabilities_without_changing_outputs(model, cond):
    text = _text(model)
    emb, _ = model.embed_inputs(cond, text, torch.tensor([[model.cfg.start_speech_token]]))
    seen = []
    with torch.no_grad():
        plain = model.tfmr(inputs_embeds=emb, use_cache=False).last_hidden_state
        set_observer(model.tfmr.layers[1].self_attn, seen.append)
        try:
            spied = model.tfmr(inputs_embeds=emb, use_cache=False).last_hidden_state
        finally:
            set_observer(model.tfmr.layers[1].self_attn, None)
    assert torch.equal(plain, spied)
    probs = seen[0]
    assert probs.shape == (1, model.cfg.num_heads, emb.shape[1], emb.shape[1])
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.all(probs[0, 0].triu(1) == 0)


def test_attention_probs_with_cache_offset():
    q, k = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 5, 4)
    p = attention_probs(q, k, None, 0.5)
    assert p[0, 0, 0, 4] == 0 and p[0, 0, 1, 4] > 0  # query 0 sits at position 3 of 5


def test_multilingual_guard_blocks_early_stop():
    mtl = fill_synthetic(T3(T3Config.tiny(multilingual=True), init_weights=False)).eval()
    cond = T3Cond(torch.rand(1, 256), torch.randint(0, 6561, (1, 20)), torch.full((1, 1, 1), 0.5))
    text = torch.tensor([[255] + list(range(1, 15)) + [0]])
    traces = []
    list(mtl.generate_tokens(cond, text, SamplingConfig(max_new_tokens=2), choose=lambda p: 7,
                             on_step=traces.append))
    guarded = traces[0].stages["after_alignment_guard"]
    assert guarded[0, mtl.cfg.stop_speech_token] == -(2.0**15)  # text is long, position near 0: no stop
    # The guard is given 6561, 7, 7: the same token twice in a row forces the stop token.
    picks = iter([7, 7])
    tokens = list(mtl.generate_tokens(cond, text, SamplingConfig(max_new_tokens=5),
                                      choose=lambda p: next(picks, None) or int(p.argmax())))
    assert tokens == [7, 7, mtl.cfg.stop_speech_token]
    for layer in mtl.tfmr.layers:  # observers are removed when decoding ends
        assert getattr(layer.self_attn, "t3_attention_observer", None) is None


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[1, 2, 3]]), "start-of-text"),
    (torch.tensor([[255, 9999, 0]]), "text token ids"),
    (torch.tensor([255, 1, 0]), "batch, length"),
])
def test_bad_text_tokens(model, cond, bad, message):
    with pytest.raises(ValueError, match=message):
        model(cond, bad, torch.tensor([bad.shape[-1]]), torch.tensor([[6561, 6562]]), torch.tensor([2]))


def test_too_long_text_and_prompt(model, cond):
    long = torch.cat([torch.tensor([[255]]), torch.ones(1, model.cfg.max_text_tokens + 5, dtype=torch.long),
                      torch.tensor([[0]])], 1)
    with pytest.raises(ValueError, match="at most"):
        list(model.generate_tokens(cond, long, SamplingConfig(max_new_tokens=1)))
    big_prompt = T3Cond(cond.speaker_emb, torch.zeros(1, 151, dtype=torch.long), cond.emotion_adv)
    with pytest.raises(ValueError, match="at most 150"):
        model.embed_conditioning(big_prompt)


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("top_p", 0.0), ("min_p", 1.5),
                                          ("repetition_penalty", 0.0), ("cfg_weight", -1.0), ("max_new_tokens", 0)])
def test_sampling_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})
