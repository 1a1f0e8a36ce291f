"""The small explicit-config training that the slow tests share and live analysis is checked with (``icm watch``,
bench P12): the demo recipe on the embedded mini set's explicit clips (positive / negative / neutral; a negative
stretch is a crimson frame and a darkened face), 30 training clips, 30 Omni-SILA epochs — a few CPU minutes.

Its behaviour is known (tests/test_train_recipe.py checks that it learned; measured on the 12 held-out clips:
acc 0.500, map_avg 0.217, and it calls 3 of the 4 held-out negative clips ``negative`` with confidence > 0.9 and
no other clip ``negative``), so an alert must fire on a negative stretch of a stream and nowhere else.

    python -m trainers.live_demo --out /tmp/icm-explicit      # prints the model folder
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

EXPLICIT_RECIPE = {
    "base": "demo.yaml",
    "name": "learning-test",
    "threads": 1,
    "data": {"mini_set": {"seed": 0, "size": "small"}, "configs": ["explicit"], "max_train_clips": 30,
             "max_eval_clips": 12},
    "stages": {"omnisila": {"num_train_epochs": 30}},
    "evaluate": {"before_training": True, "attribution_metrics": ["sem_r"], "max_new_tokens": 64},
}  # fmt: skip


def train_explicit_demo(out_dir: str | os.PathLike, log: Callable[[str], None] = print) -> dict:
    """Run :data:`EXPLICIT_RECIPE` into ``out_dir``; the ``run_recipe`` result (``model_dir``, ``metrics`` ...) with
    ``data_dir`` (the mini set it wrote)."""
    from .recipe import run_recipe

    result = run_recipe(copy.deepcopy(EXPLICIT_RECIPE), output_dir=out_dir, log=log)
    result["data_dir"] = str(Path(out_dir) / "data")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    ns = parser.parse_args(argv)
    started = time.perf_counter()
    result = train_explicit_demo(ns.out, log=lambda m: print(f"[{time.perf_counter() - started:6.1f}s] {m}", flush=True))
    print(result["model_dir"])


if __name__ == "__main__":
    main()
