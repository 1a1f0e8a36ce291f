"""The interface every frozen scene extractor implements, and the optional-dependency guards.

An extractor turns the sampled frames of one clip into one scene's features in the scene-feature contract
(``modeling_icm.scene_contract``): ``extract(frames)`` with ``frames`` a uint8 RGB tensor ``[T, H, W, 3]``
returns ``(features [T, max_items, output_dim] float32, mask [T, max_items] bool)``. Extractors are frozen
(``eval()``, ``requires_grad_(False)``), batched over frames and device-aware (``.to(device)``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch
from torch import nn

SCENE_INSTALL_HINT = "pip install 'omnisila-icm[scene]'"


@lru_cache
def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def is_facenet_available() -> bool:
    return _has("facenet_pytorch")


def is_segment_anything_available() -> bool:
    return _has("segment_anything")


def is_decord_available() -> bool:
    return _has("decord")


def is_av_available() -> bool:
    return _has("av")


def require(module: str, what: str, hint: str = SCENE_INSTALL_HINT) -> None:
    """Raise an ``ImportError`` with the install hint when ``module`` is missing."""
    if not _has(module):
        raise ImportError(f"{what} needs the package '{module}', which is not installed. Install it with: {hint}")


class SceneExtractor(nn.Module):
    """Base class of the four frozen extractors (face, action, object, background)."""

    #: one of modeling_icm.templates.SCENE_NAMES
    scene: str = ""

    def __init__(self, output_dim: int, max_items: int):
        super().__init__()
        self.output_dim = int(output_dim)
        self.max_items = int(max_items)

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def freeze(self) -> SceneExtractor:
        self.eval()
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> SceneExtractor:  # frozen: never leaves eval mode
        return super().train(False)

    def empty(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All-false features for ``num_frames`` frames (no face, no person...)."""
        return (
            torch.zeros(num_frames, self.max_items, self.output_dim),
            torch.zeros(num_frames, self.max_items, dtype=torch.bool),
        )

    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def check_frames(frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
        if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] != 3:
            shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
            raise ValueError(f"{name} must be a uint8 RGB tensor [T, H, W, 3], got {shape}")
        if frames.dtype != torch.uint8:
            raise ValueError(f"{name} must be uint8 RGB, got dtype {frames.dtype}")
        return frames
