"""Experiment scripts, the query schema and figures, on the real default model."""

from __future__ import annotations

import json

import pytest

from experiments import exp6_twohop_scaling, exp9_back_patching
from experiments.common import main
from figures import make_all
from mlx_interp.errors import MlxInterpError
from mlx_interp.twohop import load_queries, mentions

QUERIES = [
    {"id": "u1", "family": "city-state-capital", "e1": "Dallas", "e2": "Texas", "e3": "Austin",
     "two_hop": "The capital of the state where Dallas is located is", "first_hop": "Dallas is located in the state of"},
    {"id": "u2", "family": "landmark-country-capital", "e1": "the Eiffel Tower", "e2": "France", "e3": "Paris",
     "two_hop": "The capital of the country where the Eiffel Tower is located is",
     "first_hop": "The Eiffel Tower is located in the country of", "e3_aliases": ["Paname"]},
]


def _write(tmp_path, rows):
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    return p


def test_builtin_queries_cover_the_study():
    qs = load_queries()
    assert len(qs) >= 24 and len({q.family for q in qs}) >= 4
    pairs = {(q.e1, q.e3) for q in qs}
    for need in (("Dallas", "Austin"), ("Imagine", "Yoko Ono"), ("the Eiffel Tower", "Euro"), ("Oktoberfest", "German")):
        assert need in pairs
    assert mentions("It is Yoko, his wife", qs[[q.e3 for q in qs].index("Yoko Ono")].names("e3"))


@pytest.mark.parametrize("bad,msg", [
    ({"id": "x"}, "lacks"),
    ({**QUERIES[0], "e1": "Houston"}, "does not occur"),
])
def test_bad_query_files(tmp_path, bad, msg):
    with pytest.raises(MlxInterpError) as e:
        load_queries(_write(tmp_path, [bad]))
    assert msg in str(e.value)
    (tmp_path / "bad.jsonl").write_text("{not json")
    with pytest.raises(MlxInterpError):
        load_queries(tmp_path / "bad.jsonl")
    with pytest.raises(MlxInterpError):
        load_queries(tmp_path / "missing.jsonl")


def test_exp6_and_exp9_with_user_prompts_then_figures(tmp_path, smol):
    q = _write(tmp_path, QUERIES)
    out = tmp_path / "res"
    [p6] = main("exp6_twohop_scaling", exp6_twohop_scaling.run, load_queries, exp6_twohop_scaling.__doc__,
                ["--model", "smollm2-135m", "--prompts", str(q), "--out", str(out)])
    doc = json.loads(p6.read_text())
    s = doc["results"]["summary"]
    assert s["n_queries"] == 2 and 0 <= s["accuracy"] <= 1 and s["layers"] == 30
    row = doc["results"]["queries"][0]
    assert len(row["bridge_rank_by_layer"]) == 30 and row["bridge"] == "Texas"
    assert doc["provenance"]["config"]["prompts"] == str(q)
    [p9] = main("exp9_back_patching", exp9_back_patching.run, load_queries, exp9_back_patching.__doc__,
                ["--model", "smollm2-135m", "--prompts", str(q), "--out", str(out), "--quick"])
    s9 = json.loads(p9.read_text())["results"]["summary"]
    assert s9["n_correct"] + s9["n_failed_tested"] <= 2 and s9["layer_grid"] == list(range(0, 30, 3))
    pngs = make_all.main(["--results", str(out), "--out", str(tmp_path / "figs")])
    names = {p.name for p in pngs}
    assert "exp6_twohop_scaling.png" in names and "exp9_backpatch_smollm2-135m.png" in names
    assert all(p.stat().st_size > 10_000 for p in pngs)


def test_t1_position_is_last_token_of_e1(smol):
    q = load_queries()[0]
    ids = smol.tokenizer.encode(q.two_hop)
    pos = exp9_back_patching.t1_position(smol, q)
    assert smol.tokenizer.decode(ids[: pos + 1]).endswith(q.e1)
