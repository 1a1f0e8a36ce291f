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

Pipeline modes (``PoseDecodingConfig.mode``, part of :meth:`ActionExtractor.config_dict`):

* ``"official"`` (the default, and the paper preset's: ``ScenePipeline.from_pretrained``) re-implements the official
  test pipeline — ``tools/valid.py`` of HRNet/HigherHRNet-Human-Pose-Estimation with
  ``experiments/coco/higher_hrnet/w32_512_adam_lr1e-3.yaml``, the configuration ``pose_higher_hrnet_w32_512.pth``
  was evaluated with:

  - *input* (:class:`OfficialGeometry`, :func:`warp_affine_bilinear`): the short side becomes
    ``ceil64(input_size)`` (512), the long side keeps the aspect ratio and is rounded *up* to a multiple of 64; the
    frame is scaled uniformly about its centre into that canvas by an affine warp (bilinear, black border — the
    padding), in OpenCV's fixed-point arithmetic: bit-identical to ``cv2.warpAffine`` of OpenCV 4.x (tested on
    real frames); OpenCV ≥ 4.11 / 5.x changed that arithmetic (≤ 1 grey level on a few % of pixels). Then
    ``/ 255`` and ImageNet mean/std, as ``ToTensor`` + ``Normalize``.
  - *flip test* (``flip_test``, ``TEST.FLIP_TEST: True``): the mirrored input runs in the same batch; its outputs
    are flipped back and left/right joints (and their tags) swapped.
  - *maps*: per pass the 1/4-resolution output is upsampled (bilinear) to 1/2 and its heatmaps averaged with the
    1/2-resolution ones; tags come from the 1/4 output (``WITH_AE: [True, False]``); heatmaps and tags of both
    passes are projected (bilinear) to the input resolution (``PROJECT2IMAGE``); heatmaps of the passes averaged,
    tags stacked (2 per joint).
  - *parser*: 5×5 max-pool NMS (``NMS_KERNEL 5``, padding 2), the 30 best peaks per joint (``MAX_NUM_PEOPLE``);
    joints grouped in the official joint order by the Hungarian method (:func:`munkres_assignment`, the textbook
    Munkres algorithm with the tie-breaking of the ``munkres`` package) on ``round(‖Δtag‖₂)·100 − score``
    (``USE_DETECTION_VAL``), a candidate joining when ``‖Δtag‖ < 1`` (``TAG_THRESHOLD``), peaks over 0.1
    (``DETECTION_THRESHOLD``); quarter-pixel adjustment (``ADJUST``); refinement of missing joints (``REFINE``);
    keypoints mapped back to the frame by the inverse affine (``get_final_preds``). The person score is the
    official one: the mean of the 17 joint scores before refinement.
  - *remaining differences*: the official code returns every person (often hundreds with random weights); x_a
    keeps the ``max_persons`` best by official score (stable among ties), and only those are refined (refinement
    is per person, so theirs are unchanged); frames of one chunk are batched (one forward for frames and mirrors;
    float differences ~1e-6 against single-image forwards); single scale (``SCALE_FACTOR: [1]``, as the config);
    frames arrive as decoded RGB arrays (the official loader reads files with OpenCV and converts BGR→RGB).
    Verified end to end against numbers produced by the official code on real frames
    (``tests/test_processing_action.py::test_official_mode_matches_the_official_pipeline_on_real_frames``,
    keypoints within a pixel; the full W32 at 512 in a slow test).

* ``"fast"`` — the earlier, cheaper path (and the tiny test models' default): RGB resized (bilinear, antialiased)
  so the short side is ``input_size`` and each side a multiple of 32 (a slight stretch, undone because keypoints
  are normalised to the frame); one pass, no flip; heatmaps aggregated at 1/2 resolution; max-pool NMS
  (``nms_kernel``), the ``max_candidates`` best peaks per joint over ``detection_threshold``; a greedy
  associative-embedding grouping (joints in COCO order, nearest mean tag first, under ``tag_threshold``, one joint
  per person); with ``refine`` each missing joint of a kept person at the arg-max of
  ``heatmap − round(|tag − person tag|)``. ``bench/bench_p14_official_modes.py`` measures the speed-up and the
  agreement between the modes.

Bad input: in the official mode, frames with a side under 32 pixels (the network stride) or an aspect ratio over
``max_aspect_ratio`` (8; a 1×20 strip would become a 512×10240 input) raise a ValueError naming the frame size (the
fast mode resizes any frame to its input — a 1×20 strip is stretched to 64×1280 at ``input_size`` 64 — as it always
has, so the tiny pipelines keep accepting the small synthetic frames other tests feed them); grayscale frames
(``[T, H, W]`` or one channel) raise a ValueError asking for ``[T, H, W, 3]``; a checkpoint of another width (W48
given with a W32 config) raises a ValueError naming both widths, and without a config the width is read off the
checkpoint.

x_a per person (both modes) — ``17 × (x, y, score)`` with ``x, y`` normalised to ``[0, 1]`` of the frame (official
mode: the frame-pixel keypoints divided by the frame size, clamped; fast mode: pixel centres of the 1/2-resolution
map) and the joint score, then the deconv branch's final-stage feature (``W`` = 32 channels, the features that
``final_layers.1`` reads; official mode: of the unflipped pass) bilinearly sampled at each keypoint, ``17 × 32``:
51 + 544 = 595 dims (``modeling_icm.scene_contract.DEFAULT_SCENE_DIMS["action"]``). A frame with no person over the
threshold gives an all-false mask.

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

