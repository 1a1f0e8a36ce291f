"""Object-relation scene extractor (paper §3.1, "Object Relation Modeling ... by RelTR"): x_o per frame.

RelTR (Cong, Yang & Rosenhahn, "RelTR: Relation Transformer for Scene Graph Generation", TPAMI 2023) is a
DETR-style one-stage scene-graph generator. It is implemented here in our own PyTorch code, with a ``state_dict``
whose names and shapes are exactly those of the official Visual Genome checkpoint ``checkpoint0149.pth``
(``shared/checkpoint-layouts/reltr_vg.json``; 63,901,928 parameters), so that checkpoint loads with ``strict=True``:

* ``backbone.0.body`` — ResNet-50 with :class:`FrozenBatchNorm2d` (torchvision naming: ``conv1``, ``bn1``,
  ``layer1..4``, bottleneck blocks with the stride on ``conv2``); ``backbone.1`` — the parameter-free sine positional
  encoding (normalised, 2π scale, ``hidden_dim / 2`` features per axis, as in DETR);
* ``input_proj`` — 1×1 conv 2048 → ``hidden_dim``;
* ``transformer.encoder`` — 6 post-norm DETR encoder layers;
* ``transformer.decoder`` — 6 RelTR triplet decoder layers. Each layer updates three branches: the *entity*
  branch (self-attention, cross-attention to the image, FFN; 100 entity queries) and the coupled *subject* /
  *object* branches of the 200 triplet queries (coupled self-attention over all 2×200 subject and object queries
  with subject/object encodings ``so_embed``; then, per branch, decoupled visual attention to the image,
  decoupled entity attention to the updated entity queries, FFN). There is no final decoder norm.
* heads — entity / subject / object classifiers over the 150 Visual Genome classes (152 logits: index 0 ``N/A``,
  150 classes, index 151 no-object) and 3-layer box MLPs (normalised ``cx, cy, w, h``); the predicate classifier
  (52 logits: index 0 ``__background__``, 50 predicates, index 51 no-relation) reads the subject and object
  embeddings and a 128-d encoding of the last decoder layer's subject/object attention maps (``so_mask_conv``,
  ``so_mask_fc``).

Loading: :meth:`RelTR.from_official_checkpoint` / :meth:`RelationExtractor.from_checkpoint` read the official
container with ``torch.load(weights_only=True)`` (RelTR's training ``args`` Namespace is the one extra type admitted)
or a ``.safetensors`` file, and load with ``strict=True``; :meth:`RelTR.save_checkpoint` writes both formats. The
outputs agree with the official implementation (github yrcong/RelTR) on shared weights — see
``tests/test_processing_relation.py::test_matches_outputs_of_official_reltr_code``.

Choices where neither the paper nor RelTR fixes the behaviour (each a constructor field of
:class:`RelationExtractor`, part of :meth:`RelationExtractor.config_dict`):

* **x_o** (paper: "extract the visual feature context and entity representations"): for each frame the ``top_k``
  triplets ranked by ``subject score × predicate score × object score``, where each score is the highest softmax
  probability excluding the no-object / no-relation column (as RelTR's own ``inference.py`` does). Each triplet is
  ``[subject decoder embedding (hidden), object decoder embedding (hidden), subject class distribution (152),
  predicate distribution (52), object class distribution (152)]`` = 868 dims for hidden 256
  (``modeling_icm.scene_contract.DEFAULT_SCENE_DIMS["object"]``).
* **mode** (``mode="official"``, the default): the official pipeline of RelTR's ``inference.py`` —

  - *resize*: PIL bilinear on the 8-bit frame (``torchvision.transforms.Resize`` on a PIL image, which is what
    the official transforms do), then ``/ 255`` and ImageNet mean/std;
  - *size rule*: short side ``min_size`` (800), long side ``int(min_size · long / short)`` — truncated, as
    torchvision and RelTR's ``datasets/transforms.py`` do (480×640 → 800×1066);
  - *max-size cap* (a choice; the field ``max_size``): RelTR's evaluation transform (``RandomResize([800],
    max_size=1333)``, what the published numbers were measured with, and the scale range of training) caps the long
    side at 1333 by lowering the short side to ``int(round(1333 · short / long))``; ``inference.py`` has no cap.
    We default to the cap (``max_size=1333``): it matches training and evaluation and bounds the cost of wide
    frames (1280×720 → 750×1333 instead of 800×1422). ``max_size=None`` is ``inference.py``'s rule. As in RelTR's
    code, the capped long side is still truncated from the lowered short side and can overshoot the cap by a pixel
    (272×640 → 567×1334);
  - *mask*: a triplet is real when each of ``p_sub``, ``p_pred``, ``p_obj`` exceeds ``probability_threshold``
    (0.3, ``inference.py``); the ``top_k`` real triplets ranked by ``p_sub · p_pred · p_obj`` come first (the
    official selection), the remaining rows are zeros, masked.

  Remaining differences from the official code: frames of one batch that differ in size are zero-padded to a
  common size with a padding mask (DETR's nested tensor; ``inference.py`` runs one image at a time — the padded
  positions are ignored by the attention, outputs agree to ~5e-6, see the tests); the network runs in our code
  (agreement to 4.5e-6 on every head); frames arrive as decoded RGB arrays, not files opened by PIL (no EXIF
  rotation, no palette conversion).

  ``mode="fast"`` is the earlier path, kept because it runs on the model's device in one batched call: float
  bilinear with antialiasing (within one grey level of PIL on ~15 % of pixels), the size *rounded*
  (480×640 → 800×1067), and the mask ``p_sub · p_pred · p_obj > score_threshold`` (``0.3 ** 3``) over the
  ``top_k`` triplets by that product. ``bench/bench_p14_official_modes.py`` measures both.

  With *random* weights (tests, CI, the demo) the class distributions are near uniform: the best triplet of the
  full-size model scores about 2e-5, far below 0.3 per probability (or 0.027 for the product), so the object scene
  is always masked — a property of random weights, not a finding about object relations.
* Frames of different sizes are padded into one batch with a padding mask (DETR's nested tensor); padded pixels are
  ignored by the attention.
* Bad input: any frame size is accepted (the resize brings the short side to ``min_size`` and the cap bounds the long
  side: a 1×20 strip becomes 67×1333 at the defaults, the ResNet's stride-32 map is then 3×42); grayscale frames
  (``[T, H, W]`` or one channel) raise a ValueError asking for ``[T, H, W, 3]``; an empty batch raises.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .base import SceneExtractor

# Visual Genome 150 (the split of Xu et al., "Scene Graph Generation by Iterative Message Passing", CVPR 2017), in
# the index order of RelTR's classifier heads. Index 0 is RelTR's unused "N/A" slot; the no-object logit is last.
VG150_OBJECT_CLASSES: tuple[str, ...] = (
    "N/A", "airplane", "animal", "arm", "bag", "banana", "basket", "beach", "bear", "bed", "bench", "bike",
    "bird", "board", "boat", "book", "boot", "bottle", "bowl", "box", "boy", "branch", "building", "bus",
    "cabinet", "cap", "car", "cat", "chair", "child", "clock", "coat", "counter", "cow", "cup", "curtain",
    "desk", "dog", "door", "drawer", "ear", "elephant", "engine", "eye", "face", "fence", "finger", "flag",
    "flower", "food", "fork", "fruit", "giraffe", "girl", "glass", "glove", "guy", "hair", "hand", "handle",
    "hat", "head", "helmet", "hill", "horse", "house", "jacket", "jean", "kid", "kite", "lady", "lamp",
    "laptop", "leaf", "leg", "letter", "light", "logo", "man", "men", "motorcycle", "mountain", "mouth", "neck",
    "nose", "number", "orange", "pant", "paper", "paw", "people", "person", "phone", "pillow", "pizza", "plane",
    "plant", "plate", "player", "pole", "post", "pot", "racket", "railing", "rock", "roof", "room", "screen",
    "seat", "sheep", "shelf", "shirt", "shoe", "short", "sidewalk", "sign", "sink", "skateboard", "ski", "skier",
    "sneaker", "snow", "sock", "stand", "street", "surfboard", "table", "tail", "tie", "tile", "tire", "toilet",
    "towel", "tower", "track", "train", "tree", "truck", "trunk", "umbrella", "vase", "vegetable", "vehicle",
    "wave", "wheel", "window", "windshield", "wing", "wire", "woman", "zebra",
)  # fmt: skip
#: Visual Genome 50 predicates; index 0 is the background relation slot; the no-relation logit is last.
VG150_PREDICATE_CLASSES: tuple[str, ...] = (
    "__background__", "above", "across", "against", "along", "and", "at", "attached to", "behind",
    "belonging to", "between", "carrying", "covered in", "covering", "eating", "flying in", "for", "from",
    "growing on", "hanging from", "has", "holding", "in", "in front of", "laying on", "looking at", "lying on",
    "made of", "mounted on", "near", "of", "on", "on back of", "over", "painted on", "parked on", "part of",
    "playing", "riding", "says", "sitting on", "standing on", "to", "under", "using", "walking in", "walking on",
    "watching", "wearing", "wears", "with",
)  # fmt: skip
NO_OBJECT = "no-object"
NO_RELATION = "no-relation"
#: Said wherever the object scene is reported (model cards, the demo report): with random weights it is never seen.
RANDOM_WEIGHTS_OBJECT_NOTE = (
    "With random RelTR weights (the tiny / test scene extractors) the best triplet score is about 2e-5, far below "
    "RelTR's threshold (0.3 per probability, 0.027 for their product): the object scene is always masked, so a zero "
    "router weight for `object` is a property of the random weights, not a finding. Object relations need the real "
    "RelTR checkpoint."
)
assert len(VG150_OBJECT_CLASSES) == 151 and len(VG150_PREDICATE_CLASSES) == 51

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The subject/object attention-map encoder of RelTR has fixed sizes (independent of hidden_dim).
_SO_MASK_SIZE = 28
_SO_MASK_FLAT = 32 * 8 * 8
_SO_MASK_DIM = 128


# ----------------------------------------------------------------------------------------------------------- config
@dataclass
class RelTRConfig:
    """Hyper-parameters of :class:`RelTR`. The defaults are RelTR's Visual Genome model (``checkpoint0149.pth``).

    Args:
        hidden_dim: transformer width (``d_model``); the decoder embeddings in x_o have this size.
        num_heads: attention heads of every attention layer (cannot be read off a checkpoint).
        num_encoder_layers: DETR encoder layers.
        num_decoder_layers: RelTR triplet decoder layers.
        dim_feedforward: FFN width in the encoder and decoder.
        dropout: dropout of the transformer (inactive: the extractor is frozen in eval mode).
        num_entities: entity queries.
        num_triplets: coupled subject/object (triplet) queries.
        num_entity_classes: entity logits, including the no-object class (151 VG slots + 1).
        num_predicate_classes: predicate logits, including the no-relation class (51 VG slots + 1).
        backbone_block: ``"bottleneck"`` (ResNet-50/101) or ``"basic"`` (ResNet-18/34, tiny test models).
        backbone_depths: residual blocks per stage (``layer1..layer4``).
        backbone_width: channels of the stem and of the first stage (64 in every torchvision ResNet).
    """

    hidden_dim: int = 256
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_entities: int = 100
    num_triplets: int = 200
    num_entity_classes: int = 152
    num_predicate_classes: int = 52
    backbone_block: str = "bottleneck"
    backbone_depths: tuple[int, ...] = (3, 4, 6, 3)
    backbone_width: int = 64

    def __post_init__(self):
        self.backbone_depths = tuple(int(d) for d in self.backbone_depths)
        if self.backbone_block not in ("bottleneck", "basic"):
            raise ValueError(f"RelTRConfig.backbone_block must be 'bottleneck' or 'basic', got {self.backbone_block!r}")
        if len(self.backbone_depths) != 4 or min(self.backbone_depths) < 1:
            raise ValueError(f"RelTRConfig.backbone_depths must be 4 positive ints, got {self.backbone_depths}")
        if self.hidden_dim % self.num_heads or self.hidden_dim % 2:
            raise ValueError(
                f"RelTRConfig.hidden_dim={self.hidden_dim} must be even and divisible by num_heads={self.num_heads}"
            )

    @property
    def backbone_channels(self) -> int:
        expansion = 4 if self.backbone_block == "bottleneck" else 1
        return self.backbone_width * 8 * expansion

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["backbone_depths"] = list(self.backbone_depths)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelTRConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"RelTRConfig got unknown field(s) {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], **overrides) -> RelTRConfig:
        """Read the architecture off a RelTR state dict (everything but ``num_heads`` and ``dropout``)."""
        try:
            hidden = state_dict["input_proj.weight"].shape[0]
            enc = {int(k.split(".")[3]) for k in state_dict if k.startswith("transformer.encoder.layers.")}
            dec = {int(k.split(".")[3]) for k in state_dict if k.startswith("transformer.decoder.layers.")}
            depths = tuple(
                len({k.split(".")[4] for k in state_dict if k.startswith(f"backbone.0.body.layer{i}.")})
                for i in range(1, 5)
            )
            values: dict[str, Any] = dict(
                hidden_dim=hidden,
                num_encoder_layers=len(enc),
                num_decoder_layers=len(dec),
                dim_feedforward=state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0],
                num_entities=state_dict["entity_embed.weight"].shape[0],
                num_triplets=state_dict["triplet_embed.weight"].shape[0],
                num_entity_classes=state_dict["entity_class_embed.weight"].shape[0],
                num_predicate_classes=state_dict["rel_class_embed.layers.1.weight"].shape[0],
                backbone_block="bottleneck" if "backbone.0.body.layer1.0.conv3.weight" in state_dict else "basic",
                backbone_depths=depths,
                backbone_width=state_dict["backbone.0.body.conv1.weight"].shape[0],
            )
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"not a RelTR state dict: cannot read the architecture ({err!r})") from err
        if hidden % 8 and "num_heads" not in overrides:
            values["num_heads"] = math.gcd(hidden, 8)
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------------------------------------- backbone
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all buffers (DETR/RelTR backbone; eps 1e-5)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a BatchNorm2d checkpoint carries num_batches_tracked, which a frozen norm has no use for
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = _conv(cin, width, 1), FrozenBatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3, stride), FrozenBatchNorm2d(width)  # ResNet v1.5 stride
        self.conv3, self.bn3 = _conv(width, cout, 1), FrozenBatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(_conv(cin, cout, 1, stride), FrozenBatchNorm2d(cout)) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, width, 3, stride), FrozenBatchNorm2d(width)
        self.conv2, self.bn2 = _conv(width, width, 3), FrozenBatchNorm2d(width)
        self.downsample = (
            nn.Sequential(_conv(cin, width, 1, stride), FrozenBatchNorm2d(width))
            if stride != 1 or cin != width
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBody(nn.Module):
    """A torchvision-named ResNet trunk without pooling/classifier: the stride-32 ``layer4`` map is the output."""

    def __init__(self, config: RelTRConfig):
        super().__init__()
        block = _Bottleneck if config.backbone_block == "bottleneck" else _BasicBlock
        w = config.backbone_width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(w)
        cin = w
        for i, depth in enumerate(config.backbone_depths):
            width = w * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ConvBackbone(nn.Module):
    """The ResNet trunk; downsamples the padding mask to the feature map (DETR ``BackboneBase``)."""

    def __init__(self, config: RelTRConfig):
        super().__init__()
        self.body = ResNetBody(config)
        self.num_channels = config.backbone_channels

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(pixel_values)
        mask = F.interpolate(pixel_mask[:, None].float(), size=feats.shape[-2:])[:, 0].bool()
        return feats, mask


class PositionEmbeddingSine(nn.Module):
    """DETR's normalised 2-D sine positional encoding; ``mask`` is True on padding. Output ``[B, 2·F, h, w]``."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        valid = (~mask).to(torch.float32)
        y = valid.cumsum(1)
        x = valid.cumsum(2)
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * self.scale
        x = x / (x[:, :, -1:] + eps) * self.scale
        idx = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        freq = self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / self.num_pos_feats)

        def encode(coord: torch.Tensor) -> torch.Tensor:
            angles = coord[..., None] / freq
            return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)

        return torch.cat((encode(y), encode(x)), dim=3).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------------ transformer
