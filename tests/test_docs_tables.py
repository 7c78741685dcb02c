"""The tables in docs/results_*.md are exactly what docs/make_tables.py builds from results/published/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_docs_table_matches_its_kept_result_files():
    p = subprocess.run([sys.executable, str(ROOT / "docs" / "make_tables.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_changed_number_makes_the_check_fail(tmp_path):
    """The check can fail: a table rendered from a result file whose number moved no longer matches."""
    sys.path.insert(0, str(ROOT / "docs"))
    import make_tables

    src = sorted((ROOT / "results" / "published" / "exp6_twohop_scaling").glob("*.json"))
    assert src, "no kept exp6 result"
    doc = json.loads(src[-1].read_text())
    (tmp_path / "exp6_twohop_scaling").mkdir()
    (tmp_path / "exp6_twohop_scaling" / src[-1].name).write_text(json.dumps(doc))
    text = "<!-- table: exp6 -->\n<!-- /table -->"
    same = make_tables.render(text, tmp_path)
    doc["results"]["summary"]["accuracy"]["k"] += 1
    (tmp_path / "exp6_twohop_scaling" / src[-1].name).write_text(json.dumps(doc))
    assert make_tables.render(same, tmp_path) != same


def test_every_figure_draws_from_the_kept_results(tmp_path):
    """`python -m figures.make_all` draws from results/published/ without stopping (BUGFIX #30), one PNG per figure."""
    from figures import make_all

    pngs = make_all.main(["--out", str(tmp_path)])
    names = {p.name for p in pngs}
    assert len(pngs) >= 30 and all(p.stat().st_size > 5000 for p in pngs)
    assert {"exp15_cosines_smollm2-135m.png", "exp15_text_model_smollm2-135m.png"} <= names


def test_null_layers_marks_only_layers_without_a_significant_test_effect():
    """A sycophancy vector whose -1 / +1 test intervals are disjoint and a readout at AUROC 0.8 are kept; overlapping
    intervals and AUROC 0.55 are marked; confidence 3/9 vs 0/9 (overlapping Wilson intervals) is marked, 9/9 vs 0/9 not."""
    from figures.make_all import null_layers
    from mlx_interp.measures.stats import rate

    def res(sy_minus, sy_plus, auroc, hedge_minus):
        sc = lambda p, h: {"score": p, "score_lo": p - h, "score_hi": p + h}  # noqa: E731
        w = lambda k: rate(k, 9).as_dict()  # noqa: E731
        return {"results": {
            "sycophancy": {"test_at_best": {"-1": sc(*sy_minus), "+1": sc(*sy_plus)}, "best_readout_auroc": auroc},
            "confidence": {"multiplier": 0.5, "test_at_best": {"-0.5": {"hedge": w(hedge_minus)}, "+0.5": {"hedge": w(0)}}}}}

    got = null_layers({"effect": res((0.3, 0.05), (0.7, 0.05), 0.8, 9), "none": res((0.49, 0.05), (0.5, 0.05), 0.55, 3)})
    assert got == {("sycophancy steering", "none"), ("sycophancy readout", "none"), ("confidence steering", "none")}


def test_exp10_figure_intervals_come_from_the_file_or_from_the_rate_and_its_n():
    """Every exp10 bar carries a Wilson interval: the file's own where it has one, else from the rate times its n."""
    from figures.make_all import _lang_interval
    from mlx_interp.measures.stats import wilson

    r = {"n_harmful": 12, "n_harmless": 10,
         "langs": {"en": {"harmful_baseline": 0.75, "harmless_ablation_same_start": 0.4,
                          "rates": {"harmful_baseline": {"lo": 0.11, "hi": 0.22}}}}}
    assert _lang_interval(r, "en", "harmful_baseline") == (0.11, 0.22)
    assert _lang_interval(r, "en", "harmless_ablation_same_start") == wilson(4, 10)
    assert _lang_interval({"langs": {"en": {"harmless_baseline": 0.1}}}, "en", "harmless_baseline") is None


def test_exp16_geometry_table_keeps_earlier_pairs_and_lets_a_newer_file_replace_a_pair(tmp_path):
    """A run on a new pair of models adds rows; it neither hides the pairs of an earlier run nor keeps a stale copy
    of a pair it measured again."""
    sys.path.insert(0, str(ROOT))
    from docs.tables_transfer import EXP, geometry_pairs

    d = tmp_path / EXP
    d.mkdir()

    def pair(src, tgt, cos):
        return {"source": src, "target": tgt, "cosine": cos}

    (d / "20261201T000000Z_b1_geometric_comparisons.json").write_text(
        json.dumps({"results": {"pairs": [pair("a", "b", 0.1), pair("b", "a", 0.2)]}}))
    (d / "20261203T000000Z_b1_geometric_comparisons.json").write_text(
        json.dumps({"results": {"pairs": [pair("b", "a", 0.9), pair("a", "c", 0.3)]}}))
    got = {(g["source"], g["target"]): (f[:8], g["cosine"]) for f, g in geometry_pairs(tmp_path)}
    assert got == {("a", "b"): ("20261201", 0.1), ("b", "a"): ("20261203", 0.9), ("a", "c"): ("20261203", 0.3)}
    # the figure draws the same merged pairs: the kept files' pairs of both runs (four models; Qwen 0.5B <-> 1.5B)
    from figures import refusal_transfer

    kept = geometry_pairs(ROOT / "results" / "published")
    assert len({f for f, _ in kept}) >= 2
    (tmp_path / "figs").mkdir()
    assert (tmp_path / "figs" / "exp16_geometry.png") in refusal_transfer.all_figures(ROOT / "results" / "published", tmp_path / "figs")


def test_an_ab_score_below_the_mass_floor_is_not_printed():
    """Defect 1: where the scored tokens keep under MASS_FLOOR of the probability, the cell says so instead of a score."""
    sys.path.insert(0, str(ROOT / "docs"))
    import make_tables

    from mlx_interp.measures.ab import MASS_FLOOR

    r = {"score": 0.45, "score_lo": 0.40, "score_hi": 0.50}
    assert make_tables._ab({**r, "mass_median": MASS_FLOOR - 0.01}) == f"below floor (mass {MASS_FLOOR - 0.01:.2f})"
    assert make_tables._ab({**r, "mass_median": MASS_FLOOR}) == "0.45 [0.40, 0.50]"


def test_exp13_summary_cell_gives_the_pooled_rate_inside_its_own_interval_and_labels_the_task_mean():
    """BUGFIX #68: the cell printed an unweighted task mean beside the pooled count's interval, which need not contain
    it (0.18 beside [0.22, 0.32]); the pooled rate now comes first with its interval, and the task mean is labelled."""
    import re

    sys.path.insert(0, str(ROOT / "docs"))
    import tables_fv

    rates = [{"k": 60, "n": 144, "p": 60 / 144}, {"k": 2, "n": 36, "p": 2 / 36}, {"k": 5, "n": 72, "p": 5 / 72}]
    cell = tables_fv._pooled(rates)
    m = re.fullmatch(r"pooled (\d\.\d\d) \[(\d\.\d\d), (\d\.\d\d)\] \((\d+)/(\d+)\); task mean (\d\.\d\d)", cell)
    assert m, cell
    p, lo, hi, k, n, mean = (float(g) for g in m.groups())
    assert (k, n) == (67, 252) and p == round(67 / 252, 2) and lo <= p <= hi
    assert mean == round((60 / 144 + 2 / 36 + 5 / 72) / 3, 2) and not lo <= mean <= hi  # the case the old cell hid
    assert tables_fv._pooled([]) == "—"


def test_fidelity_table_says_how_many_matrices_a_mirror_variant_keeps_at_8_bits():
    """BUGFIX #70: "3bit" on Qwen-0.5B is 12 of 170 matrices at 3 bits (158 kept at 8, as its GGUF stored them), on
    SmolLM2 210 of 211; the table must show it, read from each row's recorded quantization block."""
    sys.path.insert(0, str(ROOT / "docs"))
    import tables_quant

    kept = ROOT / "results" / "published" / "exp15_quantization"
    qwen = json.loads((kept / "20261206T191902Z_qwen2.5-coder-0.5b@fp32.json").read_text())["results"]["rows"]
    smol = json.loads((kept / "20261205T213720Z_smollm2-135m@fp32.json").read_text())["results"]["rows"]
    assert [tables_quant._kept8(qwen[p]["model"]) for p in ("3bit", "2bit", "mxfp4", "4bit")] == ["158"] * 4
    assert [tables_quant._kept8(smol[p]["model"]) for p in ("3bit", "nvfp4")] == ["1", "1"]
    assert {tables_quant._kept8(qwen[p]["model"]) for p in ("fp32", "bf16", "fp16", "8bit")} == {"—"}
