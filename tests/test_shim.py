"""The hooked forward pass on the three real models: every site kind captures and edits with the
guarantees the README promises (bit-identity, batch independence, prefill+decode == full pass)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import stream_generate

from mlx_interp import KINDS, Add, Capture, Edit, Patch, Span
from mlx_interp.core.generate import generate
from mlx_interp.core.hooks import hooked
from mlx_interp.core.parts import head_shape, kv_head_shape, parts, writers
from mlx_interp.core.sites import head_counts
from mlx_interp.core.trace import intervene, run
from mlx_interp.errors import MlxInterpError
from mlx_interp.readouts.lens import layer_logits, logit_lens

PROMPT = "The capital of France is"
BATCH = ["The capital of France is", "Hello there, my good friend. How are you doing on this fine day?", "2 + 2 ="]
ALL_KINDS = list(KINDS)


def _ids(lm, text=PROMPT):
    return lm.tokenizer.encode(text)


def _width(lm, kind, layer=0):
    attn = parts(lm.model).layers[layer].self_attn
    return {"head": head_shape(attn)[1], "k": kv_head_shape(attn)[1], "v": kv_head_shape(attn)[1]}.get(kind, lm.width)


def _vec(lm, kind, seed, norm=8.0, layer=0):
    v = np.random.default_rng(seed).normal(size=_width(lm, kind, layer))
    return v / np.linalg.norm(v) * norm


def test_no_intervention_and_alpha_zero_are_bit_identical_at_every_site(lm):
    ids = _ids(lm)
    ref = lm.model(mx.array([ids]))
    assert mx.array_equal(run(lm, [ids], logits="all").logits, ref).item()
    assert mx.array_equal(run(lm, [ids]).logits, ref[:, -1]).item()  # last-position-only head
    cap = run(lm, [ids], logits="all", capture=Capture(ALL_KINDS, "all", "all"))
    assert mx.array_equal(cap.logits, ref).item()
    assert {k for k, _ in cap.sites()} == set(KINDS) and len(cap.sites()) == len(KINDS) * lm.n_layers
    zero = [Add(_vec(lm, k, 0), site=k, alpha=0.0) for k in ALL_KINDS]
    zero.append(Edit(lambda h, layer: h, site=["resid_pre", "resid_mid", "attn_out", "head", "k"]))
    assert mx.array_equal(run(lm, [ids], logits="all", interventions=zero).logits, ref).item()
    # patching every site with its own captured value reproduces the pass exactly
    own = [Patch(cap[k, l], site=k, layers=l) for k in ("resid_pre", "resid_mid", "resid_post", "attn_out", "head")
           for l in (1, lm.n_layers - 2)]
    assert mx.array_equal(run(lm, [ids], logits="all", interventions=own).logits, ref).item()


def test_sites_agree_with_the_models_own_arithmetic(lm):
    """resid_pre l+1 is resid_post l; resid_post = resid_mid + mlp_out (the block's own add); o_proj of the
    head outputs (Gemma: then its post-attention norm) is attn_out; k/v are what the returned cache holds."""
    tr = run(lm, BATCH, capture=Capture(ALL_KINDS, "all", "all"), return_cache=True)
    L = lm.n_layers
    for l in range(L - 1):
        assert mx.array_equal(tr["resid_pre", l + 1], tr["resid_post", l]).item(), l
    for l in (0, L // 2, L - 1):
        assert mx.array_equal(tr["resid_post", l], tr["resid_mid", l] + tr["mlp_out", l]).item(), l
        layer = parts(lm.model).layers[l]
        z = tr["head", l]
        o = layer.self_attn.o_proj(z.reshape(z.shape[:2] + (-1,)))
        if writers(layer)[0] is not layer.self_attn:
            o = writers(layer)[0](o)  # Gemma's post_attention_layernorm
        np.testing.assert_allclose(np.array(o), np.array(tr["attn_out", l]), atol=1e-4, rtol=1e-4)
        c = tr.cache.layers[l]
        T = tr["k", l].shape[1]
        assert mx.array_equal(tr["k", l], c.keys[..., :T, :].transpose(0, 2, 1, 3)).item()
        assert mx.array_equal(tr["v", l], c.values[..., :T, :].transpose(0, 2, 1, 3)).item()
    emb = parts(lm.model).embed(mx.array([tr.tokens[2]]))
    if lm.family == "gemma":
        emb = emb * (lm.width ** 0.5)
    np.testing.assert_allclose(np.array(tr.per_prompt("resid_pre", 0)[2]), np.array(emb[0]), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_site_edits_and_prefill_plus_decode_equals_a_full_pass(lm, kind):
    """An edit at each site changes the output, and under the KV cache (prefill, then one token per
    step, positions "generated") the steered tokens equal a full pass over the same sequence."""
    layer = lm.n_layers // 2
    v = _vec(lm, kind, 2, norm=30.0 if KINDS[kind].per_head else 60.0, layer=layer)
    iv = Add(v, site=kind, layers=[1, layer], positions="generated")
    base = generate(lm, PROMPT, max_tokens=6)[0]
    g = generate(lm, PROMPT, max_tokens=6, interventions=[iv])[0]
    seq = g.prompt_tokens + g.tokens
    full = run(lm, [seq], logits="all",
               interventions=[Add(v, site=kind, layers=[1, layer], positions=slice(len(g.prompt_tokens), None))]).logits[0]
    pred = np.array(mx.argmax(full, axis=-1))[len(g.prompt_tokens) - 1:-1]
    assert pred.tolist() == g.tokens[:len(pred)], kind
    # (the same vector added to *every* key shifts every score of a query equally, which softmax ignores:
    # edit the first two positions only)
    steered = run(lm, PROMPT, interventions=[Add(v, site=kind, layers=[1, layer], positions=slice(0, 2))]).logits
    assert np.abs(np.array(steered) - np.array(run(lm, PROMPT).logits)).max() > 1e-3, kind
    assert base.prompt_tokens == g.prompt_tokens


def test_batch_capture_does_not_depend_on_other_prompts(lm):
    cap = Capture(ALL_KINDS, [0, lm.n_layers // 2, lm.n_layers - 1], "last")
    batch = run(lm, BATCH, capture=cap)
    for b, p in enumerate(BATCH):
        single = run(lm, p, capture=cap)
        for site, a in single.captured.items():
            x, y = np.array(batch[site][b]), np.array(a[0])
            assert np.abs(x - y).max() <= 1e-4 * max(1.0, np.abs(y).max()), (p, site)
        np.testing.assert_allclose(np.array(batch.logits[b]), np.array(single.logits[0]), atol=2e-3, rtol=1e-4)


def test_chunked_batches_return_rows_in_the_callers_order(smol):
    """batch_size splits the prompts into length-sorted chunks; results come back in the caller's order,
    with per-row vectors and rows= following their prompts."""
    prompts = BATCH + ["Once upon a time there was", "Hi"]
    v = np.random.default_rng(9).normal(size=(len(prompts), smol.width)) * 3
    ivs = [Add(v, layers=4), Patch(np.zeros(smol.width), layers=6, positions="last", rows=[3])]
    cap = Capture("resid_post", [4, 6], "all")
    one = run(smol, prompts, interventions=ivs, capture=cap, logits="all", batch_size=None)
    two = run(smol, prompts, interventions=ivs, capture=cap, logits="all", batch_size=2)
    assert one.pads == two.pads and one.tokens == two.tokens
    for b in range(len(prompts)):
        n = len(one.tokens[b])
        np.testing.assert_allclose(np.array(two.logits[b, -n:]), np.array(one.logits[b, -n:]), atol=2e-3, rtol=1e-4)
        np.testing.assert_allclose(np.array(two.per_prompt("resid_post", 4)[b]), np.array(one.per_prompt("resid_post", 4)[b]),
                                   atol=1e-3)
    assert np.abs(np.array(two["resid_post", 6][3, -1])).max() == 0.0  # rows=[3]: the caller's row 3
    assert np.abs(np.array(two["resid_post", 6][2, -1])).max() > 0
    gens1 = generate(smol, prompts, max_tokens=5, interventions=ivs, batch_size=None)
    gens2 = generate(smol, prompts, max_tokens=5, interventions=ivs, batch_size=2)
    assert [g.tokens for g in gens1] == [g.tokens for g in gens2]


def test_generate_conditions_equals_one_generate_call_per_condition(smol):
    """Conditions batched into one call (each on its own rows) give the tokens each condition gets alone: the
    baseline rows are untouched by the others' interventions, a steered condition differs from the baseline,
    and an intervention's own rows= is read within its condition's prompts."""
    from mlx_interp import Ablate
    from mlx_interp.core.generate import generate_conditions

    prompts = ["The capital of France is", "My favourite food is"]
    v = np.random.default_rng(3).normal(size=smol.width) * 8
    conds = {"base": (prompts, []), "plus": (prompts, [Add(v, layers=5)]),
             "ablate_second": (prompts, [(Ablate(v, site="resid_post", layers="all", rows=[1]),)]),
             "other": (["Hi"], [Add(-v, layers=2)])}
    got = generate_conditions(smol, conds, max_tokens=6, chat=False)
    assert list(got) == list(conds)
    for name, (ps, ivs) in conds.items():
        alone = generate(smol, ps, max_tokens=6, interventions=ivs, chat=False)
        assert [g.tokens for g in got[name]] == [g.tokens for g in alone], name
    assert [g.tokens for g in got["plus"]] != [g.tokens for g in got["base"]]
    with pytest.raises(MlxInterpError, match="conditions must map names to \\(prompts, interventions\\); got 'x'"):
        generate_conditions(smol, {"x": prompts}, max_tokens=2)


def test_span_mean_and_position_lists(smol):
    full = run(smol, PROMPT, capture=Capture("resid_post", 7, "all"))["resid_post", 7][0]
    span = run(smol, PROMPT, capture=Capture("resid_post", 7, Span(1, -1)))["resid_post", 7][0]
    np.testing.assert_allclose(np.array(span), np.array(full[1:-1].mean(0)), atol=1e-4)
    idx = run(smol, PROMPT, capture=Capture("resid_post", 7, [0, 2]))["resid_post", 7][0]
    np.testing.assert_allclose(np.array(idx), np.array(full)[[0, 2]], atol=1e-6)


def test_ablation_removes_the_direction_everywhere(smol):
    from mlx_interp.methods.refusal import ablation

    r = np.random.default_rng(3).normal(size=smol.width)
    tr = run(smol, BATCH, interventions=[ablation(r)], capture=Capture(["resid_pre", "resid_mid", "resid_post", "attn_out",
                                                                          "mlp_out"], "all", "all"))
    ru = r / np.linalg.norm(r)
    for site, a in tr.captured.items():
        proj = np.abs(np.array(a) @ ru)
        assert proj.max() < 1e-4 * np.abs(np.array(a)).max() + 1e-4, site
    assert np.abs(np.array(tr.logits) - np.array(run(smol, BATCH).logits)).max() > 1e-3


def test_patching_transplants_and_rows_and_heads_select(lm):
    ids = _ids(lm)
    L = lm.n_layers
    src = run(lm, "The capital of Italy is", capture=Capture("resid_post", [3, L - 1], "last"))
    moved = run(lm, [ids], interventions=[Patch(src["resid_post", L - 1], layers=L - 1, positions="last")])
    np.testing.assert_allclose(np.array(moved.logits), np.array(src.logits), atol=1e-3, rtol=1e-4)
    base = run(lm, [ids, ids, ids])
    out = run(lm, [ids, ids, ids], interventions=[Patch(src["resid_post", 3][0], layers=3, positions="last", rows=[1])])
    assert mx.array_equal(out.logits[0], base.logits[0]).item() and mx.array_equal(out.logits[2], base.logits[2]).item()
    assert np.abs(np.array(out.logits[1]) - np.array(base.logits[1])).max() > 1e-3
    layer = L // 2
    z = run(lm, [ids], capture=Capture("head", layer, "last"))["head", layer]
    n_heads, d = head_shape(parts(lm.model).layers[layer].self_attn)
    assert z.shape == (1, n_heads, d)
    patched = run(lm, [ids], interventions=[Patch(np.zeros(d), site="head", layers=layer, heads=[0], positions="last")],
                  capture=Capture("head", layer, "last"))["head", layer]
    assert np.abs(np.array(patched[0, 0])).max() == 0 and mx.array_equal(patched[0, 1:], z[0, 1:]).item()
    kept = run(lm, [ids], capture=Capture("head", layer, "last", heads=[1, 0]))["head", layer]
    assert mx.array_equal(kept[0], z[0, mx.array([1, 0])]).item()


def test_edit_applies_any_function_where_positions_select(smol):
    zeroed = run(smol, BATCH, interventions=[Edit(lambda h, layer: h * 0, layers=5, positions="last")],
                 capture=Capture("resid_post", 5, "all"))
    patched = run(smol, BATCH, interventions=[Patch(np.zeros(smol.width), layers=5, positions="last")])
    assert mx.array_equal(zeroed.logits, patched.logits).item()
    a = np.array(zeroed["resid_post", 5])
    assert np.abs(a[:, -1]).max() == 0 and np.abs(a[:, -2]).max() > 0


def test_binding_never_mutates_the_users_intervention(smol, gemma):
    v = np.ones(smol.width)
    iv = Add(v, layers=3, alpha=0.5)
    b = iv.bind(smol)
    assert b is not iv and iv.sites == frozenset() and b.sites == {("resid_post", 3)}
    run(smol, PROMPT, interventions=[iv])
    with pytest.raises(MlxInterpError, match="width 576"):
        run(gemma, PROMPT, interventions=[iv])
    assert iv.sites == frozenset() and iv.alpha == 0.5
    cap = Capture("resid_post", 2, "last")
    assert run(smol, PROMPT, capture=cap)["resid_post", 2].shape == (1, smol.width)
    assert run(gemma, PROMPT, capture=cap)["resid_post", 2].shape == (1, gemma.width)


def test_hooks_are_removed_exactly_even_after_an_error(lm):
    classes = [type(layer) for layer in parts(lm.model).layers]
    ids = _ids(lm)
    ref = lm.model(mx.array([ids]))
    with pytest.raises(RuntimeError):
        with hooked(lm.model, [Add(np.ones(lm.width), layers=1).bind(lm)], [Capture(ALL_KINDS[:6]).bind(lm)]):
            raise RuntimeError("boom")
    assert [type(layer) for layer in parts(lm.model).layers] == classes
    assert mx.array_equal(lm.model(mx.array([ids])), ref).item()


def test_lens_last_layer_equals_model_logits(lm):
    ids = _ids(lm)
    tr = run(lm, [ids], capture=Capture("resid_post", lm.n_layers - 1, "last"))
    lens = layer_logits(lm, [tr["resid_post", lm.n_layers - 1][0]])
    assert mx.array_equal(lens[0], tr.logits[0].astype(mx.float32)).item()
    res = logit_lens(lm, [PROMPT, "2 + 2 ="], targets=[" Paris"], top_k=3, positions="all")
    assert res.layers == [-1] + list(range(lm.n_layers)) and len(res.cells) == 2
    assert res.positions[0] == list(range(len(ids))) and len(res.cells[1][0]) == len(_ids(lm, "2 + 2 ="))
    top_final = lm.tokenizer.decode([int(mx.argmax(tr.logits[0]).item())])
    assert res.readings(0, -1)[-1].top[0][0] == top_final


def test_generation_matches_mlx_lm_greedy(lm):
    prompts = ["The capital of France is", "Write one sentence about the sea."]
    gens = generate(lm, prompts, max_tokens=12, chat=lm.instruct)
    for g in gens:
        ref = [r.token for r in stream_generate(lm.model, lm.tokenizer, g.prompt_tokens, max_tokens=12)]
        if g.finish_reason == "stop":
            ref = [t for t in ref if t not in lm.tokenizer.eos_token_ids]
        assert g.tokens == ref[: len(g.tokens)] and len(g.tokens) >= min(len(ref), 1)
    singles = [generate(lm, p, max_tokens=12, chat=lm.instruct)[0].tokens for p in prompts]
    assert [g.tokens for g in gens] == singles


def test_async_and_step_by_step_generation_agree(smol):
    from mlx_interp.core import generate as gen_mod

    v = np.random.default_rng(4).normal(size=smol.width) * 2
    kw = dict(max_tokens=10, interventions=[Add(v, layers=5, positions="generated")])
    a = generate(smol, BATCH, **kw, return_cache=True)
    gen_mod.ASYNC = False
    try:
        b = generate(smol, BATCH, **kw, return_cache=True)
    finally:
        gen_mod.ASYNC = True
    assert [g.tokens for g in a] == [g.tokens for g in b] and a.cache.tokens == b.cache.tokens


def test_intervene_scopes_plain_mlx_lm_calls(smol):
    from mlx_lm import generate as mlx_generate

    ids = _ids(smol)
    v = np.random.default_rng(4).normal(size=smol.width)
    ref = smol.model(mx.array([ids]))
    with intervene(smol, Add(v / np.linalg.norm(v) * 30, layers=5)):
        steered = smol.model(mx.array([ids]))
        text = mlx_generate(smol.model, smol.tokenizer, PROMPT, max_tokens=5)
    assert np.abs(np.array(steered) - np.array(ref)).max() > 0.1 and isinstance(text, str)
    assert mx.array_equal(smol.model(mx.array([ids])), ref).item()
    with pytest.raises(MlxInterpError):
        with intervene(smol, Add(v, layers=5, positions="last")):
            pass
    with pytest.raises(MlxInterpError, match="own the KV cache"):
        with intervene(smol, Add(np.ones(64), site="k", layers=5)):
            pass


def test_sampled_generation_is_seeded(smol):
    a = generate(smol, "Once upon a time", max_tokens=10, temperature=1.0, seed=7)[0].tokens
    b = generate(smol, "Once upon a time", max_tokens=10, temperature=1.0, seed=7)[0].tokens
    greedy = generate(smol, "Once upon a time", max_tokens=10)[0].tokens
    others = [generate(smol, "Once upon a time", max_tokens=10, temperature=1.0, seed=s)[0].tokens for s in (1, 2, 3)]
    assert a == b
    assert any(o != greedy for o in others + [a])


def test_resume_from_resid_pre_equals_the_full_pass(lm):
    """resume=(base, k) skips blocks < k and gives exactly what the full steered pass gives (padded batch)."""
    v = np.random.default_rng(5).normal(size=lm.width)
    v = v / np.linalg.norm(v) * 8
    base = run(lm, BATCH, capture=Capture("resid_pre", "all", "all"))
    for k in (1, lm.n_layers // 2, lm.n_layers - 1):
        ivs = [Add(v, site="resid_pre", layers=k), Add(v, layers=lm.n_layers - 1, alpha=0.5, positions="last")]
        cap = Capture(["resid_post", "attn_out"], [k, lm.n_layers - 1], "last")
        full = run(lm, BATCH, interventions=ivs, capture=cap)
        res = run(lm, BATCH, interventions=ivs, capture=cap, resume=(base, k))
        assert np.array_equal(np.array(full.logits), np.array(res.logits)), k
        assert np.array_equal(np.array(full["resid_post", k]), np.array(res["resid_post", k])), k
    assert not np.array_equal(np.array(base.logits), np.array(full.logits))


def test_resume_continuing_a_cache_with_a_shared_base_equals_full_passes(lm):
    """resume + cache= (the mediation sweep's path): one cached prefix, one new token on n rows, a one-row base
    shared by every row, each row with its own edit, started at block k: equals the full pass of each edited prompt."""
    ids = lm.tokenizer.encode("Q: hot\nA: cold\n\nQ: up\nA:")
    pre = run(lm, [ids[:-1]], logits="none", return_cache=True)
    base = run(lm, [ids[-1:]], cache=pre.cache, capture=Capture("resid_pre", "all", "all"))
    H = head_counts(lm, "head", 0)[0]
    rng = np.random.default_rng(0)
    k = lm.n_layers // 2
    vals = rng.normal(size=(2, head_counts(lm, "head", k)[1])).astype(np.float32)
    ivs = [Patch(vals[r], site="head", layers=k, heads=[r % H], rows=[r], positions="last") for r in range(2)]
    got = run(lm, [ids[-1:]] * 3, cache=pre.cache, resume=(base, k), interventions=ivs, batch_size=None)
    for r in range(2):
        want = run(lm, [ids], interventions=[Patch(vals[r], site="head", layers=k, heads=[r % H], positions="last")])
        np.testing.assert_allclose(np.array(got.logits[r]), np.array(want.logits[0]), atol=2e-3, rtol=1e-3)
    # row 2: no edit. 1e-4 of logits near 14 (7e-6 relative): a 3-row matmul rounds unlike a 1-row one in fp32
    np.testing.assert_allclose(np.array(got.logits[2]), np.array(base.logits[0]), atol=1e-4, rtol=1e-5)
    assert not np.allclose(np.array(got.logits[0]), np.array(base.logits[0]), atol=1e-3)
    with pytest.raises(MlxInterpError, match="cannot keep a KV cache"):
        run(lm, [ids[-1:]], cache=pre.cache, resume=(base, k), return_cache=True, batch_size=None)
    with pytest.raises(MlxInterpError, match="different prompts"):
        run(lm, [[ids[-2]]] * 2, cache=pre.cache, resume=(base, k), batch_size=None)


def test_resume_rejects_what_it_cannot_replay(smol):
    base = run(smol, BATCH, capture=Capture("resid_pre", 3, "all"))
    v = np.ones(smol.width)
    with pytest.raises(MlxInterpError, match="site before block 3"):
        run(smol, BATCH, interventions=[Add(v, layers=[1, 5])], resume=(base, 3))
    with pytest.raises(MlxInterpError, match="site before block 3"):
        run(smol, BATCH, interventions=[Add(v, layers=[5])], capture=Capture("resid_post", 2), resume=(base, 3))
    with pytest.raises(MlxInterpError, match="different prompts"):
        run(smol, BATCH[:2], interventions=[Add(v, layers=5)], resume=(base, 3))
    with pytest.raises(MlxInterpError, match="resid_pre 5"):
        run(smol, BATCH, interventions=[Add(v, layers=5)], resume=(base, 5))
    with pytest.raises(MlxInterpError, match="resume layer 99 is out of range"):
        run(smol, BATCH, resume=(base, 99))
    last = run(smol, BATCH, capture=Capture("resid_pre", 3, "last"))
    with pytest.raises(MlxInterpError, match="every position"):
        run(smol, BATCH, interventions=[Add(v, layers=5)], resume=(last, 3))


def test_name_ranks_read_every_token_of_a_name(smol):
    """At the last layer the lens is the model: a name's rank there is the worst rank, under the model's own logits
    with the name's earlier tokens fed, of each of its tokens."""
    from mlx_interp.readouts.lens import name_ranks

    prompt = "The currency of the country where Big Ben is located is the"
    for name in ("pound", "sterling"):
        full = smol.tokenizer.encode(prompt + " " + name)
        n = len(smol.tokenizer.encode(prompt))
        lg = np.array(smol.model(mx.array([full]))[0], dtype=np.float64)
        want = max(int((lg[t - 1] > lg[t - 1, full[t]]).sum()) for t in range(n, len(full)))
        got = name_ranks(smol, prompt, [name])
        assert got[-1] == want and len(got) == smol.n_layers, name
    assert len(smol.tokenizer.encode(" sterling", add_special_tokens=False)) > 1  # a multi-token name is exercised
    both = name_ranks(smol, prompt, ["pound", "sterling"])
    assert np.array_equal(both, np.minimum(name_ranks(smol, prompt, ["pound"]), name_ranks(smol, prompt, ["sterling"])))


def test_plan_bounds_padding_for_forward_passes_but_keeps_one_chunk_when_asked():
    """Prompts of 57-602 tokens in one chunk pad 2.7x (CAA's MMLU items); with ``max_padding`` the chunks split where
    one more prompt would pad more than that share, in length order, and ``None`` keeps the old single chunk."""
    from mlx_interp.core.batching import plan

    lens = [600, 57, 60, 602, 59]
    assert plan(lens, 32) == [[0, 1, 2, 3, 4]]  # generation and caches: one chunk in the caller's order
    chunks = plan(lens, 32, max_padding=0.25)
    assert chunks == [[1, 4, 2], [0, 3]]
    for c in chunks:
        assert len(c) * max(lens[i] for i in c) <= 1.25 * sum(lens[i] for i in c)
    assert plan([10, 10, 10], 2, max_padding=0.25) == [[0, 1], [2]]  # batch_size still caps the rows
    assert plan([10, 11, 12], 32, max_padding=0.25) == [[0, 1, 2]]  # little padding: one chunk, caller's order
    with pytest.raises(MlxInterpError, match="max_padding=-1"):
        plan(lens, 32, max_padding=-1)
