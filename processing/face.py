"""Facial expression modeling (explicit scene, paper §3.1): MTCNN finds and aligns faces, a CNN encodes them (x_f).

Per frame, MTCNN (facenet-pytorch, with the real P/R/O-Net weights that ship inside its wheel) detects faces and
their five landmarks. All frames of a clip go through MTCNN as one batch (:func:`mtcnn_detect`: facenet-pytorch's
cascade, thresholds and NMS, with its per-box crop loops replaced by one ``roi_align`` per stage — boxes agree with
``facenet_pytorch.MTCNN.detect`` to a pixel or two, at about half the CPU time). Each face is aligned with a similarity transform — centred on its box, rotated so the eyes are level,
scaled to the box side times ``1 + margin`` — and resampled to ``face_size`` pixels with one ``grid_sample`` per
frame. All faces of the clip then go through the CNN encoder as one batch; its pooled output is x_f.

Choices where the paper is silent (config fields):

* the CNN is a transformers image model (default ``microsoft/resnet-18``; pooled output 512 = the contract's
  default face dim); ``encoder=`` takes a Hub id / local path, a config, or a model;
* at most ``max_faces`` (4) faces per frame, the most probable first; faces under ``min_prob`` are dropped;
  empty slots are zero and masked ``False``;
* frames larger than ``max_side`` are downscaled first (bounded memory on 4K input).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import SceneExtractor, require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_FACE_ENCODER = "microsoft/resnet-18"


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the face and background extractors
# ---------------------------------------------------------------------------------------------------------------


def downscale_frames(frames: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """Downscale uint8 ``[T, H, W, 3]`` frames so that ``max(H, W) <= max_side`` (aspect kept); no-op otherwise."""
    if max_side is None:
        return frames
    h, w = frames.shape[1:3]
    if max(h, w) <= max_side:
        return frames
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = []
    for i in range(0, frames.shape[0], 4):  # a few frames at a time: a 4K float copy of a whole clip is large
        chunk = frames[i : i + 4].permute(0, 3, 1, 2).float()
        chunk = F.interpolate(chunk, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out).contiguous()


def module_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, dtypes, bytes): identifies the weights in the
    cache key, so features computed with other weights are never mistaken for these."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_image_encoder(encoder: Any, what: str) -> tuple[nn.Module, str]:
    """A transformers image model from a Hub id / local path (``AutoModel.from_pretrained``), a config
    (``AutoModel.from_config``, random weights) or a ready ``nn.Module``. Returns ``(model, name)``."""
    from transformers import AutoModel, PreTrainedConfig

    if isinstance(encoder, (str, os.PathLike)):
        try:
            model = AutoModel.from_pretrained(str(encoder))
        except OSError as err:
            raise OSError(f"{what}: cannot load the image encoder {str(encoder)!r}: {err}") from err
        return model, str(encoder)
    if isinstance(encoder, PreTrainedConfig):
        return AutoModel.from_config(encoder), f"random:{encoder.model_type}"
    if isinstance(encoder, nn.Module):
        name = getattr(getattr(encoder, "config", None), "_name_or_path", "") or type(encoder).__name__
        return encoder, str(name)
    raise TypeError(f"{what}: encoder must be a Hub id/path, a transformers config or a model, got {type(encoder)}")


def image_norm_stats(encoder: Any, default_mean, default_std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The encoder's own normalisation (``preprocessor_config.json`` beside its weights) when present."""
    if isinstance(encoder, (str, os.PathLike)):
        from transformers.utils import cached_file

        try:
            path = cached_file(str(encoder), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            if "image_mean" in cfg and "image_std" in cfg:
                return tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"])
    return tuple(default_mean), tuple(default_std)


def encoder_output_dim(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    raise ValueError(f"cannot infer the output dim of encoder {type(model).__name__}; pass a ResNet/ViT-like model")


def pooled_embedding(outputs: Any) -> torch.Tensor:
    """``pooler_output`` flattened (ResNet: [N, C, 1, 1]), else the mean of the last hidden state."""
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is not None:
        return pooled.flatten(1)
    hidden = outputs.last_hidden_state
    return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Face extractor
# ---------------------------------------------------------------------------------------------------------------


def _load_mtcnn(min_face_size: int, thresholds, factor: float) -> nn.Module:
    """facenet-pytorch's MTCNN with its shipped weights. Those files are plain state dicts; facenet loads them with
    ``torch.load``'s default, which is ``weights_only=True`` on torch >= 2.6; we reload them explicitly with
    ``weights_only=True`` as well, so no arbitrary object is ever unpickled whatever the torch default."""
    require("facenet_pytorch", "FaceExtractor (MTCNN)")
    import facenet_pytorch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(
        keep_all=True,
        select_largest=False,
        min_face_size=int(min_face_size),
        thresholds=list(thresholds),
        factor=float(factor),
        post_process=False,
    )
    data = os.path.join(os.path.dirname(facenet_pytorch.__file__), "data")
    for net in ("pnet", "rnet", "onet"):
        state = torch.load(os.path.join(data, f"{net}.pt"), map_location="cpu", weights_only=True)
        getattr(mtcnn, net).load_state_dict(state, strict=True)
    return mtcnn


def _crop_resize(images: torch.Tensor, image_inds: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """MTCNN's stage-2/3 crops, all boxes in one ``roi_align`` (facenet-pytorch loops over the boxes one by one
    with an area resize): the in-frame part of each box, averaged into ``size`` x ``size`` bins."""
    from torchvision.ops import roi_align

    h, w = images.shape[2:]
    b = boxes[:, :4].trunc()
    x1, y1 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1  # facenet's pad(): 1-based, clipped to the frame
    x2, y2 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    rois = torch.stack([image_inds.to(images.dtype), x1, y1, x2, y2], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


@torch.no_grad()
def mtcnn_detect(
    frames: torch.Tensor, mtcnn: nn.Module, min_face_size: int, thresholds, factor: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """MTCNN (P-, R-, O-Net of facenet-pytorch, same cascade, thresholds and NMS as ``facenet_pytorch.MTCNN``) on a
    batch of equal-size frames, with the per-box crop loops of stages 2 and 3 replaced by one ``roi_align`` each.
    Returns per frame ``[n, 5]`` boxes (x1, y1, x2, y2, prob) and ``[n, 5, 2]`` landmarks."""
    from facenet_pytorch.models.utils.detect_face import (
        batched_nms_numpy,
        bbreg,
        generateBoundingBox,
        imresample,
        rerec,
    )
    from torchvision.ops.boxes import batched_nms

    device = next(mtcnn.pnet.parameters()).device
    imgs = frames.to(device).permute(0, 3, 1, 2).float()
    t, _, h, w = imgs.shape
    m = 12.0 / min_face_size
    minl, scale, scales = min(h, w) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    boxes, image_inds, picks, offset = [], [], [], 0
    for scale in scales:  # stage 1: P-Net over the image pyramid, the whole batch per scale
        im_data = (imresample(imgs, (int(h * scale + 1), int(w * scale + 1))) - 127.5) * 0.0078125
        reg, probs = mtcnn.pnet(im_data)
        boxes_scale, inds_scale = generateBoundingBox(reg, probs[:, 1], scale, thresholds[0])
        boxes.append(boxes_scale)
        image_inds.append(inds_scale)
        picks.append(batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5) + offset)
        offset += boxes_scale.shape[0]
    empty = ([torch.zeros(0, 5) for _ in range(t)], [torch.zeros(0, 5, 2) for _ in range(t)])
    if not boxes or offset == 0:
        return empty
    boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
    pick = torch.cat(picks)
    boxes, image_inds = boxes[pick], image_inds[pick]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack(
        [
            boxes[:, 0] + boxes[:, 5] * regw,
            boxes[:, 1] + boxes[:, 6] * regh,
            boxes[:, 2] + boxes[:, 7] * regw,
            boxes[:, 3] + boxes[:, 8] * regh,
            boxes[:, 4],
        ],
        dim=1,
    )
    boxes = rerec(boxes)

    def valid(bx: torch.Tensor) -> torch.Tensor:  # facenet skips boxes with no pixel inside the frame
        b = bx[:, :4].trunc()
        return (b[:, 3].clamp(max=h) > b[:, 1].clamp(min=1) - 1) & (b[:, 2].clamp(max=w) > b[:, 0].clamp(min=1) - 1)

    # stage 2: R-Net on 24 x 24 crops
    ok = valid(boxes)
    boxes, image_inds = boxes[ok], image_inds[ok]
    if boxes.shape[0] == 0:
        return empty
    reg, score = mtcnn.rnet((_crop_resize(imgs, image_inds, boxes, 24) - 127.5) * 0.0078125)
    ipass = score[:, 1] > thresholds[1]
    boxes = torch.cat([boxes[ipass, :4], score[ipass, 1:2]], dim=1)
    image_inds, mv = image_inds[ipass], reg[ipass]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes = rerec(bbreg(boxes[pick], mv[pick]))
    image_inds = image_inds[pick]
    # stage 3: O-Net on 48 x 48 crops, landmarks
    ok = valid(boxes)
    boxes, image_inds = boxes[ok], image_inds[ok]
    if boxes.shape[0] == 0:
        return empty
    reg, points, score = mtcnn.onet((_crop_resize(imgs, image_inds, boxes, 48) - 127.5) * 0.0078125)
    ipass = score[:, 1] > thresholds[2]
    boxes = torch.cat([boxes[ipass, :4], score[ipass, 1:2]], dim=1)
    image_inds, mv, points = image_inds[ipass], reg[ipass], points[ipass]
    w_i = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h_i = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points = torch.stack([w_i * points[:, :5] + boxes[:, :1] - 1, h_i * points[:, 5:] + boxes[:, 1:2] - 1], dim=2)
    boxes = bbreg(boxes, mv)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
    boxes, image_inds, points = boxes[pick].cpu(), image_inds[pick].cpu(), points[pick].cpu()
    return [boxes[image_inds == i] for i in range(t)], [points[image_inds == i] for i in range(t)]


class FaceExtractor(SceneExtractor):
    """MTCNN + CNN facial-expression extractor: ``extract(frames [T,H,W,3] uint8)`` ->
    ``(x_f [T, max_faces, dim] float32, mask [T, max_faces] bool)``.

    Args:
        encoder: the CNN; a Hub id / local path, a transformers config (random weights) or a model.
        max_faces: face slots per frame (paper: unspecified; 4).
        face_size: side of the aligned face crop fed to the encoder (224 for ImageNet CNNs).
        margin: the crop side is the face box side times ``1 + margin``.
        min_face_size, thresholds, factor: MTCNN's detection parameters (facenet-pytorch defaults).
        min_prob: drop detections below this MTCNN probability.
        align: rotate each crop so that the eyes are level (MTCNN landmarks).
        max_side: frames larger than this are downscaled before detection.
        image_mean, image_std: the encoder's input normalisation.
    """

    scene = "face"

    def __init__(
        self,
        encoder: Any = DEFAULT_FACE_ENCODER,
        *,
        max_faces: int = 4,
        face_size: int = 224,
        margin: float = 0.2,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_prob: float = 0.9,
        align: bool = True,
        max_side: int | None = 1024,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
        encoder_batch_size: int = 64,
        tiny_seed: int | None = None,
    ):
        model, name = load_image_encoder(encoder, "FaceExtractor")
        super().__init__(output_dim=encoder_output_dim(model), max_items=max_faces)
        mean, std = image_norm_stats(encoder, IMAGENET_MEAN, IMAGENET_STD)
        self.encoder = model
        self.encoder_name = name
        self.face_size = int(face_size)
        self.encoder_batch_size = int(encoder_batch_size)
        self.tiny_seed = tiny_seed
        self.register_buffer("image_mean", torch.tensor(image_mean or mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std or std).view(1, 3, 1, 1), persistent=False)
        self._set_up_detector(margin, min_face_size, thresholds, factor, min_prob, align, max_side)
        self._fingerprint: str | None = None
        self.freeze()

    def _set_up_detector(self, margin, min_face_size, thresholds, factor, min_prob, align, max_side) -> None:
        """The MTCNN detection and crop settings, and the detector itself (shared with ``processing.lite``)."""
        self.margin = float(margin)
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.min_prob = float(min_prob)
        self.align = bool(align)
        self.max_side = None if max_side is None else int(max_side)
        self.mtcnn = _load_mtcnn(self.min_face_size, self.thresholds, self.factor)

    # -- constructors ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, encoder: Any = DEFAULT_FACE_ENCODER, **kwargs) -> FaceExtractor:
        """Real weights: MTCNN from the facenet-pytorch wheel, the CNN from ``encoder`` (Hub id or local path of a
        transformers image model, e.g. ``microsoft/resnet-18``, saved with ``save_pretrained``)."""
        return cls(encoder=encoder, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> FaceExtractor:
        """The real MTCNN + a tiny random ResNet encoder (output dim 32): the real code path, fast."""
        from transformers import ResNetConfig

        with torch.random.fork_rng(devices=[]):  # seeded, leaves the global RNG alone
            torch.manual_seed(seed)
            config = ResNetConfig(
                embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_channels=3
            )
            kwargs: dict[str, Any] = {"encoder": config, "face_size": 32, "tiny_seed": seed}
            kwargs.update(overrides)
            return cls(**kwargs)

    def config_dict(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.encoder)
        return {
            "extractor": "FaceExtractor",
            "scene": self.scene,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
            "encoder": self.encoder_name,
            "encoder_sha256": self._fingerprint,
            "detector": "facenet_pytorch.MTCNN",
            "face_size": self.face_size,
            "margin": self.margin,
            "min_face_size": self.min_face_size,
            "thresholds": list(self.thresholds),
            "factor": self.factor,
            "min_prob": self.min_prob,
            "align": self.align,
            "max_side": self.max_side,
            "image_mean": [round(v, 6) for v in self.image_mean.flatten().tolist()],
            "image_std": [round(v, 6) for v in self.image_std.flatten().tolist()],
        }

    # -- detection ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """MTCNN on all frames at once. Per frame: ``boxes [n,4]`` (x1,y1,x2,y2 pixels of the given frames),
        ``probs [n]``, ``landmarks [n,5,2]``, most probable first, at most ``max_faces``, ``prob >= min_prob``."""
        frames = self.check_frames(frames)
        all_boxes, all_points = mtcnn_detect(frames, self.mtcnn, self.min_face_size, self.thresholds, self.factor)
        out = []
        for b, lm in zip(all_boxes, all_points):
            b, lm = b.float(), lm.float()
            p = b[:, 4]
            b = b[:, :4]
            order = torch.argsort(p, descending=True)
            keep = order[p[order] >= self.min_prob][: self.max_items]
            out.append({"boxes": b[keep], "probs": p[keep], "landmarks": lm[keep]})
        return out

    def _align_crops(self, image: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Aligned ``[n, 3, S, S]`` float crops (0..255) of one ``[3, H, W]`` float frame, one ``grid_sample``."""
        _, h, w = image.shape
        n, s = boxes.shape[0], self.face_size
        center = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values * (1 + self.margin)
        if self.align:
            eyes = landmarks[:, 1] - landmarks[:, 0]  # right eye - left eye
            angle = torch.atan2(eyes[:, 1], eyes[:, 0])
        else:
            angle = torch.zeros(n)
        cos, sin, half = torch.cos(angle), torch.sin(angle), side / 2
        # output coords u in [-1,1]^2 -> input pixel p = c + R(angle)·(side/2)·u -> input normalised 2p/size - 1
        theta = torch.stack(
            [
                torch.stack([half * cos * 2 / w, -half * sin * 2 / w, 2 * center[:, 0] / w - 1], dim=1),
                torch.stack([half * sin * 2 / h, half * cos * 2 / h, 2 * center[:, 1] / h - 1], dim=1),
            ],
            dim=1,
        ).to(image.device)
        grid = F.affine_grid(theta, [n, 3, s, s], align_corners=False)  # [n, S, S, 2]
        # all faces of the frame in one sample: stack the grids vertically, sample once, split again
        crops = F.grid_sample(image[None], grid.reshape(1, n * s, s, 2), mode="bilinear", align_corners=False)
        return crops.view(3, n, s, s).permute(1, 0, 2, 3)

    @torch.no_grad()
    def encode_faces(self, crops: torch.Tensor) -> torch.Tensor:
        """Encoder embeddings ``[n, dim]`` of ``[n, 3, S, S]`` crops in 0..255."""
        pixel = (crops / 255.0 - self.image_mean) / self.image_std
        out = [
            pooled_embedding(self.encoder(pixel_values=pixel[i : i + self.encoder_batch_size]))
            for i in range(0, pixel.shape[0], self.encoder_batch_size)
        ]
        return torch.cat(out).float()

    @torch.no_grad()
    def extract(self, frames: torch.Tensor, return_details: bool = False):
        frames = downscale_frames(self.check_frames(frames), self.max_side)
        t = frames.shape[0]
        features, mask = self.empty(t)
        features, mask = features.to(self.device), mask.to(self.device)
        detections = self.detect(frames)
        crops, slots = [], []
        for i, det in enumerate(detections):
            n = det["boxes"].shape[0]
            if n == 0:
                continue
            image = frames[i].to(self.device).permute(2, 0, 1).float()
            crops.append(self._align_crops(image, det["boxes"], det["landmarks"]))
            slots.extend((i, j) for j in range(n))
        all_crops = torch.cat(crops) if crops else torch.zeros(0, 3, self.face_size, self.face_size)
        if slots:
            emb = self.encode_faces(all_crops)
            idx_t = torch.tensor([s[0] for s in slots], device=self.device)
            idx_j = torch.tensor([s[1] for s in slots], device=self.device)
            features[idx_t, idx_j] = emb
            mask[idx_t, idx_j] = True
        if return_details:
            return features, mask, {"detections": detections, "crops": all_crops, "frame_size": frames.shape[1:3]}
        return features, mask
