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
