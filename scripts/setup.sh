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
# lmms-eval (the omni_sila task tests): --no-deps, it pins av<16; its task loading needs only the [lmms] extra.
$PY -m pip install -q --no-deps "lmms-eval==0.7.3"