from .base import SceneExtractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
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
        mode: ``"official"`` (the default; the official HigherHRNet test pipeline — keep-aspect resize and pad,
            flip test, heatmaps projected to input resolution, Hungarian grouping, sub-pixel adjustment,
            refinement; module docstring, "mode") or ``"fast"`` (the earlier, cheaper path: stretch to multiples
            of 32, no flip, greedy grouping at 1/2 resolution). ``bench/bench_p14_official_modes.py`` measures both.
        input_size: short side of the network input in pixels (512 for ``pose_higher_hrnet_w32_512``; official
            mode rounds it up to a multiple of 64).
        max_persons: persons kept per frame (items of the ``action`` scene).
        detection_threshold: heatmap value a peak must exceed to be a joint candidate (0.1, HigherHRNet's default).
        tag_threshold: largest tag distance for a candidate to join a person (1.0, HigherHRNet's default).
        nms_kernel: max-pool window of the peak non-maximum suppression (5 at 512 input).
        max_candidates: peaks per joint considered (30, HigherHRNet's ``MAX_NUM_PEOPLE``).
        refine: fill in each kept person's missing joints from the heatmap and tags.
        flip_test: official mode — average with the horizontally flipped input (official ``TEST.FLIP_TEST``).
        adjust: official mode — quarter-pixel adjustment towards the higher neighbour (``TEST.ADJUST``).
        max_aspect_ratio: frames whose long side exceeds this many short sides are refused (a ValueError naming
            the frame size): the official resize would make a huge input (a 1×20 strip becomes 512×10240).
        batch_size: frames per forward pass (memory bound; does not change the output).
    """

    mode: str = "official"
    input_size: int = 512
    max_persons: int = DEFAULT_SCENE_ITEMS["action"]
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    max_candidates: int = 30
    refine: bool = True
    flip_test: bool = True
    adjust: bool = True
    max_aspect_ratio: float = 8.0
    batch_size: int = 8

    def __post_init__(self):
        if self.mode not in ("official", "fast"):
            raise ValueError(f"PoseDecodingConfig.mode must be 'official' or 'fast', got {self.mode!r}")
        if not self.max_aspect_ratio >= 1:
            raise ValueError(f"PoseDecodingConfig.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio!r}")
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
        ``.safetensors`` file) with ``weights_only=True`` and ``strict=True``.

        Without ``config`` the width ``W`` is read off the checkpoint (``final_layers.0.weight`` is
        ``[J + tags, W, 1, 1]``), so a W48 checkpoint builds HRNet-W48; with an explicit ``config`` of another
        width the error says which width the checkpoint has."""
        state_dict = load_higherhrnet_state_dict(path)
        if isinstance(config, dict):  # a recipe's JSON/YAML sizes
            config = HigherHRNetConfig(**{**config, **config_overrides})
        head = state_dict.get("final_layers.0.weight")
        found = int(head.shape[1]) if head is not None and head.dim() == 4 else None
        if config is None:
            if found is not None and "width" not in config_overrides:
                config_overrides = {**config_overrides, "width": found}
            config = HigherHRNetConfig(**config_overrides)
        elif found is not None and found != config.width:
            raise ValueError(
                f"checkpoint {str(path)!r} is HigherHRNet-W{found} (final_layers.0 reads {found} channels) but the "
                f"config asks for W{config.width}: pass HigherHRNetConfig(width={found}) or config=None"
            )
        with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
            model = cls(config)
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            raise ValueError(
                f"checkpoint {str(path)!r} does not match the HigherHRNet layout of {config}: {_first_lines(err)}"
            ) from err
        return model.eval()


def _first_lines(err: BaseException, n: int = 6, width: int = 400) -> str:
    lines = [line if len(line) <= width else line[:width] + " ..." for line in str(err).splitlines()]
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
        keypoints: ``[P, J, 3]`` — ``x, y`` in pixels of the heatmap grid (fast mode: pixel indices of the 1/2
            map; official mode: continuous input pixels, the official sub-pixel convention), and the joint score.
        scores: ``[P]`` person scores (mean joint score; official mode: before refinement, as the official code).
        tags: ``[P]`` mean associative-embedding tag of each person's detected joints (official mode: of the
            first tag copy).
        frame_keypoints: official mode only — ``[P, J, 3]`` keypoints in pixels of the original frame (the
            official ``get_final_preds`` output), ``None`` in fast mode.
        frame_size / input_size: official mode only — ``(height, width)`` of the frame and of the padded input.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    tags: torch.Tensor
    frame_keypoints: torch.Tensor | None = None
    frame_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None


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


# ------------------------------------------------------------------------------------- official test pipeline
# The official HigherHRNet test pipeline (tools/valid.py of HRNet/HigherHRNet-Human-Pose-Estimation with
# experiments/coco/higher_hrnet/w32_512_adam_lr1e-3.yaml), re-implemented: see the module docstring, "mode".
def coco_flip_index(num_joints: int = NUM_KEYPOINTS) -> list[int]:
    """Joint permutation of a horizontal flip (left_* <-> right_*), from the COCO keypoint names."""
    if num_joints != len(COCO_KEYPOINTS):
        return list(range(num_joints))
    swap = {n: n.replace("left_", "@").replace("right_", "left_").replace("@", "right_") for n in COCO_KEYPOINTS}
    return [COCO_KEYPOINTS.index(swap[n]) for n in COCO_KEYPOINTS]


#: the official grouping visits the joints in this order (nose, eyes, ears, shoulders, hips, elbows, wrists, ...)
OFFICIAL_JOINT_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


@dataclass(frozen=True)
class OfficialGeometry:
    """Keep-aspect-ratio input geometry of one frame size: the short side becomes ``ceil64(input_size)``, the long
    side the aspect-preserving length rounded *up* to a multiple of 64 (padding, the frame centred), one uniform
    scale. ``forward`` maps frame pixels to input pixels, ``inverse`` input back to frame pixels (2×3 affines)."""

    input_width: int
    input_height: int
    forward: np.ndarray
    inverse: np.ndarray

    @classmethod
    def for_frame(cls, height: int, width: int, input_size: int) -> OfficialGeometry:
        center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)])
        short = int((input_size + 63) // 64 * 64)
        if width < height:
            out_w, out_h = short, int((short / width * height + 63) // 64 * 64)
            scale = np.array([width / 200.0, out_h / out_w * width / 200.0])
        else:
            out_w, out_h = int((short / height * width + 63) // 64 * 64), short
            scale = np.array([out_w / out_h * height / 200.0, height / 200.0])
        # three point pairs (centre, centre + half the source width up, and its 90° turn) as float32, solved in
        # float64: the same affine the official get_affine_transform hands to cv2
        src_w = scale[0] * 200.0
        src = np.zeros((3, 2), np.float32)
        dst = np.zeros((3, 2), np.float32)
        src[0] = center
        src[1] = center + np.array([0.0, src_w * -0.5])
        dst[0] = [out_w * 0.5, out_h * 0.5]
        dst[1] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0, out_w * -0.5], np.float32)
        for pts in (src, dst):
            d = pts[0] - pts[1]
            pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
        return cls(out_w, out_h, _solve_affine(src, dst), _solve_affine(dst, src))


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    a = np.zeros((6, 6))
    b = np.zeros(6)
    for i, ((x, y), (u, v)) in enumerate(zip(src.astype(np.float64), dst.astype(np.float64))):
        a[2 * i, :3] = a[2 * i + 1, 3:] = (x, y, 1.0)
        b[2 * i], b[2 * i + 1] = u, v
    return np.linalg.solve(a, b).reshape(2, 3)


def warp_affine_bilinear(image: np.ndarray, forward: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear affine warp of a uint8 ``[H, W, C]`` image into ``[height, width, C]`` with a black constant border,
    in the fixed-point arithmetic of OpenCV's classic ``warpAffine`` (source coordinates in 1/32 pixel, 15-bit
    weights, rounded): the official pipeline's resize-and-pad, without OpenCV."""
    m = forward.astype(np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[1, 1] * det, m[0, 0] * det
    a12, a21 = -m[0, 1] * det, -m[1, 0] * det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    ab_scale, round_delta = 1 << 10, (1 << 10) // 32 // 2
    adelta, bdelta = np.rint(a11 * xs * ab_scale).astype(np.int64), np.rint(a21 * xs * ab_scale).astype(np.int64)
    x0 = np.rint((a12 * ys + b1) * ab_scale).astype(np.int64) + round_delta
    y0 = np.rint((a22 * ys + b2) * ab_scale).astype(np.int64) + round_delta
    big_x = (x0[:, None] + adelta[None, :]) >> 5  # [height, width], 1/32 pixel
    big_y = (y0[:, None] + bdelta[None, :]) >> 5
    sx, sy, fx, fy = big_x >> 5, big_y >> 5, big_x & 31, big_y & 31
    h, w = image.shape[:2]
    src = image.astype(np.int64)
    acc = np.zeros((height, width, image.shape[2]), np.int64)
    for dy, wy in ((0, 32 - fy), (1, fy)):
        for dx, wx in ((0, 32 - fx), (1, fx)):
            px, py = sx + dx, sy + dy
            inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
            value = src[py.clip(0, h - 1), px.clip(0, w - 1)] * inside[..., None]
            acc += value * (wy * wx * 32)[..., None]
    return ((acc + (1 << 14)) >> 15).clip(0, 255).astype(np.uint8)


def munkres_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of a (possibly rectangular) matrix by the textbook Munkres algorithm (stars, primes,
    covers; the matrix padded square with zeros), with the textbook's scan order so that ties are broken like the
    ``munkres`` package the official grouping calls. Returns ``(row, col)`` pairs, one per row, row-major."""
    rows, cols = cost.shape
    n = max(rows, cols)
    c = np.zeros((n, n))
    c[:rows, :cols] = cost
    marked = np.zeros((n, n), np.int8)  # 1 star, 2 prime
    row_cov, col_cov = np.zeros(n, bool), np.zeros(n, bool)
    c -= c.min(axis=1, keepdims=True)  # step 1
    for i in range(n):  # step 2
        for j in range(n):
            if c[i, j] == 0 and not col_cov[j] and not row_cov[i]:
                marked[i, j] = 1
                col_cov[j] = row_cov[i] = True
                break
    row_cov[:] = col_cov[:] = False
    while True:
        col_cov |= (marked == 1).any(axis=0)  # step 3
        if col_cov.sum() >= n:
            break
        row, col = 0, 0
        while True:  # step 4 (and 6)
            found = _find_uncovered_zero(c, row_cov, col_cov, row, col)
            if found is None:  # step 6, then step 4 again from the first row and column
                free = ~row_cov[:, None] & ~col_cov[None, :]
                smallest = c[free].min()
                c[row_cov] += smallest
                c[:, ~col_cov] -= smallest
                row, col = 0, 0
                continue
            row, col = found
            marked[row, col] = 2
            stars = np.flatnonzero(marked[row] == 1)
            if stars.size:
                col = int(stars[0])
                row_cov[row], col_cov[col] = True, False
                continue
            path = [(row, col)]  # step 5
            while True:
                star_rows = np.flatnonzero(marked[:, path[-1][1]] == 1)
                if not star_rows.size:
                    break
                r = int(star_rows[0])
                path.append((r, path[-1][1]))
                path.append((r, int(np.flatnonzero(marked[r] == 2)[0])))
            for r, k in path:
                marked[r, k] = 0 if marked[r, k] == 1 else 1
            row_cov[:] = col_cov[:] = False
            marked[marked == 2] = 0
            break
    return [(i, j) for i in range(rows) for j in range(cols) if marked[i, j] == 1]


def _find_uncovered_zero(c, row_cov, col_cov, i0: int, j0: int) -> tuple[int, int] | None:
    # the textbook scan: rows from i0 (wrapping), in the first row that has one the *last* uncovered zero when the
    # columns are scanned from j0 (wrapping)
    n = c.shape[0]
    zeros = (c == 0) & ~row_cov[:, None] & ~col_cov[None, :]
    row_order = np.r_[i0:n, 0:i0]
    rows = row_order[zeros.any(axis=1)[row_order]]
    if not rows.size:
        return None
    col_order = np.r_[j0:n, 0:j0]
    return int(rows[0]), int(col_order[zeros[rows[0], col_order]][-1])


def group_by_tag_official(
    tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, config: PoseDecodingConfig
) -> np.ndarray:
    """The official associative-embedding grouping of one frame (``match_by_tag``): joints in
    :data:`OFFICIAL_JOINT_ORDER`; candidates over ``detection_threshold`` are assigned to the persons found so far by
    the Hungarian method on ``round(‖tag − person tag‖) · 100 − score`` (the person tag: the mean of its joints'
    tags, L2 over flip copies), joining when the distance is under ``tag_threshold``, else starting a person (keyed,
    like the official code, by its first tag value). ``tag_k [J, K, T]``, ``loc_k [J, K, 2]`` (x, y), ``val_k
    [J, K]`` → ``[P, J, 3 + T]`` rows ``(x, y, score, tags...)``."""
    num_joints = val_k.shape[0]
    default = np.zeros((num_joints, 3 + tag_k.shape[2]))
    joint_dict: dict[float, np.ndarray] = {}
    tag_dict: dict[float, list[np.ndarray]] = {}
    order = OFFICIAL_JOINT_ORDER if num_joints == len(OFFICIAL_JOINT_ORDER) else tuple(range(num_joints))
    for i, idx in enumerate(order):
        tags = tag_k[idx]
        joints = np.concatenate((loc_k[idx], val_k[idx, :, None], tags), 1)
        keep = joints[:, 2] > config.detection_threshold
        tags, joints = tags[keep], joints[keep]
        if joints.shape[0] == 0:
            continue
        if i == 0 or not joint_dict:
            for tag, joint in zip(tags, joints):
                key = float(tag[0])
                joint_dict.setdefault(key, np.copy(default))[idx] = joint
                tag_dict[key] = [tag]
            continue
        keys = list(joint_dict)[: config.max_candidates]
        person_tags = np.array([np.mean(tag_dict[k], axis=0) for k in keys])
        distance = np.linalg.norm(joints[:, None, 3:] - person_tags[None, :, :], ord=2, axis=2)
        cost = np.round(distance) * 100 - joints[:, 2:3]
        added, grouped = distance.shape
        if added > grouped:
            cost = np.concatenate((cost, np.zeros((added, added - grouped)) + 1e10), axis=1)
        for row, col in munkres_assignment(cost):
            if row < added and col < grouped and distance[row][col] < config.tag_threshold:
                joint_dict[keys[col]][idx] = joints[row]
                tag_dict[keys[col]].append(tags[row])
            else:
                key = float(tags[row][0])
                joint_dict.setdefault(key, np.copy(default))[idx] = joints[row]
                tag_dict[key] = [tags[row]]
    if not joint_dict:
        return np.zeros((0, num_joints, 3 + tag_k.shape[2]), np.float32)
    return np.array(list(joint_dict.values())).astype(np.float32)


def _quarter_offset(heatmap: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """±0.25 pixel towards the higher neighbour, per axis (the official sub-pixel adjustment)."""
    h, w = heatmap.shape
    dx = 0.25 if heatmap[y, min(x + 1, w - 1)] > heatmap[y, max(x - 1, 0)] else -0.25
    dy = 0.25 if heatmap[min(y + 1, h - 1), x] > heatmap[max(0, y - 1), x] else -0.25
    return dx, dy


def adjust_official(persons: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Sub-pixel adjustment of every detected joint: ``+0.5`` (pixel centre) ``± 0.25`` towards the higher
    neighbour of the heatmap (``heatmaps [J, H, W]``)."""
    for person in persons:
        for j, joint in enumerate(person):
            if joint[2] > 0:
                x, y = int(joint[0]), int(joint[1])
                dx, dy = _quarter_offset(heatmaps[j], x, y)
                person[j, 0:2] = (joint[0] + dx + 0.5, joint[1] + dy + 0.5)
    return persons


def refine_official(heatmaps: np.ndarray, tags: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Official refinement of one person ``[J, 3 + T]``: the person tag is the mean tag at its detected joints; every
    undetected joint is placed at the arg-max of ``heatmap − round(‖tag − person tag‖)`` (+0.5, ±0.25) when the
    heatmap is positive there. ``heatmaps [J, H, W]``, ``tags [J, H, W, T]``."""
    detected = person[:, 2] > 0
    xy = person[detected, :2].astype(np.int32)
    joints = np.flatnonzero(detected)
    person_tag = np.mean([tags[j, y, x] for j, (x, y) in zip(joints, xy)], axis=0)
    missing = np.flatnonzero(~detected)
    if not missing.size:
        return person
    # all missing joints at once, in torch (the same IEEE float32 operations, first arg-max like numpy)
    heat = torch.from_numpy(heatmaps[missing])
    distance = ((torch.from_numpy(tags[missing]) - torch.from_numpy(person_tag)) ** 2).sum(dim=3).sqrt()
    best = (heat - torch.round(distance)).flatten(1).argmax(dim=1).numpy()
    w = heatmaps.shape[2]
    for j, index in zip(missing, best):
        y, x = divmod(int(index), w)
        value = heatmaps[j, y, x]
        if value > 0:
            dx, dy = _quarter_offset(heatmaps[j], x, y)
            person[j, 0:3] = (x + 0.5 + dx, y + 0.5 + dy, value)
    return person


def official_network_maps(
    outputs: Sequence[torch.Tensor], num_joints: int, flip_outputs: Sequence[torch.Tensor] | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps and tags at input resolution ``size`` (``h, w``), as the official test: every output brought to the
    highest output resolution and its heatmaps averaged, the tags of the first output; with flip test the same for
    the flipped input, flipped back and left/right joints swapped; all projected (bilinear) to the input size; the
    heatmaps of both averaged. Returns ``(heatmaps [B, J, h, w], tags [B, J or 1, h, w, 1 or 2])``."""
    flip_index = coco_flip_index(num_joints)

    def stage(outs: Sequence[torch.Tensor], flipped: bool) -> tuple[torch.Tensor, torch.Tensor]:
        top = outs[-1].shape[-2:]
        heat, tag = 0, None
        for i, out in enumerate(outs):
            if len(outs) > 1 and i != len(outs) - 1:
                out = F.interpolate(out, size=top, mode="bilinear", align_corners=False)
            if flipped:
                out = torch.flip(out, [3])
            heat = heat + (out[:, :num_joints][:, flip_index] if flipped else out[:, :num_joints])
            if i == 0:
                tag = out[:, num_joints:]
                if flipped and tag.shape[1] == num_joints:
                    tag = tag[:, flip_index]
        heat = heat / len(outs)
        project = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        return project(heat), project(tag)

    heatmaps, tags = stage(outputs, False)
    tag_list = [tags]
    if flip_outputs is not None:
        flip_heat, flip_tags = stage(flip_outputs, True)
        heatmaps = (heatmaps + flip_heat) / 2.0
        tag_list.append(flip_tags)
    return heatmaps, torch.stack(tag_list, dim=4)


def decode_poses_official(
    heatmaps: torch.Tensor, tags: torch.Tensor, config: PoseDecodingConfig, max_persons: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The official parser (``HeatmapParser.parse``) on one frame's input-resolution ``heatmaps [J, h, w]`` and
    ``tags [J or 1, h, w, T]``: max-pool NMS, the ``max_candidates`` best peaks per joint, Hungarian tag grouping,
    sub-pixel adjustment (``adjust``), refinement (``refine``). Returns ``(persons [P, J, 3 + T]`` in input pixels,
    ``scores [P])``, best first (the official score: the mean joint score before refinement; the official code does
    not sort — the order among equal scores is the official order). Only the ``max_persons`` best are refined."""
    num_joints, h, w = heatmaps.shape
    pad = config.nms_kernel // 2
    pooled = F.max_pool2d(heatmaps[None], config.nms_kernel, 1, pad)[0]
    peaks = heatmaps * torch.eq(pooled, heatmaps).float()
    val_k, ind = peaks.view(num_joints, -1).topk(config.max_candidates, dim=1)
    flat_tags = tags.reshape(tags.shape[0], h * w, -1)
    if flat_tags.shape[0] == 1:
        flat_tags = flat_tags.expand(num_joints, -1, -1)
    tag_k = torch.stack([torch.gather(flat_tags[:, :, i], 1, ind) for i in range(flat_tags.shape[2])], dim=2)
    loc_k = torch.stack((ind % w, torch.div(ind, w, rounding_mode="floor")), dim=2)
    persons = group_by_tag_official(tag_k.numpy(), loc_k.numpy(), val_k.numpy(), config)
    heat_np = heatmaps.numpy()
    if config.adjust:
        persons = adjust_official(persons, heat_np)
    scores = np.array([p[:, 2].mean() for p in persons], np.float32)
    order = np.argsort(-scores, kind="stable")[: max_persons or len(persons)]
    persons, scores = persons[order], scores[order]
    if config.refine and len(persons):
        tag_np = tags.numpy()
        if tag_np.shape[0] == 1:
            tag_np = np.repeat(tag_np, num_joints, axis=0)
        persons = np.stack([refine_official(heat_np, tag_np, p) for p in persons])
    return persons, scores


def encode_official_persons(
    poses: Sequence[PersonPoses], features: torch.Tensor, max_persons: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_a of the official mode: per person ``[17 × (x, y, score), 17 × C]`` with ``x, y`` the frame-pixel keypoints
    normalised to ``[0, 1]`` of the frame (clamped: an undetected, unrefined joint maps outside), and the deconv
    features ``[B, C, h, w]`` (1/2 of the padded input) bilinearly sampled at the input-pixel keypoints."""
    b, c = features.shape[:2]
    num_joints = poses[0].keypoints.shape[1] if poses and poses[0].keypoints.dim() == 3 else NUM_KEYPOINTS
    out = torch.zeros(b, max_persons, num_joints * (3 + c))
    mask = torch.zeros(b, max_persons, dtype=torch.bool)
    for t, pose in enumerate(poses):
        n = min(max_persons, pose.keypoints.shape[0])
        if n == 0:
            continue
        frame_h, frame_w = pose.frame_size
        input_h, input_w = pose.input_size
        kp = pose.frame_keypoints[:n].float()
        xy = (kp[..., :2] / torch.tensor([frame_w, frame_h], dtype=torch.float32)).clamp(0, 1)
        grid = pose.keypoints[:n, :, :2].float() / torch.tensor([input_w, input_h], dtype=torch.float32)
        grid = (grid * 2 - 1).reshape(1, 1, n * num_joints, 2).to(features)
        sampled = F.grid_sample(features[t : t + 1].float(), grid, mode="bilinear", align_corners=False)
        sampled = sampled.reshape(c, n, num_joints).permute(1, 2, 0).cpu()
        out[t, :n] = torch.cat((torch.cat((xy, kp[..., 2:3]), -1).reshape(n, -1), sampled.reshape(n, -1)), -1)
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
        one module per stage with one block per branch, one deconv block, 64-pixel input, 3×3 NMS, and the
        ``"fast"`` mode (CI speed, and the features the tiny pipelines have always cached; pass
        ``mode="official"`` for the official pipeline). ``overrides`` may set any :class:`HigherHRNetConfig` or
        :class:`PoseDecodingConfig` field."""
        config_names = {f.name for f in fields(HigherHRNetConfig)}
        config = dict(width=8, stem_channels=8, stem_blocks=1, stage_modules=(1, 1, 1), stage_blocks=1, deconv_blocks=1)
        config.update({k: v for k, v in overrides.items() if k in config_names})
        kwargs = dict(input_size=64, nms_kernel=3, mode="fast")
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
    def check_frame_size(self, height: int, width: int) -> None:
        """Official mode: refuse frames HigherHRNet cannot see — a side under the network stride (32 px) or an
        aspect ratio over ``max_aspect_ratio``; the error names the frame size."""
        if min(height, width) < 32:
            raise ValueError(
                f"frames of {height}x{width} pixels are smaller than HigherHRNet's stride (32 px on each side); "
                "upsample or skip them"
            )
        if max(height, width) > self.decoding.max_aspect_ratio * min(height, width):
            raise ValueError(
                f"frames of {height}x{width} pixels have an aspect ratio over max_aspect_ratio="
                f"{self.decoding.max_aspect_ratio} (PoseDecodingConfig); crop them or raise the limit"
            )

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)``. Fast mode: short side ``input_size``, both sides rounded to multiples of 32
        (a slight stretch). Official mode: short side ``ceil64(input_size)``, the long side keeping the aspect
        ratio, rounded up to a multiple of 64 (padding)."""
        if self.decoding.mode == "official":
            g = OfficialGeometry.for_frame(height, width, self.decoding.input_size)
            return g.input_height, g.input_width
        scale = self.decoding.input_size / min(height, width)
        return (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` → normalised float ``[T, 3, h, w]`` on the model's device (official mode: the
        keep-aspect affine warp with black padding, in OpenCV's fixed-point bilinear arithmetic, on the CPU)."""
        frames = self.check_frames(frames)
        t, height, width = frames.shape[:3]
        if self.decoding.mode == "official":
            self.check_frame_size(height, width)
            g = OfficialGeometry.for_frame(height, width, self.decoding.input_size)
            stacked = frames.cpu().permute(1, 2, 0, 3).reshape(height, width, t * 3).numpy()
            warped = warp_affine_bilinear(stacked, g.forward, g.input_width, g.input_height)
            x = torch.from_numpy(warped).view(g.input_height, g.input_width, t, 3).permute(2, 3, 0, 1)
            return self._normalise(x.to(self.device).float().div_(255.0))
        x = frames.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        size = self.input_size_for(height, width)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self._normalise(x)

    def _run(self, chunk: torch.Tensor) -> tuple[list[PersonPoses], torch.Tensor]:
        if self.decoding.mode == "official":
            return self._run_official(chunk)
        out = self.model(self.preprocess(chunk))
        heatmaps, tags = aggregate_outputs(out.outputs, self.model.config.num_joints)
        return decode_poses(heatmaps, tags, self.decoding), out.features

    def _run_official(self, chunk: torch.Tensor) -> tuple[list[PersonPoses], torch.Tensor]:
        """Official test pipeline on a chunk of same-size frames: one forward over the frames and their mirror
        images, then per frame the input-resolution maps, the official parser, and the inverse affine."""
        t, height, width = chunk.shape[:3]
        g = OfficialGeometry.for_frame(height, width, self.decoding.input_size)
        x = self.preprocess(chunk)
        num_joints = self.model.config.num_joints
        out = self.model(torch.cat((x, torch.flip(x, [3]))) if self.decoding.flip_test else x)
        poses = []
        for i in range(t):
            outputs = [o[i : i + 1].float().cpu() for o in out.outputs]
            flipped = [o[t + i : t + i + 1].float().cpu() for o in out.outputs] if self.decoding.flip_test else None
            heatmaps, tags = official_network_maps(outputs, num_joints, flipped, (g.input_height, g.input_width))
            persons, scores = decode_poses_official(heatmaps[0], tags[0], self.decoding, self.max_items)
            keypoints = torch.from_numpy(np.ascontiguousarray(persons[:, :, :3])).float()
            frame_kp = keypoints.clone()
            if len(persons):
                xy1 = np.concatenate((persons[:, :, :2].astype(np.float64), np.ones(persons.shape[:2] + (1,))), -1)
                frame_kp[..., :2] = torch.from_numpy(xy1 @ g.inverse.T).float()
            tag0 = torch.from_numpy(persons[:, :, 3].copy()) if len(persons) else torch.zeros(0, num_joints)
            detected = keypoints[..., 2] > 0
            person_tags = (tag0 * detected).sum(-1) / detected.sum(-1).clamp(min=1)
            poses.append(
                PersonPoses(
                    keypoints=keypoints, scores=torch.from_numpy(scores).float(), tags=person_tags,
                    frame_keypoints=frame_kp, frame_size=(height, width),
                    input_size=(g.input_height, g.input_width),
                )
            )  # fmt: skip
        features = out.features[:t] if self.decoding.flip_test else out.features
        return poses, features

    def _encode(self, poses: list[PersonPoses], feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.decoding.mode == "official":
            return encode_official_persons(poses, feats, self.max_items)
        return encode_persons(poses, feats, self.max_items)

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> tuple[list[PersonPoses], torch.Tensor]:
        """Persons per frame (best first; fast mode: at most ``max_persons`` on the 1/2-resolution grid; official
        mode: the ``max_persons`` best by official score, with ``frame_keypoints`` in frame pixels) and the deconv
        features ``[T, W, h, w]``."""
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
            x_a, mask = self._encode(*self._run(chunk))
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
            if pose.frame_keypoints is not None:  # official: frame pixels
                fh, fw = pose.frame_size
                normalised = [
                    [(min(max(float(x) / fw, 0.0), 1.0), min(max(float(y) / fh, 0.0), 1.0), float(s)) for x, y, s in kp]
                    for kp in pose.frame_keypoints
                ]
            else:
                normalised = [[((float(x) + 0.5) / w, (float(y) + 0.5) / h, float(s)) for x, y, s in kp]
                              for kp in pose.keypoints]  # fmt: skip
            for kp, score in zip(normalised, pose.scores):
                names = COCO_KEYPOINTS if len(kp) == len(COCO_KEYPOINTS) else [str(i) for i in range(len(kp))]
                persons.append({"score": float(score), "keypoints": dict(zip(names, kp))})
            result.append(persons)
        return result


__all__ = [
    "COCO_KEYPOINTS",
    "ActionExtractor",
    "HigherHRNet",
    "HigherHRNetConfig",
    "HigherHRNetOutput",
    "OFFICIAL_JOINT_ORDER",
    "OfficialGeometry",
    "PersonPoses",
    "PoseDecodingConfig",
    "adjust_official",
    "aggregate_outputs",
    "coco_flip_index",
    "decode_poses",
    "decode_poses_official",
    "encode_official_persons",
    "encode_persons",
    "find_peaks",
    "group_by_tag_official",
    "group_joints",
    "load_higherhrnet_state_dict",
    "munkres_assignment",
    "official_network_maps",
    "refine_missing_joints",
    "refine_official",
    "warp_affine_bilinear",
]