def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """DETR post-norm encoder layer (self-attention with positions on queries/keys, then FFN)."""

    def __init__(self, c: RelTRConfig):
        super().__init__()
        d = c.hidden_dim
        self.self_attn = nn.MultiheadAttention(d, c.num_heads, dropout=c.dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, c.dim_feedforward), nn.Linear(c.dim_feedforward, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(qk, qk, src, key_padding_mask=key_padding_mask)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ffn))


class TripletDecoderLayer(nn.Module):
    """RelTR's decoder layer: an entity branch and coupled subject/object branches (Cong et al. 2023, §3.2).

    Entity branch: self-attention → cross-attention to the image features → FFN. Triplet branches: *coupled*
    self-attention over the concatenated subject and object queries (each with the shared triplet encoding plus its
    subject or object encoding), then per branch *decoupled visual attention* (to the image; its head-averaged
    weights are the subject/object attention maps) and *decoupled entity attention* (to this layer's entity
    queries, which carry no positional term), then an FFN. Every sub-block is residual + post LayerNorm.
    """

    def __init__(self, c: RelTRConfig):
        super().__init__()
        d, h = c.hidden_dim, c.num_heads

        def attn() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(d, h, dropout=c.dropout, batch_first=True)

        # creation order matches RelTR so the state dict enumerates in the official order
        self.self_attn_entity, self.norm2_entity = attn(), nn.LayerNorm(d)
        self.cross_attn_entity, self.norm1_entity = attn(), nn.LayerNorm(d)
        self.self_attn_so, self.norm2_so = attn(), nn.LayerNorm(d)
        self.cross_attn_sub, self.norm1_sub = attn(), nn.LayerNorm(d)
        self.cross_sub_entity, self.norm2_sub = attn(), nn.LayerNorm(d)
        self.cross_attn_obj, self.norm1_obj = attn(), nn.LayerNorm(d)
        self.cross_obj_entity, self.norm2_obj = attn(), nn.LayerNorm(d)
        for branch in ("entity", "sub", "obj"):
            setattr(self, f"linear1_{branch}", nn.Linear(d, c.dim_feedforward))
            setattr(self, f"linear2_{branch}", nn.Linear(c.dim_feedforward, d))
            setattr(self, f"norm3_{branch}", nn.LayerNorm(d))
        self.dropout = nn.Dropout(c.dropout)

    def _ffn(self, x: torch.Tensor, branch: str) -> torch.Tensor:
        lin1, lin2 = getattr(self, f"linear1_{branch}"), getattr(self, f"linear2_{branch}")
        return getattr(self, f"norm3_{branch}")(x + self.dropout(lin2(self.dropout(F.relu(lin1(x))))))

    def _branch(
        self,
        tgt: torch.Tensor,
        name: str,
        triplet_pos: torch.Tensor,
        entity: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_mask: torch.Tensor,
        need_maps: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        visual = getattr(self, f"cross_attn_{name}")
        out, maps = visual(tgt + triplet_pos, memory_pos, memory, key_padding_mask=memory_mask, need_weights=need_maps)
        tgt = getattr(self, f"norm1_{name}")(tgt + self.dropout(out))
        out = getattr(self, f"cross_{name}_entity")(tgt + triplet_pos, entity, entity, need_weights=False)[0]
        tgt = getattr(self, f"norm2_{name}")(tgt + self.dropout(out))
        return self._ffn(tgt, name), maps

    def forward(
        self,
        entity: torch.Tensor,
        triplet: torch.Tensor,
        entity_pos: torch.Tensor,
        triplet_pos: torch.Tensor,
        so_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_mask: torch.Tensor,
        need_maps: bool = False,
    ):
        # entity branch
        q = entity + entity_pos
        entity = self.norm2_entity(entity + self.dropout(self.self_attn_entity(q, q, entity, need_weights=False)[0]))
        out = self.cross_attn_entity(
            entity + entity_pos, memory_pos, memory, key_padding_mask=memory_mask, need_weights=False
        )[0]
        entity = self._ffn(self.norm1_entity(entity + self.dropout(out)), "entity")

        # coupled self-attention of subject and object queries
        n = triplet.shape[1]
        sub, obj = triplet.split(triplet.shape[-1] // 2, dim=-1)
        q = torch.cat((sub + triplet_pos + so_pos[0], obj + triplet_pos + so_pos[1]), dim=1)
        so = torch.cat((sub, obj), dim=1)
        so = self.norm2_so(so + self.dropout(self.self_attn_so(q, q, so, need_weights=False)[0]))
        sub, obj = so[:, :n], so[:, n:]

        args = (triplet_pos, entity, memory, memory_pos, memory_mask, need_maps)
        sub, sub_maps = self._branch(sub, "sub", *args)
        obj, obj_maps = self._branch(obj, "obj", *args)
        return entity, torch.cat((sub, obj), dim=-1), sub_maps, obj_maps


class _Stack(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class RelTRTransformer(nn.Module):
    """DETR encoder + RelTR triplet decoder. Inputs and outputs are batch-first."""

    def __init__(self, c: RelTRConfig):
        super().__init__()
        self.d_model = c.hidden_dim
        self.encoder = _Stack([EncoderLayer(c) for _ in range(c.num_encoder_layers)])
        self.decoder = _Stack([TripletDecoderLayer(c) for _ in range(c.num_decoder_layers)])
        for p in self.parameters():  # RelTR's initialisation of the transformer
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, pos, entity_embed, triplet_embed, so_embed):
        b, c, h, w = src.shape
        memory = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = mask.flatten(1)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, mask)
        # query embeddings: [positional | content] (entities), [positional | subject ‖ object content] (triplets)
        entity_pos, entity = entity_embed.split(c, dim=1)
        triplet_pos, triplet = triplet_embed.split([c, 2 * c], dim=1)
        entity_pos, entity = entity_pos.expand(b, -1, -1), entity.expand(b, -1, -1)
        triplet_pos, triplet = triplet_pos.expand(b, -1, -1), triplet.expand(b, -1, -1)
        memory_pos = memory + pos
        last = len(self.decoder.layers) - 1
        sub_maps = obj_maps = None
        for i, layer in enumerate(self.decoder.layers):
            entity, triplet, sub_maps, obj_maps = layer(
                entity, triplet, entity_pos, triplet_pos, so_embed, memory, memory_pos, mask, need_maps=i == last
            )
        # attention maps of the last layer, averaged over heads: [B, num_triplets, 2, h, w]
        so_maps = torch.stack((sub_maps, obj_maps), dim=2).view(b, -1, 2, h, w)
        return entity, triplet, so_maps


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box/predicate heads)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


