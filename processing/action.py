"""Human-action scene extractor (paper §3.1, "Human Action Modeling ... by HigherHRNet"): x_a per person and frame.

HigherHRNet (Cheng et al., "HigherHRNet: Scale-Aware Representation Learning for Bottom-Up Human Pose Estimation",
CVPR 2020) is implemented here in our own PyTorch code. Its ``state_dict`` has exactly the names and shapes of the
official COCO checkpoint ``pose_higher_hrnet_w32_512.pth`` (``shared/checkpoint-layouts/higherhrnet_w32_512.json``;
28,645,331 parameters, a plain state dict saved with ``torch.save``), so that file loads with ``strict=True``
through :meth:`HigherHRNet.from_official_checkpoint` / :meth:`ActionExtractor.from_checkpoint`
(``torch.load(..., weights_only=True)``; nothing else is unpickled).

Network (:class:`HigherHRNetConfig` holds the sizes; the defaults are HRNet-W32):

* stem — two 3×3 stride-2 convs (64 channels) and ``layer1``, four bottleneck blocks (256 channels): 1/4 resolution;
* stages 2–4 — parallel branches at 1/4, 1/8, 1/16, 1/32 resolution with ``W, 2W, 4W, 8W`` channels, each module
  runs four basic blocks per branch and then fuses every branch into every other (1×1 conv + nearest upsampling
  from lower resolutions, strided 3×3 convs from higher ones); stage 4's last module outputs only the 1/4 branch;
* ``final_layers.0`` — 1×1 conv to 34 channels at 1/4 resolution: 17 COCO keypoint heatmaps + 17 associative-embedding
  tag maps (one tag per joint);
* ``deconv_layers.0`` — the higher-resolution head: the 1/4 features concatenated with those 34 maps, a 4×4 stride-2
  transposed conv to ``W`` channels and four basic blocks, at 1/2 resolution; ``final_layers.1`` — 1×1 conv to 17
  heatmaps at 1/2 resolution.

Bottom-up decoding and x_a (choices the paper leaves open; all are :class:`PoseDecodingConfig` fields, part of
:meth:`ActionExtractor.config_dict`):

* **input** — RGB, resized (bilinear, antialiased) so the short side is ``input_size`` (512 for the real model) and
  each side is a multiple of 32 (HRNet's coarsest branch is 1/32), ImageNet mean/std. The slight aspect change from
  rounding to 32 is undone exactly because keypoints are reported normalised to the frame.
* **heatmap aggregation** — the 1/4-resolution heatmaps are upsampled (bilinear) to 1/2 resolution and averaged with
  the 1/2-resolution heatmaps (HigherHRNet's "heatmap aggregation"); tags are upsampled likewise.
* **peaks** — non-maximum suppression with a ``nms_kernel`` max-pool, then the ``max_candidates`` highest peaks per
  joint; peaks under ``detection_threshold`` are ignored.
* **grouping** (a simple greedy associative-embedding grouping, in the spirit of Newell et al. 2017): joints are
  visited in COCO order; each candidate is matched to the person whose mean tag is nearest, nearest pairs first,
  when the tag distance is under ``tag_threshold`` and that person has no such joint yet; unmatched candidates start
  new persons. With ``refine`` on, each missing joint of a kept person is filled in at the arg-max of
  ``heatmap − round(|tag − person tag|)`` (HigherHRNet's refinement). A person's score is the mean of its 17 joint
  scores; the ``max_persons`` best are kept. A frame with no peak over the threshold has no person: all-false mask.
* **x_a** per person — ``17 × (x, y, score)`` with ``x, y`` normalised to ``[0, 1]`` of the frame (pixel centres of
  the 1/2-resolution map) and the aggregated heatmap value as score, then the deconv branch's final-stage feature
  (``W`` = 32 channels, the features that ``final_layers.1`` reads) bilinearly sampled at each keypoint, ``17 × 32``:
  51 + 544 = 595 dims (``modeling_icm.scene_contract.DEFAULT_SCENE_DIMS["action"]``).

:class:`MMPoseActionExtractor` is an optional alternative backend through ``mmpose.apis`` (imported only when used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modeling_icm.scene_contract import ACTION_FEATURE_CHANNELS, DEFAULT_SCENE_ITEMS, NUM_KEYPOINTS

from .base import SceneExtractor, require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
MMPOSE_INSTALL_HINT = (
    "pip install -U openmim && mim install mmengine 'mmcv>=2.0.1' 'mmpose>=1.1.0' "
    "(mmcv must be built for your torch; see MMPoseActionExtractor's docstring)"
)
_BN_MOMENTUM = 0.1


# ------------------------------------------------------------------------------------------------------- config
@dataclass
class HigherHRNetConfig:
    """Sizes of HigherHRNet; the defaults are the official HRNet-W32 COCO model (``pose_higher_hrnet_w32_512``).

    Args:
        width: channels of the 1/4-resolution branch ``W``; branch ``i`` has ``W * 2**i`` (32 for W32).
        stem_channels: channels of the two stem convs and the bottleneck width of ``layer1`` (64; ``layer1``
            outputs ``4 * stem_channels``).
        stem_blocks: bottleneck blocks in ``layer1`` (4).
        stage_modules: HRNet modules in stages 2, 3, 4 (1, 4, 3); stage ``s`` has ``s`` branches.
        stage_blocks: basic blocks per branch in each module (4).
        num_joints: keypoints (17 COCO joints).
        tag_per_joint: one associative-embedding tag map per joint (True: 17 tag maps) or a single shared one.
        num_deconvs: higher-resolution deconvolution heads (1: output at 1/2 resolution).
        deconv_blocks: basic blocks after each transposed conv (4).
        deconv_kernel: transposed-conv kernel size (4, stride 2, padding 1).
    """

    width: int = ACTION_FEATURE_CHANNELS
    stem_channels: int = 64
    stem_blocks: int = 4
    stage_modules: tuple[int, int, int] = (1, 4, 3)
    stage_blocks: int = 4
    num_joints: int = NUM_KEYPOINTS
    tag_per_joint: bool = True
    num_deconvs: int = 1
    deconv_blocks: int = 4
    deconv_kernel: int = 4

    def __post_init__(self):
        self.stage_modules = tuple(int(m) for m in self.stage_modules)
        if len(self.stage_modules) != 3:
            raise ValueError(f"HigherHRNetConfig.stage_modules must have 3 entries (stages 2-4), got {self.stage_modules}")
        for name in ("width", "stem_channels", "stem_blocks", "stage_blocks", "num_joints", "num_deconvs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"HigherHRNetConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if min(self.stage_modules) < 1 or self.deconv_blocks < 0:
            raise ValueError(f"HigherHRNetConfig: invalid stage_modules={self.stage_modules} / deconv_blocks")
        if self.deconv_kernel not in (2, 3, 4):
            raise ValueError(f"HigherHRNetConfig.deconv_kernel must be 2, 3 or 4, got {self.deconv_kernel}")

    @property
    def num_tag_maps(self) -> int:
        return self.num_joints if self.tag_per_joint else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage_modules"] = list(self.stage_modules)
        return data


@dataclass
class PoseDecodingConfig:
    """Bottom-up decoding of HigherHRNet's outputs into persons (module docstring, "Bottom-up decoding").

    Args:
        input_size: short side of the network input in pixels (512 for ``pose_higher_hrnet_w32_512``).
        max_persons: persons kept per frame (items of the ``action`` scene).
        detection_threshold: heatmap value a peak must exceed to be a joint candidate (0.1, HigherHRNet's default).
        tag_threshold: largest tag distance for a candidate to join a person (1.0, HigherHRNet's default).
        nms_kernel: max-pool window of the peak non-maximum suppression (5 at 512 input).
        max_candidates: peaks per joint considered (30, HigherHRNet's ``MAX_NUM_PEOPLE``).
        refine: fill in each kept person's missing joints from the heatmap and tags.
        batch_size: frames per forward pass (memory bound; does not change the output).
    """

    input_size: int = 512
    max_persons: int = DEFAULT_SCENE_ITEMS["action"]
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    max_candidates: int = 30
    refine: bool = True
    batch_size: int = 8

    def __post_init__(self):
        for name in ("input_size", "max_persons", "nms_kernel", "max_candidates", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(f"PoseDecodingConfig.{name} must be a positive integer, got {value!r}")
        if self.nms_kernel % 2 == 0:
            raise ValueError(f"PoseDecodingConfig.nms_kernel must be odd, got {self.nms_kernel}")
        if self.input_size % 32:
            raise ValueError(f"PoseDecodingConfig.input_size must be a multiple of 32, got {self.input_size}")
        if self.tag_threshold <= 0:
            raise ValueError(f"PoseDecodingConfig.tag_threshold must be > 0, got {self.tag_threshold}")


# -------------------------------------------------------------------------------------------------- network
def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=_BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (HRNet branches and the deconv head)."""

    expansion = 1

    def __init__(self, cin: int, planes: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, planes), _bn(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), _bn(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class Bottleneck(nn.Module):
    """1×1 – 3×3 – 1×1 residual block with 4× expansion (``layer1``)."""

    expansion = 4

    def __init__(self, cin: int, planes: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), _bn(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), _bn(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), _bn(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout)) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class HighResolutionModule(nn.Module):
    """One HRNet module: ``blocks`` basic blocks per branch, then every output branch sums all branches brought to
    its resolution (``fuse_layers[i][j]``: 1×1 conv + nearest ×2^(j−i) upsampling for a lower-resolution input,
    a chain of stride-2 3×3 convs for a higher-resolution one, identity for itself)."""

    def __init__(self, channels: Sequence[int], blocks: int, multi_scale_output: bool = True):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)]) for c in channels
        )
        self.fuse_layers = None
        if n > 1:
            outputs = n if multi_scale_output else 1
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(self._fuse(channels, i, j) for j in range(n)) for i in range(outputs)
            )

    @staticmethod
    def _fuse(channels: Sequence[int], i: int, j: int) -> nn.Module | None:
        if j == i:
            return None
        if j > i:
            return nn.Sequential(
                nn.Conv2d(channels[j], channels[i], 1, bias=False), _bn(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )  # fmt: skip
        steps = []
        for k in range(i - j):
            last = k == i - j - 1
            cout = channels[i] if last else channels[j]
            layers = [_conv3x3(channels[j], cout, 2), _bn(cout)]
            if not last:
                layers.append(nn.ReLU(inplace=True))
            steps.append(nn.Sequential(*layers))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for fuse in self.fuse_layers:
            y = None
            for j, x in enumerate(xs):
                term = x if fuse[j] is None else fuse[j](x)
                y = term if y is None else y + term
            out.append(F.relu(y))
        return out


def _transition(prev: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Between stages: adapt channels of existing branches (None when unchanged) and create the new, lower-resolution
    branch from the last one with stride-2 3×3 convs."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(prev):
            layers.append(
                None if prev[i] == c else nn.Sequential(_conv3x3(prev[i], c), _bn(c), nn.ReLU(inplace=True))
            )
        else:
            steps = []
            for k in range(i + 1 - len(prev)):
                cin = prev[-1]
                cout = c if k == i - len(prev) else cin
                steps.append(nn.Sequential(_conv3x3(cin, cout, 2), _bn(cout), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


@dataclass
class HigherHRNetOutput:
    """Raw HigherHRNet outputs.

    Attributes:
        outputs: ``[final_layers.0 → [B, J + tags, H/4, W/4], final_layers.1 → [B, J, H/2, W/2], ...]``.
        features: the last deconv head's features before its final layer, ``[B, width, H/2, W/2]``.
    """

    outputs: list[torch.Tensor]
    features: torch.Tensor


class HigherHRNet(nn.Module):
    """HRNet backbone + the higher-resolution deconvolution head; ``state_dict`` layout of the official checkpoint."""

    def __init__(self, config: HigherHRNetConfig | None = None):
        super().__init__()
        self.config = c = config or HigherHRNetConfig()
        self.conv1, self.bn1 = nn.Conv2d(3, c.stem_channels, 3, 2, 1, bias=False), _bn(c.stem_channels)
        self.conv2, self.bn2 = nn.Conv2d(c.stem_channels, c.stem_channels, 3, 2, 1, bias=False), _bn(c.stem_channels)
        stem_out = c.stem_channels * Bottleneck.expansion
        self.layer1 = nn.Sequential(
            *[Bottleneck(c.stem_channels if k == 0 else stem_out, c.stem_channels) for k in range(c.stem_blocks)]
        )
        prev = [stem_out]
        for stage, modules in zip((2, 3, 4), c.stage_modules):
            channels = [c.width * 2**b for b in range(stage)]
            setattr(self, f"transition{stage - 1}", _transition(prev, channels))
            setattr(
                self,
                f"stage{stage}",
                nn.Sequential(
                    *[
                        HighResolutionModule(channels, c.stage_blocks, multi_scale_output=stage < 4 or m < modules - 1)
                        for m in range(modules)
                    ]
                ),
            )
            prev = channels
        heads = c.num_joints + c.num_tag_maps
        self.final_layers = nn.ModuleList(
            [nn.Conv2d(c.width, heads, 1)] + [nn.Conv2d(c.width, c.num_joints, 1) for _ in range(c.num_deconvs)]
        )
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[c.deconv_kernel]
        deconvs = []
        for d in range(c.num_deconvs):
            cin = c.width + (heads if d == 0 else c.num_joints)  # HigherHRNet concatenates features and outputs
            deconvs.append(
                nn.Sequential(
                    nn.Sequential(
                        nn.ConvTranspose2d(cin, c.width, c.deconv_kernel, 2, padding, output_padding, bias=False),
                        _bn(c.width),
                        nn.ReLU(inplace=True),
                    ),
                    *[nn.Sequential(BasicBlock(c.width, c.width)) for _ in range(c.deconv_blocks)],
                )
            )
        self.deconv_layers = nn.ModuleList(deconvs)

    def forward(self, pixel_values: torch.Tensor) -> HigherHRNetOutput:
        """``pixel_values`` ``[B, 3, H, W]`` normalised RGB, ``H`` and ``W`` multiples of 32."""
        h, w = pixel_values.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"HigherHRNet input height and width must be multiples of 32, got {h}x{w}")
        x = F.relu(self.bn1(self.conv1(pixel_values)))
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            xs = [
                xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)
            ]
            xs = getattr(self, f"stage{stage}")(xs)
        y = xs[0]
        x = self.final_layers[0](y)
        outputs = [x]
        for d, deconv in enumerate(self.deconv_layers):
            y = deconv(torch.cat((y, x), dim=1))
            x = self.final_layers[d + 1](y)
            outputs.append(x)
        return HigherHRNetOutput(outputs=outputs, features=y)

    @classmethod
    def from_official_checkpoint(
        cls, path: str | Path, config: HigherHRNetConfig | None = None, **config_overrides
    ) -> HigherHRNet:
        """Load the official ``pose_higher_hrnet_w32_512.pth`` (a plain state dict saved with ``torch.save``; also
        accepted: a ``{"state_dict": ...}`` training checkpoint, ``module.``-prefixed keys from DataParallel, or a
        ``.safetensors`` file) with ``weights_only=True`` and ``strict=True``."""
        state_dict = load_higherhrnet_state_dict(path)
        if isinstance(config, dict):  # a recipe's JSON/YAML sizes
            config = HigherHRNetConfig(**{**config, **config_overrides})
        config = config or HigherHRNetConfig(**config_overrides)
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            model = cls(config)
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {str(path)!r} does not match the HigherHRNet layout of {config}: {_first_lines(err)}"
            ) from err
        return model.eval()


def _first_lines(err: BaseException, n: int = 6) -> str:
    lines = str(err).splitlines()
    return "\n".join(lines[:n]) + (" ..." if len(lines) > n else "")


def load_higherhrnet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a HigherHRNet state dict from ``path`` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HigherHRNet checkpoint not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"cannot read HigherHRNet safetensors checkpoint {str(path)!r}: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or a pickle that needs arbitrary objects
        raise ValueError(f"cannot read HigherHRNet checkpoint {str(path)!r} with weights_only=True: {err}") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        keys = sorted(map(str, obj))[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"HigherHRNet checkpoint {str(path)!r} is not a state dict of tensors (official format: "
            f"torch.save(model.state_dict())); found {keys}"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------------------------- decoding
@dataclass
class PersonPoses:
    """Decoded persons of one frame, best first.

    Attributes:
        keypoints: ``[P, J, 3]`` — ``x, y`` in pixels of the heatmap grid, and the joint score.
        scores: ``[P]`` person scores (mean joint score).
        tags: ``[P]`` mean associative-embedding tag of each person's detected joints.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    tags: torch.Tensor


def aggregate_outputs(outputs: Sequence[torch.Tensor], num_joints: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HigherHRNet heatmap aggregation: every output's heatmaps bilinearly resized to the highest resolution and
    averaged; the tag maps (channels ``num_joints:`` of the first output) resized to the same grid.
    Returns ``(heatmaps [B, J, h, w], tags [B, J or 1, h, w])``."""
    size = outputs[-1].shape[-2:]

    def resize(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    heatmaps = torch.stack([resize(o[:, :num_joints]) for o in outputs]).mean(0)
    tags = resize(outputs[0][:, num_joints:])
    return heatmaps, tags


def find_peaks(
    heatmaps: torch.Tensor, tags: torch.Tensor, nms_kernel: int, max_candidates: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max-pool NMS and the top ``max_candidates`` peaks per joint, batched over frames.
    Returns ``(scores, xs, ys, tag_values)``, each ``[B, J, K]``."""
    b, j, h, w = heatmaps.shape
    pooled = F.max_pool2d(heatmaps, nms_kernel, stride=1, padding=nms_kernel // 2)
    peaks = torch.where(pooled == heatmaps, heatmaps, torch.full_like(heatmaps, float("-inf")))
    k = min(max_candidates, h * w)
    scores, index = peaks.flatten(2).topk(k, dim=-1)
    if tags.shape[1] == 1:
        tags = tags.expand(b, j, h, w)
    tag_values = tags.flatten(2).gather(-1, index)
    return scores, index % w, torch.div(index, w, rounding_mode="floor"), tag_values


def group_joints(
    scores: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    tag_values: torch.Tensor,
    detection_threshold: float,
    tag_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy associative-embedding grouping of one frame's joint candidates (``[J, K]`` each) into persons.

    Joints are visited in order; each candidate over ``detection_threshold`` joins the person whose mean tag is
    nearest (nearest pairs first) when the distance is under ``tag_threshold`` and that person lacks the joint;
    otherwise it starts a new person. Returns ``(keypoints [P, J, 3], detected [P, J] bool, mean tags [P])``.
    """
    num_joints, num_candidates = scores.shape
    scores, xs, ys, tag_values = (t.detach().cpu().double().numpy() for t in (scores, xs, ys, tag_values))
    capacity = num_joints * num_candidates
    keypoints = np.zeros((capacity, num_joints, 3), dtype=np.float32)
    detected = np.zeros((capacity, num_joints), dtype=bool)
    tag_sums = np.zeros(capacity)
    tag_counts = np.zeros(capacity)
    n = 0  # persons so far
    for j in range(num_joints):
        candidates = np.flatnonzero(scores[j] > detection_threshold)
        if candidates.size == 0:
            continue
        assigned = np.full(candidates.size, -1)
        if n:
            distance = np.abs(tag_values[j, candidates][:, None] - (tag_sums[:n] / tag_counts[:n])[None, :])
            distance[distance >= tag_threshold] = np.inf
            for _ in range(min(candidates.size, n)):  # nearest remaining pair first, each side used once
                c, p = divmod(int(distance.argmin()), n)
                if not np.isfinite(distance[c, p]):
                    break
                assigned[c] = p
                distance[c, :] = np.inf
                distance[:, p] = np.inf
        new = assigned < 0
        assigned[new] = np.arange(n, n + int(new.sum()))
        n += int(new.sum())
        keypoints[assigned, j] = np.stack((xs[j, candidates], ys[j, candidates], scores[j, candidates]), -1)
        detected[assigned, j] = True
        tag_sums[assigned] += tag_values[j, candidates]
        tag_counts[assigned] += 1
    mean_tags = (tag_sums[:n] / np.maximum(tag_counts[:n], 1)).astype(np.float32)
    return torch.from_numpy(keypoints[:n]), torch.from_numpy(detected[:n]), torch.from_numpy(mean_tags)


def refine_missing_joints(
    heatmaps: torch.Tensor, tags: torch.Tensor, keypoints: torch.Tensor, detected: torch.Tensor, person_tags: torch.Tensor
) -> torch.Tensor:
    """HigherHRNet's refinement for one frame: a person's missing joint ``j`` is placed at the arg-max of
    ``heatmaps[j] − round(|tags[j] − person tag|)`` with the heatmap value there as its score."""
    if keypoints.numel() == 0 or bool(detected.all()):
        return keypoints
    j, h, w = heatmaps.shape
    if tags.shape[0] == 1:
        tags = tags.expand(j, h, w)
    cost = heatmaps[None] - torch.round((tags[None] - person_tags.to(tags)[:, None, None, None]).abs())  # [P,J,h,w]
    best = cost.flatten(2).argmax(-1)  # [P, J]
    values = heatmaps.flatten(1)[torch.arange(j)[None, :], best]  # [P, J]
    filled = torch.stack(((best % w).float(), torch.div(best, w, rounding_mode="floor").float(), values), -1)
    return torch.where(detected[..., None], keypoints, filled.to(keypoints))


def decode_poses(heatmaps: torch.Tensor, tags: torch.Tensor, config: PoseDecodingConfig) -> list[PersonPoses]:
    """Bottom-up decoding of aggregated heatmaps ``[B, J, h, w]`` and tags ``[B, J or 1, h, w]`` into persons per
    frame: NMS peaks (batched), greedy tag grouping, optional refinement, the ``max_persons`` best by score."""
    heatmaps, tags = heatmaps.detach().float().cpu(), tags.detach().float().cpu()
    scores, xs, ys, tag_values = find_peaks(heatmaps, tags, config.nms_kernel, config.max_candidates)
    results = []
    for t in range(heatmaps.shape[0]):
        keypoints, detected, person_tags = group_joints(
            scores[t], xs[t], ys[t], tag_values[t], config.detection_threshold, config.tag_threshold
        )
        if keypoints.shape[0]:
            # keep the best candidates before refining (cheap), then rank again on the refined joint scores
            first = keypoints[..., 2].sum(-1) / keypoints.shape[1]
            keep = first.argsort(descending=True, stable=True)[: config.max_persons]
            keypoints, detected, person_tags = keypoints[keep], detected[keep], person_tags[keep]
            if config.refine:
                keypoints = refine_missing_joints(heatmaps[t], tags[t], keypoints, detected, person_tags)
            person_scores = keypoints[..., 2].mean(-1)
            order = person_scores.argsort(descending=True, stable=True)
            keypoints, person_scores, person_tags = keypoints[order], person_scores[order], person_tags[order]
        else:
            person_scores = torch.zeros(0)
        results.append(PersonPoses(keypoints=keypoints, scores=person_scores, tags=person_tags))
    return results


def encode_persons(
    poses: Sequence[PersonPoses], features: torch.Tensor, max_persons: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_a: per person ``[17 × (x, y, score), 17 × C]`` — keypoints normalised to ``[0, 1]`` (pixel centres of the
    ``[h, w]`` grid of ``features [B, C, h, w]``) and the features bilinearly sampled there. Returns
    ``(x_a [B, max_persons, J*3 + J*C], mask [B, max_persons])``; absent persons are zero rows, masked out."""
    b, c, h, w = features.shape
    num_joints = poses[0].keypoints.shape[1] if poses and poses[0].keypoints.dim() == 3 else NUM_KEYPOINTS
    out = torch.zeros(b, max_persons, num_joints * (3 + c))
    mask = torch.zeros(b, max_persons, dtype=torch.bool)
    scale = torch.tensor([w, h], dtype=torch.float32)
    for t, pose in enumerate(poses):
        n = min(max_persons, pose.keypoints.shape[0])
        if n == 0:
            continue
        kp = pose.keypoints[:n].float()
        xy = (kp[..., :2] + 0.5) / scale  # [n, J, 2] in [0, 1]
        grid = (xy * 2 - 1).reshape(1, 1, n * num_joints, 2).to(features)
        sampled = F.grid_sample(features[t : t + 1].float(), grid, mode="bilinear", align_corners=False)
        sampled = sampled.reshape(c, n, num_joints).permute(1, 2, 0).cpu()  # [n, J, C]
        keypoint_part = torch.cat((xy, kp[..., 2:3]), dim=-1).reshape(n, -1)
        out[t, :n] = torch.cat((keypoint_part, sampled.reshape(n, -1)), dim=-1)
        mask[t, :n] = True
    return out, mask


# ------------------------------------------------------------------------------------------------ extractor
def _weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ActionExtractor(SceneExtractor):
    """Frozen HigherHRNet turning frames into the human-action scene features x_a (paper §3.1; layout and decoding
    in the module docstring). ``extract(frames [T, H, W, 3] uint8)`` → ``(features [T, max_persons, output_dim],
    mask [T, max_persons])`` with ``output_dim = 17 × 3 + 17 × width`` (595 for W32).

    Args:
        model: the HigherHRNet network (see :meth:`from_checkpoint`, :meth:`tiny`).
        decoding: a :class:`PoseDecodingConfig`; keyword ``overrides`` set its fields.
        image_mean / image_std: RGB normalisation (ImageNet).
    """

    scene = "action"

    def __init__(
        self,
        model: HigherHRNet,
        decoding: PoseDecodingConfig | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **overrides,
    ):
        decoding = decoding or PoseDecodingConfig()
        if overrides:
            unknown = set(overrides) - {f.name for f in fields(PoseDecodingConfig)}
            if unknown:
                raise TypeError(f"ActionExtractor got unknown option(s) {sorted(unknown)}")
            decoding = PoseDecodingConfig(**{**asdict(decoding), **overrides})
        c = model.config
        super().__init__(c.num_joints * 3 + c.num_joints * c.width, decoding.max_persons)
        self.model = model
        self.decoding = decoding
        self.image_mean, self.image_std = tuple(map(float, image_mean)), tuple(map(float, image_std))
        self.register_buffer("_mean", torch.tensor(self.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.image_std).view(1, 3, 1, 1), persistent=False)
        self._weights_digest: str | None = None
        self.freeze()

    # -- construction
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: HigherHRNetConfig | None = None, **kwargs
    ) -> ActionExtractor:
        """HigherHRNet from the official ``pose_higher_hrnet_w32_512.pth`` (or a ``.safetensors`` state dict).
        ``kwargs`` are :class:`PoseDecodingConfig` fields (``max_persons``, ``input_size``...)."""
        return cls(HigherHRNet.from_official_checkpoint(path, config=config), **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> ActionExtractor:
        """A tiny random HigherHRNet through the same classes (tests, CI): W8, 8-channel stem with one bottleneck,
        one module per stage with one block per branch, one deconv block, 64-pixel input, 3×3 NMS. ``overrides``
        may set any :class:`HigherHRNetConfig` or :class:`PoseDecodingConfig` field."""
        config_names = {f.name for f in fields(HigherHRNetConfig)}
        config = dict(width=8, stem_channels=8, stem_blocks=1, stage_modules=(1, 1, 1), stage_blocks=1, deconv_blocks=1)
        config.update({k: v for k, v in overrides.items() if k in config_names})
        kwargs = dict(input_size=64, nms_kernel=3)
        kwargs.update({k: v for k, v in overrides.items() if k not in config_names})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HigherHRNet(HigherHRNetConfig(**config))
        return cls(model.eval(), **kwargs)

    def config_dict(self) -> dict[str, Any]:
        """JSON-able description of everything that determines the output (the feature-cache key)."""
        return {
            "extractor": "higherhrnet",
            "scene": self.scene,
            "model": self.model.config.to_dict(),
            "weights_sha256": self.weights_digest(),
            "decoding": asdict(self.decoding),
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "output_dim": self.output_dim,
            "max_items": self.max_items,
        }

    def weights_digest(self) -> str:
        """SHA-256 of the state dict (names, dtypes, shapes, values); computed once."""
        if self._weights_digest is None:
            self._weights_digest = _weights_digest(self.model)
        return self._weights_digest

    # -- inference
    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """Network input size: short side ``input_size``, both sides rounded to multiples of 32."""
        scale = self.decoding.input_size / min(height, width)
        return (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` → normalised float ``[T, 3, h, w]`` on the model's device."""
        frames = self.check_frames(frames)
        x = frames.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.input_size_for(*frames.shape[1:3])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    def _run(self, chunk: torch.Tensor) -> tuple[list[PersonPoses], torch.Tensor]:
        out = self.model(self.preprocess(chunk))
        heatmaps, tags = aggregate_outputs(out.outputs, self.model.config.num_joints)
        return decode_poses(heatmaps, tags, self.decoding), out.features

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> tuple[list[PersonPoses], torch.Tensor]:
        """Persons per frame (keypoints on the 1/2-resolution grid) and the deconv features ``[T, W, h, w]``."""
        poses: list[PersonPoses] = []
        feats: list[torch.Tensor] = []
        for chunk in self.check_frames(frames).split(self.decoding.batch_size):
            chunk_poses, chunk_feats = self._run(chunk)
            poses.extend(chunk_poses)
            feats.append(chunk_feats)
        return poses, torch.cat(feats)

    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_a for ``frames`` ``[T, H, W, 3]`` uint8 RGB, batched over frames: ``(features [T, max_persons,
        output_dim] float32, mask [T, max_persons] bool)``, on CPU."""
        frames = self.check_frames(frames)
        if frames.shape[0] == 0:
            return self.empty(0)
        features: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for chunk in frames.split(self.decoding.batch_size):
            poses, feats = self._run(chunk)
            x_a, mask = encode_persons(poses, feats, self.max_items)
            features.append(x_a)
            masks.append(mask)
        return torch.cat(features).float(), torch.cat(masks)

    def keypoints(self, frames: torch.Tensor) -> list[dict[str, Any]]:
        """Human-readable poses per frame: ``[{"score", "keypoints": {name: (x, y, score)}}, ...]`` with ``x, y``
        normalised to ``[0, 1]`` of the frame."""
        poses, feats = self.detect(frames)
        h, w = feats.shape[-2:]
        result = []
        for pose in poses:
            persons = []
            for kp, score in zip(pose.keypoints, pose.scores):
                names = COCO_KEYPOINTS if kp.shape[0] == len(COCO_KEYPOINTS) else [str(i) for i in range(len(kp))]
                persons.append(
                    {
                        "score": float(score),
                        "keypoints": {
                            n: ((float(x) + 0.5) / w, (float(y) + 0.5) / h, float(s)) for n, (x, y, s) in zip(names, kp)
                        },
                    }
                )
            result.append(persons)
        return result


# ------------------------------------------------------------------------------------------ optional mmpose
class MMPoseActionExtractor(SceneExtractor):
    """Optional backend: associative-embedding HRNet through ``mmpose.apis`` (``init_model`` +
    ``inference_bottomup``), producing the same x_a layout as :class:`ActionExtractor` — 17 × (x, y normalised to
    ``[0, 1]``, score) + the backbone's highest-resolution features (``feature_channels``, 32 for HRNet-W32)
    bilinearly sampled at each keypoint. mmpose is imported only when this class is instantiated.

    Install (mmpose 1.x has no HigherHRNet, and mmcv must be compiled for the installed torch, ~15 minutes)::

        pip install -U openmim
        mim install mmengine "mmcv>=2.0.1" "mmpose>=1.1.0"
        # config + weights of the associative-embedding HRNet-W32 (COCO, 512x512) from the mmpose model zoo:
        mim download mmpose --config ae_hrnet-w32_8xb24-300e_coco-512x512 --dest checkpoints/

    Then ``MMPoseActionExtractor("checkpoints/ae_hrnet-w32_8xb24-300e_coco-512x512.py", "checkpoints/<file>.pth")``.

    Args:
        config: the mmpose model config file.
        checkpoint: its weights (loaded by mmpose/mmengine).
        device: e.g. ``"cpu"`` or ``"cuda:0"``.
        max_persons: persons kept per frame, best (mean keypoint score) first.
        feature_channels: channels of the backbone's first (highest-resolution) output.
        detection_threshold: a person is real (mask True) when its mean keypoint score exceeds this.
    """

    scene = "action"

    def __init__(
        self,
        config: str | Path,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        max_persons: int = DEFAULT_SCENE_ITEMS["action"],
        feature_channels: int = ACTION_FEATURE_CHANNELS,
        detection_threshold: float = 0.1,
    ):
        require("mmpose", "MMPoseActionExtractor (the optional mmpose action backend)", hint=MMPOSE_INSTALL_HINT)
        from mmpose.apis import inference_bottomup, init_model

        super().__init__(NUM_KEYPOINTS * 3 + NUM_KEYPOINTS * int(feature_channels), max_persons)
        self.config_path = str(config)
        self.checkpoint_path = None if checkpoint is None else str(checkpoint)
        self.feature_channels = int(feature_channels)
        self.detection_threshold = float(detection_threshold)
        self._inference = inference_bottomup
        self.pose_model = init_model(self.config_path, self.checkpoint_path, device=device)
        self._features: list[torch.Tensor] = []
        self.pose_model.backbone.register_forward_hook(self._keep_features)
        self._checkpoint_digest: str | None = None
        self.freeze()

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: str | Path | None = None, **kwargs) -> MMPoseActionExtractor:
        """``path``: the mmpose ``.pth`` weights; ``config``: its mmpose config file (required)."""
        if config is None:
            raise ValueError(f"MMPoseActionExtractor.from_checkpoint({str(path)!r}) needs the mmpose config file")
        return cls(config, path, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> MMPoseActionExtractor:
        """mmpose builds its models from config files; there is no tiny random variant (use ActionExtractor.tiny)."""
        require("mmpose", "MMPoseActionExtractor (the optional mmpose action backend)", hint=MMPOSE_INSTALL_HINT)
        raise NotImplementedError("MMPoseActionExtractor has no tiny variant; pass an mmpose config and checkpoint")

    def _keep_features(self, module, inputs, output) -> None:
        first = output[0] if isinstance(output, (tuple, list)) else output
        self._features.append(first.detach())

    def config_dict(self) -> dict[str, Any]:
        if self._checkpoint_digest is None and self.checkpoint_path is not None:
            digest = hashlib.sha256()
            with open(self.checkpoint_path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._checkpoint_digest = digest.hexdigest()
        return {
            "extractor": "mmpose-associative-embedding",
            "scene": self.scene,
            "config": Path(self.config_path).read_text(),
            "checkpoint_sha256": self._checkpoint_digest,
            "feature_channels": self.feature_channels,
            "detection_threshold": self.detection_threshold,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
        }

    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.check_frames(frames)
        features, mask = self.empty(frames.shape[0])
        height, width = frames.shape[1:3]
        for t, frame in enumerate(frames.cpu().numpy()):
            self._features.clear()
            results = self._inference(self.pose_model, frame[..., ::-1].copy())  # mmpose expects BGR like mmcv
            if not results or not self._features:
                continue
            sample = results[0]
            keypoints = torch.as_tensor(sample.pred_instances.keypoints, dtype=torch.float32)  # [N, 17, 2] pixels
            scores = torch.as_tensor(sample.pred_instances.keypoint_scores, dtype=torch.float32)  # [N, 17]
            if keypoints.numel() == 0:
                continue
            person_scores = scores.mean(-1)
            order = person_scores.argsort(descending=True)
            order = order[person_scores[order] > self.detection_threshold][: self.max_items]
            if order.numel() == 0:
                continue
            keypoints, scores = keypoints[order], scores[order]
            feature_map = self._features[-1][:1].float()
            grid = self._input_grid(sample.metainfo, keypoints, width, height)  # [n, 17, 2] in [0, 1] of the input
            sampled = F.grid_sample(
                feature_map, (grid * 2 - 1).reshape(1, 1, -1, 2).to(feature_map), align_corners=False
            )
            n = keypoints.shape[0]
            sampled = sampled.reshape(feature_map.shape[1], n, NUM_KEYPOINTS).permute(1, 2, 0).cpu()
            xy = keypoints / torch.tensor([width, height], dtype=torch.float32)
            part = torch.cat((xy.clamp(0, 1), scores[..., None]), -1).reshape(n, -1)
            features[t, :n] = torch.cat((part, sampled[..., : self.feature_channels].reshape(n, -1)), -1)
            mask[t, :n] = True
        return features, mask

    @staticmethod
    def _input_grid(metainfo: dict, keypoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Keypoints (image pixels) → normalised coordinates of the network input, inverting mmpose's bottom-up
        resize (``input_center``, ``input_scale``, ``input_size`` in the data sample's metainfo); without that
        metainfo the input is taken to be the whole frame."""
        if all(k in metainfo for k in ("input_center", "input_scale")):
            center = torch.as_tensor(metainfo["input_center"], dtype=torch.float32).reshape(2)
            scale = torch.as_tensor(metainfo["input_scale"], dtype=torch.float32).reshape(2)
            return ((keypoints - center) / scale + 0.5).clamp(0, 1)
        return (keypoints / torch.tensor([width, height], dtype=torch.float32)).clamp(0, 1)


__all__ = [
    "COCO_KEYPOINTS",
    "ActionExtractor",
    "HigherHRNet",
    "HigherHRNetConfig",
    "HigherHRNetOutput",
    "MMPoseActionExtractor",
    "PersonPoses",
    "PoseDecodingConfig",
    "aggregate_outputs",
    "decode_poses",
    "encode_persons",
    "find_peaks",
    "group_joints",
    "load_higherhrnet_state_dict",
    "refine_missing_joints",
]
