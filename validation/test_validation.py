"""The sanity suite to run before each round of experiments.

    python validation/test_validation.py [--model M ...] [--out results]

Default: every prepared offline model. Prints a pass/fail table with the measured value beside each
threshold, writes ``results/validation/<stamp>_<model>.json``, exits 1 if any check fails.
pytest collects it too (one test per prepared model).

Checks, with their measures:
* steering: a random vector at alpha=0 leaves tokens and logits bit-identical; alpha=1 with the vector
  scaled to 4x the median residual norm changes the next-token distribution (KL > 0.5 nats); the same
  relative push at layer L/4 and 3L/4 gives different distributions (KL between them > 0.1 nats);
* logit lens on "The capital of France is": " Paris" ranks in the top 5 at the final layer (one rule
  for every model: base models may prefer " the"), not top-1 at layer 0, better median rank in the last
  third of layers than in the first third; the final layer's lens equals the model's logits exactly;
  " Paris" appears in some layer's top-30 (else: entity never surfaces);
* refusal direction (difference of means, harmful vs harmless, last token, 16+16 prompts): finite,
  non-zero norm at every layer; cosine between directions from disjoint halves >= 0.5 at the layer of
  60% depth; on instruct models that do refuse (>= 25% refusal phrases on 8 harmful val prompts),
  adding 2x the direction at the middle layer raises the refusal-phrase rate on 8 harmless prompts
  (base models, and models that barely refuse, report "n/a" with the measured baseline).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_interp as mi  # noqa: E402  (first: fast BLAS)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from mlx_interp.core.capture import Capture  # noqa: E402
from mlx_interp.measures.distributions import cosine, kl  # noqa: E402
from mlx_interp.measures.text import refusal_rate  # noqa: E402
from mlx_interp.readouts.lens import layer_logits, logit_lens  # noqa: E402
from mlx_interp.store.models import is_prepared  # noqa: E402
from mlx_interp.store.registry import TEST_MODELS  # noqa: E402
from mlx_interp.tasks.datasets import refusal_prompts, refusal_substrings  # noqa: E402

PASS, FAIL, NA = "pass", "FAIL", "n/a"


@dataclass
class Check:
    group: str
    name: str
    status: str
    measured: str
    threshold: str


def _residual_norms(lm, prompt: str) -> np.ndarray:
    tr = mi.run(lm, prompt, capture=Capture("resid_post", "all", "last"))
    return np.array([float(np.linalg.norm(np.array(tr["resid_post", i][0]))) for i in range(lm.n_layers)])


def steering_checks(lm) -> list[Check]:
    out = []
    prompt = "The weather today is"
    norms = _residual_norms(lm, prompt)
    rng = np.random.default_rng(0)
    u = rng.normal(size=lm.width)
    u /= np.linalg.norm(u)
    mid = lm.n_layers // 2
    base = mi.run(lm, prompt).logits
    g0 = mi.generate(lm, prompt, max_tokens=12, chat=False)[0].tokens
    zero = [mi.Add(u * norms[mid], layers=mid, alpha=0.0)]
    diff = float(mx.abs(mi.run(lm, prompt, interventions=zero).logits - base).max().item())
    same_tokens = mi.generate(lm, prompt, max_tokens=12, chat=False, interventions=zero)[0].tokens == g0
    out.append(Check("steering", "alpha=0 is identical", PASS if diff == 0 and same_tokens else FAIL,
                     f"max|dlogit|={diff:g}, tokens {'same' if same_tokens else 'differ'}", "0, same"))
    big = [mi.Add(u * 4 * np.median(norms), layers=mid, alpha=1.0)]
    k = float(kl(base, mi.run(lm, prompt, interventions=big).logits)[0])
    out.append(Check("steering", "large alpha changes output", PASS if k > 0.5 else FAIL, f"KL={k:.3f}", "> 0.5"))
    a, b = lm.n_layers // 4, (3 * lm.n_layers) // 4
    la = mi.run(lm, prompt, interventions=[mi.Add(u * 2 * norms[a], layers=a)]).logits
    lb = mi.run(lm, prompt, interventions=[mi.Add(u * 2 * norms[b], layers=b)]).logits
    kab = float(kl(la, lb)[0])
    out.append(Check("steering", f"layers {a} vs {b} differ", PASS if kab > 0.1 else FAIL, f"KL={kab:.3f}", "> 0.1"))
    return out


def lens_checks(lm) -> list[Check]:
    out = []
    res = logit_lens(lm, "The capital of France is", targets=[" Paris"], top_k=30)
    ranks = res.rank_trajectory(" Paris")[1:]  # skip the embedding row
    final = ranks[-1]
    out.append(Check("lens", "final layer ranks ' Paris' top-5", PASS if final < 5 else FAIL, f"rank {final + 1}", "<= 5"))
    first_top = res.readings()[1].top[0][0]
    out.append(Check("lens", "layer 0 predicts something else", PASS if ranks[0] != 0 else FAIL, f"top-1 {first_top!r}", "!= ' Paris'"))
    third = max(1, lm.n_layers // 3)
    early, late = float(np.median(ranks[:third])), float(np.median(ranks[-third:]))
    out.append(Check("lens", "rank improves with depth", PASS if late < early else FAIL,
                     f"median rank first third {early + 1:.0f}, last third {late + 1:.0f}", "last < first"))
    tr = mi.run(lm, "The capital of France is", capture=Capture("resid_post", lm.n_layers - 1, "last"))
    same = mx.array_equal(layer_logits(lm, [tr["resid_post", lm.n_layers - 1][0]])[0], tr.logits[0].astype(mx.float32)).item()
    out.append(Check("lens", "last layer reproduces the model", PASS if same else FAIL, "identical" if same else "differs", "identical"))
    seen = [i for i, r in enumerate(ranks) if r < 30]
    out.append(Check("lens", "' Paris' in some layer's top-30", PASS if seen else FAIL,
                     f"first at layer {seen[0]}" if seen else "never (entity never surfaces)", "some layer"))
    return out


def direction_checks(lm) -> list[Check]:
    out = []
    harmful, harmless = refusal_prompts("train")
    h, s = harmful[:16], harmless[:16]
    chat = lm.instruct
    vs = mi.diff_of_means(lm, h, s, layers="all", positions="last", chat=chat)
    norms = np.array([np.linalg.norm(vs[i]) for i in range(lm.n_layers)])
    ok = bool(np.all(np.isfinite(norms)) and np.all(norms > 0))
    out.append(Check("direction", "finite non-zero norm at every layer", PASS if ok else FAIL,
                     f"min {norms.min():.3g}, max {norms.max():.3g}", "finite, > 0"))
    layer = int(round(0.6 * (lm.n_layers - 1)))
    a = mi.diff_of_means(lm, h[:8], s[:8], layers=[layer], chat=chat)[layer]
    b = mi.diff_of_means(lm, h[8:], s[8:], layers=[layer], chat=chat)[layer]
    c = cosine(a, b)
    out.append(Check("direction", f"split halves agree (layer {layer})", PASS if c >= 0.5 else FAIL, f"cos={c:.3f}", ">= 0.5"))
    if not lm.instruct:
        out.append(Check("direction", "steering raises refusals", NA, "base model: no chat refusals", "instruct only"))
        return out
    val_harmful, val_harmless = refusal_prompts("val")
    phrases = refusal_substrings()
    rh = refusal_rate([g.text for g in mi.generate(lm, val_harmful[:8], max_tokens=32, chat=True)], phrases)
    name = f"+2x direction at layer {lm.n_layers // 2} raises refusals"
    if rh < 0.25:
        out.append(Check("direction", name, NA, f"model barely refuses: {rh:.2f} on 8 harmful prompts", ">= 0.25 to apply"))
        return out
    prompts = val_harmless[:8]
    mid = lm.n_layers // 2
    base = [g.text for g in mi.generate(lm, prompts, max_tokens=32, chat=True)]
    steered = [g.text for g in mi.generate(lm, prompts, max_tokens=32, chat=True,
                                           interventions=[mi.Add(vs[mid], layers=mid, alpha=2.0)])]
    r0, r1 = refusal_rate(base, phrases), refusal_rate(steered, phrases)
    out.append(Check("direction", name, PASS if r1 > r0 else FAIL,
                     f"harmless refusal rate {r0:.2f} -> {r1:.2f} (harmful baseline {rh:.2f})", "increase"))
    return out


def validate_model(name: str) -> list[Check]:
    lm = mi.load(name)
    return steering_checks(lm) + lens_checks(lm) + direction_checks(lm)


def print_table(name: str, checks: list[Check]) -> None:
    print(f"\n{name}")
    print(f"  {'group':<10} {'check':<44} {'status':<6} {'measured':<52} threshold")
    for c in checks:
        print(f"  {c.group:<10} {c.name:<44} {c.status:<6} {c.measured:<52} {c.threshold}")


def prepared_models() -> list[str]:
    return [m for m in TEST_MODELS if is_prepared(m)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="model alias (repeatable); default: every prepared offline model")
    ap.add_argument("--out", default="results")
    a = ap.parse_args(argv)
    models = a.model or prepared_models()
    if not models:
        print("no prepared models; run `mlx-interp models prepare all` or pass --model", file=sys.stderr)
        return 2
    failed = False
    for name in models:
        t0 = time.time()
        try:
            checks = validate_model(name)
        except mi.MlxInterpError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print_table(name, checks)
        lm = mi.load(name)
        path = mi.save_result("validation", {"checks": [asdict(c) for c in checks]}, lm=lm, wall_s=time.time() - t0, out_dir=a.out)
        print(f"  -> {path}")
        failed |= any(c.status == FAIL for c in checks)
    return 1 if failed else 0


# ---- pytest entry points ----
try:
    import pytest

    # the default tier validates the default model; the others are the round's own `--model` runs (and --extended)
    @pytest.mark.parametrize("name", [n if n == TEST_MODELS[0] else pytest.param(n, marks=pytest.mark.extended)
                                      for n in TEST_MODELS])
    def test_validation(name):
        if not is_prepared(name):
            pytest.fail(f"{name} is not prepared; run `mlx-interp models prepare all`")
        checks = validate_model(name)
        bad = [f"{c.name}: {c.measured} (want {c.threshold})" for c in checks if c.status == FAIL]
        assert not bad, f"{name}: " + "; ".join(bad)
except ImportError:  # running as a script without pytest installed
    pass


if __name__ == "__main__":
    sys.exit(main())