# ------------------------------------------------------------------------------------------------------------ model
@dataclass
class RelTROutput(ModelOutput):
    """RelTR predictions for a batch of images (boxes: normalised ``cx, cy, w, h`` of the unpadded image).

    ``sub_hidden`` / ``obj_hidden`` / ``entity_hidden`` are the last decoder layer's subject / object / entity
    embeddings ``[B, queries, hidden]``.
    """

    entity_logits: torch.Tensor | None = None
    entity_boxes: torch.Tensor | None = None
    sub_logits: torch.Tensor | None = None
    sub_boxes: torch.Tensor | None = None
    obj_logits: torch.Tensor | None = None
    obj_boxes: torch.Tensor | None = None
    rel_logits: torch.Tensor | None = None
    sub_hidden: torch.Tensor | None = None
    obj_hidden: torch.Tensor | None = None
    entity_hidden: torch.Tensor | None = None


class RelTR(nn.Module):
    """RelTR scene-graph generator; ``state_dict()`` matches the official checkpoint layout (see module docstring)."""

    def __init__(self, config: RelTRConfig | None = None):
        super().__init__()
        c = self.config = config or RelTRConfig()
        d = c.hidden_dim
        self.transformer = RelTRTransformer(c)
        self.input_proj = nn.Conv2d(c.backbone_channels, d, kernel_size=1)
        # ``backbone.0`` is the CNN, ``backbone.1`` the (parameter-free) positional encoding, as in DETR's Joiner
        self.backbone = nn.ModuleList([ConvBackbone(c), PositionEmbeddingSine(d // 2)])
        self.entity_embed = nn.Embedding(c.num_entities, 2 * d)
        self.triplet_embed = nn.Embedding(c.num_triplets, 3 * d)
        self.so_embed = nn.Embedding(2, d)
        self.entity_class_embed = nn.Linear(d, c.num_entity_classes)
        self.entity_bbox_embed = MLP(d, d, 4, 3)
        self.so_mask_conv = nn.Sequential(
            nn.Upsample(size=(_SO_MASK_SIZE, _SO_MASK_SIZE)),
            nn.Conv2d(2, 64, kernel_size=3, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(64),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(64, 32, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(32),
        )
        self.so_mask_fc = nn.Sequential(
            nn.Linear(_SO_MASK_FLAT, 512), nn.ReLU(inplace=True), nn.Linear(512, _SO_MASK_DIM)
        )
        self.rel_class_embed = MLP(2 * d + _SO_MASK_DIM, d, c.num_predicate_classes, 2)
        self.sub_class_embed = nn.Linear(d, c.num_entity_classes)
        self.sub_bbox_embed = MLP(d, d, 4, 3)
        self.obj_class_embed = nn.Linear(d, c.num_entity_classes)
        self.obj_bbox_embed = MLP(d, d, 4, 3)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> RelTROutput:
        """``pixel_values`` ``[B, 3, H, W]`` normalised; ``pixel_mask`` ``[B, H, W]`` True on padding (or None)."""
        if pixel_mask is None:
            pixel_mask = torch.zeros(
                pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.bool, device=pixel_values.device
            )
        pixel_mask = pixel_mask.to(pixel_values.device)
        feats, mask = self.backbone[0](pixel_values, pixel_mask)
        pos = self.backbone[1](mask).to(feats.dtype)
        entity, triplet, so_maps = self.transformer(
            self.input_proj(feats), mask, pos, self.entity_embed.weight, self.triplet_embed.weight,
            self.so_embed.weight,
        )  # fmt: skip
        b, n = so_maps.shape[:2]
        so_code = self.so_mask_fc(self.so_mask_conv(so_maps.flatten(0, 1)).view(b, n, -1))
        sub, obj = triplet.split(self.config.hidden_dim, dim=-1)
        return RelTROutput(
            entity_logits=self.entity_class_embed(entity),
            entity_boxes=self.entity_bbox_embed(entity).sigmoid(),
            sub_logits=self.sub_class_embed(sub),
            sub_boxes=self.sub_bbox_embed(sub).sigmoid(),
            obj_logits=self.obj_class_embed(obj),
            obj_boxes=self.obj_bbox_embed(obj).sigmoid(),
            rel_logits=self.rel_class_embed(torch.cat((sub, obj, so_code), dim=-1)),
            sub_hidden=sub,
            obj_hidden=obj,
            entity_hidden=entity,
        )

    @classmethod
    def from_official_checkpoint(cls, path: str | Path, config: RelTRConfig | None = None, **config_overrides) -> RelTR:
        """Load RelTR from an official-format checkpoint (``torch.save({"model": state_dict, ...})``, e.g.
        ``checkpoint0149.pth``) or a ``.safetensors`` state dict, with ``weights_only=True`` and ``strict=True``.

        The architecture is, in order of precedence: ``config``; the ``"config"`` entry that :meth:`save_checkpoint`
        writes; the shapes of the state dict, with ``num_heads`` from the training ``args`` (``nheads``) that RelTR's
        ``main.py`` stores beside the weights, else 8 (RelTR's default). ``config_overrides`` set single fields.
        """
        state_dict, saved_config, nheads = load_reltr_checkpoint(path)
        if config is None:
            if saved_config is not None:
                config = RelTRConfig.from_dict({**saved_config, **config_overrides})
            else:
                if nheads is not None:
                    config_overrides.setdefault("num_heads", nheads)
                config = RelTRConfig.from_state_dict(state_dict, **config_overrides)
        model = cls(config)
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {str(path)!r} does not match the RelTR layout of {config}: {err}") from err
        return model.eval()

    def save_checkpoint(self, path: str | Path) -> Path:
        """Save in the official container ``{"model": state_dict}`` (plus ``"config"``, a plain dict), or as
        ``.safetensors`` with the config in the metadata; :meth:`from_official_checkpoint` reads both back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state_dict = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state_dict, str(path), metadata={"reltr_config": json.dumps(self.config.to_dict())})
        else:
            torch.save({"model": state_dict, "config": self.config.to_dict()}, path)
        return path


def load_reltr_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, int | None]:
    """Read ``(state_dict, saved config or None, nheads from the training args or None)`` from ``path`` without
    unpickling arbitrary objects: ``torch.load(weights_only=True)``, which additionally admits only
    ``argparse.Namespace`` (RelTR's training ``args``, a plain attribute bag), or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RelTR checkpoint not found: {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            state_dict = load_file(str(path))
            saved = json.loads(meta["reltr_config"]) if "reltr_config" in meta else None
        except Exception as err:
            raise ValueError(f"cannot read RelTR safetensors checkpoint {str(path)!r}: {err}") from err
        return state_dict, saved, None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or a pickle that needs arbitrary objects
        raise ValueError(f"cannot read RelTR checkpoint {str(path)!r} with weights_only=True: {err}") from err
    saved, nheads = None, None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        saved = obj.get("config") if isinstance(obj.get("config"), dict) else None
        nheads = getattr(obj.get("args"), "nheads", None)
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        keys = sorted(map(str, obj))[:5] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"RelTR checkpoint {str(path)!r} holds no state dict under 'model' (official format "
            f"torch.save({{'model': state_dict}})); found {keys}"
        )
    return obj, saved, int(nheads) if nheads is not None else None


# -------------------------------------------------------------------------------------------------------- extractor
class RelationTriplet(NamedTuple):
    """One decoded scene-graph triplet; boxes are ``(x0, y0, x1, y1)`` pixels of the input frame."""

    subject: str
    predicate: str
    object: str
    score: float
    boxes: tuple[tuple[float, float, float, float], tuple[float, float, float, float]]


def _cxcywh_to_xyxy(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)
    return xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)


class RelationExtractor(SceneExtractor):
    """Frozen RelTR turning frames into the object-relation scene features x_o (paper §3.1; layout in the module
    docstring). ``extract(frames [T, H, W, 3] uint8)`` → ``(features [T, top_k, output_dim], mask [T, top_k])``.

    Args:
        model: the RelTR network (see :meth:`from_checkpoint`, :meth:`tiny`).
        top_k: triplets kept per frame (items of the ``object`` scene).
        mode: ``"official"`` (default; RelTR's own pipeline, module docstring) or ``"fast"`` (the earlier path).
        score_threshold: fast mode — a kept triplet is real (mask True) when ``p_sub · p_pred · p_obj`` exceeds
            this.
        probability_threshold: official mode — a triplet is real when each of ``p_sub``, ``p_pred``, ``p_obj``
            exceeds this (0.3, RelTR's ``inference.py``).
        min_size / max_size: resize so the short side is ``min_size`` and the long side at most ``max_size``
            (``None``: no cap, as ``inference.py``; the official mode truncates, the fast mode rounds).
        batch_size: frames per forward pass (memory bound; does not change the output).
        image_mean / image_std: RGB normalisation.
    """

    scene = "object"

    def __init__(
        self,
        model: RelTR,
        top_k: int = 10,
        score_threshold: float = 0.3**3,
        min_size: int = 800,
        max_size: int | None = 1333,
        batch_size: int = 4,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        mode: str = "official",
        probability_threshold: float = 0.3,
    ):
        c = model.config
        super().__init__(2 * c.hidden_dim + 2 * c.num_entity_classes + c.num_predicate_classes, top_k)
        if mode not in ("official", "fast"):
            raise ValueError(f"RelationExtractor.mode must be 'official' or 'fast', got {mode!r}")
        if mode == "fast" and max_size is None:
            raise ValueError("RelationExtractor.max_size=None (no cap) is an official-mode option")
        for name, value in (
            ("top_k", top_k),
            ("min_size", min_size),
            ("max_size", min_size if max_size is None else max_size),
            ("batch_size", batch_size),
        ):
            if int(value) < 1:
                raise ValueError(f"RelationExtractor.{name} must be >= 1, got {value}")
        if max_size is not None and max_size < min_size:
            raise ValueError(f"RelationExtractor.max_size={max_size} must be >= min_size={min_size}")
        self.model = model
        self.top_k = int(top_k)
        self.score_threshold = float(score_threshold)
        self.mode, self.probability_threshold = mode, float(probability_threshold)
        self.min_size, self.batch_size = int(min_size), int(batch_size)
        self.max_size = None if max_size is None else int(max_size)
        self.image_mean, self.image_std = tuple(map(float, image_mean)), tuple(map(float, image_std))
        self._weights_digest: str | None = None
        self.freeze()

    # -- construction
    @classmethod
    def from_checkpoint(cls, path: str | Path, config: RelTRConfig | None = None, **kwargs) -> RelationExtractor:
        """RelTR from an official checkpoint (``{"model": state_dict}`` ``.pth``) or a ``.safetensors`` state dict.
        ``kwargs`` are the extractor's fields (``top_k``, ``score_threshold``, ``min_size``...)."""
        return cls(RelTR.from_official_checkpoint(path, config=config), **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> RelationExtractor:
        """A tiny random RelTR through the same classes (tests, CI): basic-block ResNet of width 8, hidden 32, one
        encoder/decoder layer, 10 entity and 20 triplet queries, VG150 heads, 96-pixel frames, the ``"fast"`` mode
        (pass ``mode="official"`` for the official pipeline). ``overrides`` may set any :class:`RelTRConfig` field
        or extractor field."""
        config_names = {f.name for f in fields(RelTRConfig)}
        config = dict(
            hidden_dim=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
            num_entities=10, num_triplets=20, backbone_block="basic", backbone_depths=(1, 1, 1, 1), backbone_width=8,
        )  # fmt: skip
        config.update({k: v for k, v in overrides.items() if k in config_names})
        kwargs = dict(min_size=96, max_size=160, mode="fast")
        kwargs.update({k: v for k, v in overrides.items() if k not in config_names})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = RelTR(RelTRConfig(**config))
        return cls(model.eval(), **kwargs)

    def config_dict(self) -> dict[str, Any]:
        """JSON-able description of everything that determines the output (the feature-cache key)."""
        return {
            "extractor": "reltr",
            "scene": self.scene,
            "model": self.model.config.to_dict(),
            "weights_sha256": self.weights_digest(),
            "top_k": self.top_k,
            "mode": self.mode,
            "score_threshold": self.score_threshold,
            "probability_threshold": self.probability_threshold,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "output_dim": self.output_dim,
        }

    def weights_digest(self) -> str:
        """SHA-256 of the state dict (names, dtypes, shapes, values), computed once: the extractor is frozen, so
        weights edited in place afterwards are not seen (build a new extractor instead)."""
        if self._weights_digest is None:
            digest = hashlib.sha256()
            for name, tensor in self.model.state_dict().items():
                t = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._weights_digest = digest.hexdigest()
        return self._weights_digest

    # -- inference
    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after RelTR's resize: short side ``min_size``, long side at most ``max_size``. Official mode: the
        rule of RelTR's ``datasets/transforms.py`` (and torchvision's ``Resize``) — the long side truncated, the
        cap lowering the short side to ``int(round(max_size · short / long))``; fast mode: one scale, rounded."""
        if self.mode == "official":
            size, short, long = self.min_size, min(height, width), max(height, width)
            if self.max_size is not None and long / short * size > self.max_size:
                size = int(round(self.max_size * short / long))
            if short == size:
                return height, width
            if width < height:
                return max(1, int(size * height / width)), size
            return size, max(1, int(size * width / height))
        scale = min(self.min_size / min(height, width), self.max_size / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def preprocess(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB frames (``[T, H, W, 3]`` or a list of ``[H, W, 3]`` of any sizes) → normalised, zero-padded
        ``pixel_values [T, 3, H', W']`` and ``pixel_mask [T, H', W']`` (True on padding), on the model's device and
        in its dtype. Frames are converted one at a time, so a very large frame never exists as a float batch."""
        if torch.is_tensor(frames):
            frames = self.check_frames(frames)
        else:
            frames = [self.check_frames(f[None], name=f"frames[{i}]")[0] for i, f in enumerate(frames)]
        sizes = [self.target_size(f.shape[0], f.shape[1]) for f in frames]
        dtype = next(self.model.parameters()).dtype
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        pixel_values = torch.zeros(len(frames), 3, h, w, dtype=dtype, device=self.device)
        pixel_mask = torch.ones(len(frames), h, w, dtype=torch.bool, device=self.device)
        mean = torch.tensor(self.image_mean, device=self.device)[:, None, None]
        std = torch.tensor(self.image_std, device=self.device)[:, None, None]
        for i, (frame, (fh, fw)) in enumerate(zip(frames, sizes)):
            if self.mode == "official":  # PIL bilinear on the 8-bit frame, as torchvision's Resize on a PIL image
                from PIL import Image

                image = Image.fromarray(frame.cpu().numpy())
                if image.size != (fw, fh):
                    image = image.resize((fw, fh), Image.BILINEAR)
                x = torch.from_numpy(np.asarray(image).copy()).to(self.device).permute(2, 0, 1).float().div_(255)
            else:
                x = frame.to(self.device).permute(2, 0, 1).float().div_(255)
                if (fh, fw) != tuple(x.shape[-2:]):
                    x = F.interpolate(x[None], size=(fh, fw), mode="bilinear", align_corners=False, antialias=True)[0]
            pixel_values[i, :, :fh, :fw] = (x - mean) / std
            pixel_mask[i, :fh, :fw] = False
        return pixel_values, pixel_mask

    @torch.no_grad()
    def predict(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> RelTROutput:
        """Raw RelTR outputs for all frames, run ``batch_size`` frames at a time (outputs on CPU)."""
        n = len(frames)
        if n == 0:
            raise ValueError("frames is empty: RelationExtractor needs at least one frame")
        outputs = []
        for start in range(0, n, self.batch_size):
            pixel_values, pixel_mask = self.preprocess(frames[start : start + self.batch_size])
            out = self.model(pixel_values, pixel_mask)
            outputs.append({k: getattr(out, k).float().cpu() for k in RelTROutput.__dataclass_fields__})
        return RelTROutput(**{k: torch.cat([o[k] for o in outputs]) for k in outputs[0]})

    @staticmethod
    def triplet_scores(out: RelTROutput) -> torch.Tensor:
        """``p_sub · p_pred · p_obj`` per triplet query, each the best class probability without the last (no-object
        / no-relation) column, as in RelTR's inference: ``[B, num_triplets]``."""
        best = [logits.softmax(-1)[..., :-1].amax(-1) for logits in (out.sub_logits, out.rel_logits, out.obj_logits)]
        return best[0] * best[1] * best[2]

    def _select(self, out: RelTROutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = self.triplet_scores(out)
        k = min(self.top_k, scores.shape[1])
        if self.mode == "official":  # inference.py: each probability over the threshold, then the best products
            best = [x.softmax(-1)[..., :-1].amax(-1) for x in (out.sub_logits, out.rel_logits, out.obj_logits)]
            real = (best[0] > self.probability_threshold) & (best[1] > self.probability_threshold)
            real &= best[2] > self.probability_threshold
            by_score = scores.argsort(dim=1, descending=True, stable=True)
            real_first = real.gather(1, by_score).to(torch.int8).argsort(dim=1, descending=True, stable=True)
            top_idx = by_score.gather(1, real_first)[:, :k]  # real triplets first, each group by score
            return scores.gather(1, top_idx), top_idx, real.gather(1, top_idx)
        top_scores, top_idx = scores.topk(k, dim=1)
        return top_scores, top_idx, top_scores > self.score_threshold

    @torch.no_grad()
    def extract(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """x_o for each frame: ``features [T, top_k, output_dim]`` float32 and ``mask [T, top_k]`` bool (CPU)."""
        out = self.predict(frames)
        top_scores, top_idx, keep = self._select(out)

        def gather(x: torch.Tensor) -> torch.Tensor:
            return x.gather(1, top_idx[..., None].expand(-1, -1, x.shape[-1]))

        feats = torch.cat(
            [
                gather(out.sub_hidden),
                gather(out.obj_hidden),
                gather(out.sub_logits.softmax(-1)),
                gather(out.rel_logits.softmax(-1)),
                gather(out.obj_logits.softmax(-1)),
            ],
            dim=-1,
        )
        feats = feats * keep[..., None]  # rows that are not real triplets are zeros and masked (scene contract)
        features, mask = self.empty(len(top_idx))
        features[:, : feats.shape[1]] = feats
        mask[:, : keep.shape[1]] = keep
        return features, mask

    @torch.no_grad()
    def describe(self, frames: torch.Tensor | Sequence[torch.Tensor]) -> list[list[RelationTriplet]]:
        """The triplets behind x_o, decoded: per frame, the kept (mask True) top-k triplets, best first, as
        ``(subject, predicate, object, score, (subject_box, object_box))`` with VG150 names and pixel boxes."""
        out = self.predict(frames)
        top_scores, top_idx, keep = self._select(out)
        sizes = [(f.shape[-3], f.shape[-2]) for f in frames]
        objects = _class_names(VG150_OBJECT_CLASSES, NO_OBJECT, self.model.config.num_entity_classes)
        predicates = _class_names(VG150_PREDICATE_CLASSES, NO_RELATION, self.model.config.num_predicate_classes)
        result = []
        for b, (height, width) in enumerate(sizes):
            triplets = []
            for score, q in zip(top_scores[b][keep[b]].tolist(), top_idx[b][keep[b]].tolist()):
                sub_cls = int(out.sub_logits[b, q, :-1].argmax())
                rel_cls = int(out.rel_logits[b, q, :-1].argmax())
                obj_cls = int(out.obj_logits[b, q, :-1].argmax())
                sub_box = _cxcywh_to_xyxy(out.sub_boxes[b, q], width, height).tolist()
                obj_box = _cxcywh_to_xyxy(out.obj_boxes[b, q], width, height).tolist()
                triplets.append(
                    RelationTriplet(
                        objects[sub_cls], predicates[rel_cls], objects[obj_cls], score,
                        (tuple(sub_box), tuple(obj_box)),
                    )
                )  # fmt: skip
            result.append(triplets)
        return result


def _class_names(names: Sequence[str], none: str, num_logits: int) -> list[str]:
    # heads trained on another label set than VG150 still decode, with index names
    if num_logits == len(names) + 1:
        return [*names, none]
    return [f"class_{i}" for i in range(num_logits - 1)] + [none]
