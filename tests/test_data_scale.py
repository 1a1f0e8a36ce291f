"""200K clip windows end to end: convert → OmniSila builder → Parquet export → load_dataset → WindowExamples →
collator, streaming all the way (P9 in bench/ measures the memory)."""

from __future__ import annotations

import datasets  # noqa: F401  (installed by scripts/setup.sh: a missing one fails, it does not skip)
import numpy as np
import pytest


@pytest.mark.slow
def test_200k_windows_convert_build_export_load_collate(tmp_path, tiny_processor):
    from torch.utils.data import DataLoader

    from datasets_scripts.builders import OmniSila
    from datasets_scripts.converters import convert_tsl300
    from datasets_scripts.export import export_parquet
    from datasets_scripts.mini_set import write_video
    from datasets_scripts.scale import write_tsl300_scale_set
    from processing.cache import FeatureCache
    from processing.grid import GridClips, extract_source_grids
    from processing.pipeline import ScenePipeline
    from trainers.collator import IcmDataCollator
    from trainers.data import WindowExamples

    video = tmp_path / "source.mp4"  # a real 200-s video at 1 fps, the one file behind every source id
    frames = np.stack([np.full((32, 32, 3), 20 + (i % 200), np.uint8) for i in range(200)])
    write_video(video, frames, fps=1)
    root = write_tsl300_scale_set(tmp_path / "VideoSenti", video, num_sources=1000, duration=200.0)
    windows, report = convert_tsl300(root, root / "fps_dict.json", root / "len_duration_dict.json", root / "videos",
                                     tmp_path / "data" / "explicit.jsonl")  # fmt: skip
    assert len(windows) == 200_000 and not report.issues
    assert windows.counts() == {"train": 150_000, "test": 50_000}

    builder = OmniSila(config_name="explicit", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "hf"),
                       tasks=("combined",))  # fmt: skip
    builder.download_and_prepare()
    built = builder.as_dataset()
    assert {s: len(d) for s, d in built.items()} == {"train": 150_000, "test": 50_000}
    card = export_parquet({"explicit": built}, tmp_path / "export").read_text()
    assert "| explicit | train | 150,000 | 750 | 52,000 |" in card  # clips, sources and the paper's count
    del built
    loaded = datasets.load_dataset(str(tmp_path / "export"), "explicit", cache_dir=str(tmp_path / "hf2"))
    assert {s: len(d) for s, d in loaded.items()} == {"train": 150_000, "test": 50_000}
    train = loaded["train"]
    assert train.features["label"].names == ["positive", "negative", "neutral"]

    pipeline = ScenePipeline.tiny(seed=0, scenes=("background",))
    cache = FeatureCache(tmp_path / "features")
    extraction = extract_source_grids([str(video)], pipeline, cache, progress=False)
    assert extraction.frames_extracted == 200  # one source file: 200 grid frames serve all 200K clips
    examples = WindowExamples(train, GridClips(cache, pipeline, num_frames=8))
    loader = DataLoader(examples, batch_size=4, shuffle=True, collate_fn=IcmDataCollator(tiny_processor),
                        generator=__import__("torch").Generator().manual_seed(0))  # fmt: skip
    for step, batch in enumerate(loader):
        assert batch["input_ids"].shape[0] == 4 and batch["scene_features"]["background"].shape[:2] == (4, 8)
        if step == 2:
            break
    last = examples[len(examples) - 1]
    assert last["clip_id"] == train[len(train) - 1]["clip_id"] and last["frames"].shape == (8, 32, 32, 3)
