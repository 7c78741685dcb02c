"""The main job's demo (``mlx-interp demo``, issue 14 defect 10): on the default model its steering shows the effect it
names beside the random-direction control, and the vector file it writes carries the multiplier its search chose, which
``mlx-interp generate --steer FILE`` then applies by default."""

from __future__ import annotations

import json

from mlx_interp.readouts.vectors import load_vector


def test_demo_steers_past_its_control_and_records_its_choice(tmp_path, smol):
    from click.testing import CliRunner

    from mlx_interp.app.cli import cli
    from mlx_interp.app.demo import run_demo

    st = run_demo("smollm2-135m", str(tmp_path))["steering"]
    best = st["search"]["best"]
    assert best is not None, "no coherent multiplier: the demo would show nothing"
    plus = next(k for k in st["texts"] if k.startswith("+"))
    rnd = next(k for k in st["texts"] if k.startswith("random"))
    s = st["sentiment"]
    assert s[plus] > s["baseline"] and s[plus] > s[rnd], s  # the effect it names, and not what any push does
    (f,) = (tmp_path / "demo").glob("*.sentiment.safetensors")
    chosen = load_vector(f, smol).meta["steer"]
    assert (chosen["layer"], chosen["alpha"], chosen["multiplier"]) == (st["layer"], best["alpha"], best["multiplier"])
    r = CliRunner().invoke(cli, ["generate", "--model", "smollm2-135m", "--steer", str(f), "--max-tokens", "4", "--json",
                                 "Tell me about your day."])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert (doc["layer"], doc["alpha"], doc["multiplier"]) == (st["layer"], best["alpha"], best["multiplier"])
