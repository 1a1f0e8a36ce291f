"""RelTR object-relation extractor (paper §3.1): batched vs frame-by-frame extraction, and the full-config cost.

(a) Ratio: throughput of ``RelationExtractor.extract`` on 8 frames in one padded batch (``batch_size=8``) vs the
    naive loop over the frames one by one (``batch_size=1``), same weights, runs interleaved and medians compared
    so machine load hits both sides. Done for the tiny config and for the full RelTR architecture (random weights
    of the official layout) at a reduced resolution.
(b) The full config (ResNet-50, 6+6 layers, 100 entity + 200 triplet queries) on one 800x1066 frame: FLOPs counted
    with torch's ``FlopCounterMode`` and CPU seconds (process time) of one forward.

    python bench/bench_reltr.py [--repeats 3] [--full-size]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from processing.relation import RelationExtractor, RelTR


def _frames(n: int, h: int, w: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def batched_vs_naive(model: RelTR, frames: torch.Tensor, repeats: int, **kw) -> dict[str, dict[str, float]]:
    """Median wall and CPU (process) seconds of both ways, interleaved."""
    batched = RelationExtractor(model, batch_size=len(frames), **kw)
    naive = RelationExtractor(model, batch_size=1, **kw)
    batched.extract(frames[:1])  # warm-up
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in ("batched", "naive")}
    for _ in range(repeats):
        for name, ext in (("batched", batched), ("naive", naive)):
            wall, cpu = time.perf_counter(), time.process_time()
            ext.extract(frames)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in times.items()}


def report(label: str, t: dict[str, dict[str, float]]) -> None:
    b, n = t["batched"], t["naive"]
    print(
        f"(a) {label}: batched {b['wall']:.3f}s wall / {b['cpu']:.3f}s CPU, naive {n['wall']:.3f}s / {n['cpu']:.3f}s"
        f" -> throughput ratio {n['wall'] / b['wall']:.2f}x wall, {n['cpu'] / b['cpu']:.2f}x CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-size", action="store_true", help="also time one full-config 800x1066 forward")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")

    tiny = RelationExtractor.tiny()
    report("tiny, 8 frames 96x96", batched_vs_naive(tiny.model, _frames(8, 96, 96), args.repeats, min_size=96))

    full = RelTR().eval()
    report("full, 8 frames 240x320", batched_vs_naive(full, _frames(8, 240, 320), args.repeats, min_size=240))

    extractor = RelationExtractor(full)
    pixel_values, pixel_mask = extractor.preprocess(_frames(1, 800, 1066))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        full(pixel_values, pixel_mask)
    print(f"(b) full, one 800x1066 frame: {counter.get_total_flops() / 1e9:.1f} GFLOPs")
    if args.full_size:
        with torch.no_grad():
            cpu, wall = time.process_time(), time.perf_counter()
            extractor.extract(_frames(1, 800, 1066))
            print(f"    CPU {time.process_time() - cpu:.2f}s, wall {time.perf_counter() - wall:.2f}s")


if __name__ == "__main__":
    main()
