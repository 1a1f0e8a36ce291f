"""Visual background modeling (implicit scene, paper §3.1): SAM-V1 masks the foreground, the masked parts are
filled with pure black, and a ViT encodes what is left into x_b (one item per frame).

How the foreground is found (the paper only says SAM segments "objects" and the background remains): SAM runs in
*automatic* mode, prompted by a regular ``points_per_side`` x ``points_per_side`` grid of single positive points
(SAM's own automatic-mask-generator recipe, with a sparse grid so that it is feasible on CPU). The image encoder —
SAM's heavy part — runs once over all frames of the clip as one batch; the prompt encoder runs once for the grid
and the mask decoder decodes (frame, grid point) pairs ``points_per_batch`` at a time across frames. Masks are kept when SAM's predicted IoU >= ``pred_iou_thresh``
and the stability score >= ``stability_score_thresh`` (SAM's definitions), and counted as *foreground* by
``foreground_rule``:

* ``"compact"`` (default): people and objects are compact regions. A mask is foreground when its area is between
  ``min_area`` and ``max_area`` (fractions of the frame) and it touches at most ``max_border_sides`` of the four
  frame borders. "Stuff" — sky, road, floor, walls, water — is large or spans the frame and stays background.
* ``"all"``: every kept mask is foreground; the background is what SAM did not segment.

The union of the foreground masks is filled with pure black (0 in uint8 RGB, before the ViT's normalisation) and
the frame goes to a transformers ``ViTModel`` (default ``google/vit-base-patch16-224-in21k``); x_b is its [CLS]
output (768). Frames are resized to the ViT's square input like ``ViTImageProcessor`` does, and the foreground
mask is resized with them (nearest), so that the black fill is exact at the ViT's input.

SAM checkpoints: the official ``.pth`` files (``sam_vit_b_01ec64.pth`` ...) are plain state dicts. They load
through the official builders, ``segment_anything.sam_model_registry[sam_type]``, which build the architecture; the
state dict itself is read by us with ``torch.load(..., weights_only=True)`` and ``strict=True`` (the official
builder would call ``torch.load`` without ``weights_only``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from .base import SceneExtractor, require
from .face import downscale_frames, image_norm_stats, load_image_encoder, module_fingerprint

DEFAULT_BACKGROUND_ENCODER = "google/vit-base-patch16-224-in21k"
VIT_IN21K_MEAN = (0.5, 0.5, 0.5)
VIT_IN21K_STD = (0.5, 0.5, 0.5)
FOREGROUND_RULES = ("compact", "all")

# The SAM-V1 architectures (segment_anything/build_sam.py) and a tiny one for tests, as keyword arguments of
# build_sam_from_arch. The official ones are built by sam_model_registry itself.
_SAM_COMMON = {
    "prompt_embed_dim": 256,
    "image_size": 1024,
    "vit_patch_size": 16,
    "window_size": 14,
    "mask_in_chans": 16,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_hidden_dim": 256,
}
SAM_ARCHS: dict[str, dict[str, Any]] = {
    "vit_h": {
        **_SAM_COMMON,
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [7, 15, 23, 31],
    },
    "vit_l": {
        **_SAM_COMMON,
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_b": {
        **_SAM_COMMON,
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": [2, 5, 8, 11],
    },
    "tiny": {
        "prompt_embed_dim": 32,
        "image_size": 64,
        "vit_patch_size": 8,
        "window_size": 4,
        "mask_in_chans": 4,
        "decoder_mlp_dim": 64,
        "decoder_num_heads": 2,
        "iou_head_hidden_dim": 32,
        "encoder_embed_dim": 32,
        "encoder_depth": 2,
        "encoder_num_heads": 2,
        "encoder_global_attn_indexes": [1],
    },
}
SAM_ARCHS["default"] = SAM_ARCHS["vit_h"]


def build_sam_from_arch(arch: dict[str, Any]):
    """A SAM-V1 model from ``segment_anything.modeling`` classes, exactly as ``build_sam._build_sam`` composes
    them, for any architecture in :data:`SAM_ARCHS` (random weights)."""
    require("segment_anything", "BackgroundExtractor (SAM)")
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = arch
    emb = a["image_size"] // a["vit_patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"],
            embed_dim=a["encoder_embed_dim"],
            img_size=a["image_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["encoder_num_heads"],
            patch_size=a["vit_patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(a["encoder_global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=a["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"],
            image_embedding_size=(emb, emb),
            input_image_size=(a["image_size"], a["image_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=a["prompt_embed_dim"],
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_num_heads"],
            ),
            transformer_dim=a["prompt_embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(checkpoint: str | os.PathLike | None, sam_type: str = "vit_b"):
    """Build a SAM-V1 of ``sam_type`` and load an official-format ``.pth`` state dict into it.

    The official types (``vit_h``/``default``, ``vit_l``, ``vit_b``) are built by
    ``segment_anything.sam_model_registry[sam_type](checkpoint=None)``; ``"tiny"`` (tests) by
    :func:`build_sam_from_arch`. The checkpoint is read with ``torch.load(weights_only=True)`` — never an
    arbitrary unpickle — and loaded with ``strict=True``. ``checkpoint=None`` keeps random weights.
    """
    require("segment_anything", "BackgroundExtractor (SAM)")
    from segment_anything import sam_model_registry

    if sam_type not in SAM_ARCHS:
        raise ValueError(f"sam_type={sam_type!r} is not one of {sorted(SAM_ARCHS)}")
    sam = sam_model_registry[sam_type](checkpoint=None) if sam_type in sam_model_registry else None
    if sam is None:
        sam = build_sam_from_arch(SAM_ARCHS[sam_type])
    if checkpoint is None:
        return sam.eval()
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SAM checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for non-tensor objects, RuntimeError for truncated zips
        raise ValueError(
            f"SAM checkpoint {path!r} is not a weights-only state dict (it is refused, never unpickled): {err}"
        ) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"SAM checkpoint {path!r} holds a {type(state).__name__}, not a state dict")
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"SAM checkpoint {path!r} does not match sam_type={sam_type!r}: {err}") from err
    return sam.eval()


class BackgroundExtractor(SceneExtractor):
    """SAM-masked, black-filled ViT background extractor: ``extract(frames [T,H,W,3] uint8)`` ->
    ``(x_b [T, 1, dim] float32, mask [T, 1] bool all True)``.

    Args:
        encoder: the ViT; a Hub id / local path, a transformers ``ViTConfig`` (random weights) or a ``ViTModel``.
        sam_checkpoint: an official SAM-V1 ``.pth`` state dict (``None``: random SAM weights, tests only).
        sam_type: ``vit_h`` / ``vit_l`` / ``vit_b`` (official) or ``tiny``.
        points_per_side: the prompt grid of the automatic mask generation (SAM's default 32; 16 for CPU).
        points_per_batch: grid points decoded at once.
        pred_iou_thresh, stability_score_thresh, stability_score_offset: SAM's mask-quality filters.
        foreground_rule: ``"compact"`` or ``"all"`` (see the module docstring).
        min_area, max_area, max_border_sides: the ``"compact"`` rule's limits.
        max_side: frames larger than this are downscaled first.
        sam_batch_size: frames per SAM image-encoder forward.
    """

    scene = "background"

    def __init__(
        self,
        encoder: Any = DEFAULT_BACKGROUND_ENCODER,
        *,
        sam_checkpoint: str | os.PathLike | None = None,
        sam_type: str = "vit_b",
        sam: Any = None,
        points_per_side: int = 16,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        foreground_rule: str = "compact",
        min_area: float = 0.001,
        max_area: float = 0.35,
        max_border_sides: int = 2,
        max_side: int | None = 1024,
        sam_batch_size: int = 4,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
        tiny_seed: int | None = None,
    ):
        if foreground_rule not in FOREGROUND_RULES:
            raise ValueError(f"foreground_rule={foreground_rule!r} is not one of {FOREGROUND_RULES}")
        model, name = load_image_encoder(encoder, "BackgroundExtractor")
        dim = getattr(getattr(model, "config", None), "hidden_size", None)
        if not dim:
            raise ValueError(f"BackgroundExtractor: encoder {name!r} has no config.hidden_size (a ViTModel expected)")
        super().__init__(output_dim=int(dim), max_items=1)
        mean, std = image_norm_stats(encoder, VIT_IN21K_MEAN, VIT_IN21K_STD)
        self.encoder = model
        self.encoder_name = name
        size = model.config.image_size
        self.vit_size = (size, size) if isinstance(size, int) else tuple(size)
        self.sam = sam if sam is not None else load_sam(sam_checkpoint, sam_type)
        self.sam_type = sam_type
        self.sam_checkpoint = None if sam_checkpoint is None else os.path.basename(os.fspath(sam_checkpoint))
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.foreground_rule = foreground_rule
        self.min_area = float(min_area)
        self.max_area = float(max_area)
        self.max_border_sides = int(max_border_sides)
        self.max_side = None if max_side is None else int(max_side)
        self.sam_batch_size = int(sam_batch_size)
        self.tiny_seed = tiny_seed
        self.register_buffer("image_mean", torch.tensor(image_mean or mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std or std).view(1, 3, 1, 1), persistent=False)
        self._fingerprints: dict[str, str] | None = None
        self.freeze()

    # -- constructors ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        sam_checkpoint: str | os.PathLike,
        sam_type: str = "vit_b",
        encoder: Any = DEFAULT_BACKGROUND_ENCODER,
        **kwargs,
    ) -> BackgroundExtractor:
        """Real weights: ``sam_checkpoint`` an official SAM-V1 ``.pth`` (e.g. ``sam_vit_b_01ec64.pth``) of
        ``sam_type``; ``encoder`` a Hub id or local path of a transformers ViT (``save_pretrained`` layout)."""
        if sam_checkpoint is None:
            raise ValueError("BackgroundExtractor.from_pretrained needs sam_checkpoint (an official SAM .pth file)")
        return cls(encoder=encoder, sam_checkpoint=sam_checkpoint, sam_type=sam_type, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> BackgroundExtractor:
        """A tiny random SAM (64-px input) and a tiny random ViT (output dim 32): the real code path, fast."""
        from transformers import ViTConfig

        with torch.random.fork_rng(devices=[]):  # seeded, leaves the global RNG alone
            torch.manual_seed(seed)
            vit = ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
            )
            kwargs: dict[str, Any] = {"encoder": vit, "sam_type": "tiny", "points_per_side": 4, "tiny_seed": seed}
            kwargs.update(overrides)
            return cls(**kwargs)

    def config_dict(self) -> dict[str, Any]:
        if self._fingerprints is None:
            self._fingerprints = {"encoder": module_fingerprint(self.encoder), "sam": module_fingerprint(self.sam)}
        return {
            "extractor": "BackgroundExtractor",
            "scene": self.scene,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
            "encoder": self.encoder_name,
            "encoder_sha256": self._fingerprints["encoder"],
            "vit_size": list(self.vit_size),
            "sam_type": self.sam_type,
            "sam_checkpoint": self.sam_checkpoint,
            "sam_sha256": self._fingerprints["sam"],
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "stability_score_offset": self.stability_score_offset,
            "foreground_rule": self.foreground_rule,
            "min_area": self.min_area,
            "max_area": self.max_area,
            "max_border_sides": self.max_border_sides,
            "max_side": self.max_side,
            "image_mean": [round(v, 6) for v in self.image_mean.flatten().tolist()],
            "image_std": [round(v, 6) for v in self.image_std.flatten().tolist()],
        }

    # -- SAM: foreground masks ---------------------------------------------------------------------------------
    def _sam_inputs(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """SAM's ResizeLongestSide + normalise + pad, in torch for the whole clip."""
        img = self.sam.image_encoder.img_size
        h, w = frames.shape[1:3]
        scale = img / max(h, w)
        size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
        x = frames.to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return self.sam.preprocess(x), size

    @torch.no_grad()
    def segment_foreground(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Foreground union ``[T, h, w]`` bool on SAM's low-resolution mask grid (aspect of the frame) and the
        number of foreground masks per frame."""
        frames = self.check_frames(frames)
        t = frames.shape[0]
        inputs, (in_h, in_w) = self._sam_inputs(frames)
        emb = torch.cat(
            [self.sam.image_encoder(inputs[i : i + self.sam_batch_size]) for i in range(0, t, self.sam_batch_size)]
        )
        img = self.sam.image_encoder.img_size
        n = self.points_per_side
        offset = 1 / (2 * n)
        side = torch.linspace(offset, 1 - offset, n, device=self.device)
        grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), dim=-1).reshape(-1, 2)  # (x, y) in [0,1]
        coords = grid * torch.tensor([in_w, in_h], device=self.device, dtype=torch.float32)
        pe = self.sam.prompt_encoder.get_dense_pe()
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
        # decode every (frame, grid point) pair, points_per_batch pairs per mask-decoder call, across frames
        p = coords.shape[0]
        logits, ious = [], []
        for i in range(0, t * p, self.points_per_batch):
            pairs = torch.arange(i, min(i + self.points_per_batch, t * p), device=self.device)
            low, iou = self._decode(emb[pairs // p], pe, sparse[pairs % p], dense[pairs % p])
            logits.append(low)
            ious.append(iou)
        low = torch.cat(logits).view(t, p * 3, *logits[0].shape[-2:])  # [T, P*3, lh, lw] over the padded input
        iou = torch.cat(ious).view(t, p * 3)
        lh, lw = low.shape[-2:]
        crop_h, crop_w = max(1, round(lh * in_h / img)), max(1, round(lw * in_w / img))
        low = low[..., :crop_h, :crop_w]
        union = torch.zeros(t, crop_h, crop_w, dtype=torch.bool, device=self.device)
        counts = []
        for f in range(t):
            keep = self._foreground_masks(low[f], iou[f])
            counts.append(int(keep.shape[0]))
            if keep.shape[0]:
                union[f] = keep.any(dim=0)
        return union, counts

    def _decode(self, image_emb, image_pe, sparse, dense) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's ``MaskDecoder.predict_masks`` with one image embedding *per prompt* (the original repeats a single
        image's embedding for all prompts), so that prompts of several frames share one call. Returns the three
        multimask outputs ``[N*3, lh, lw]`` and their predicted IoUs ``[N*3]``."""
        dec = self.sam.mask_decoder
        n = sparse.shape[0]
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
        src = image_emb + dense
        pos_src = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = dec.transformer(src, pos_src, tokens)
        iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1 : (1 + dec.num_mask_tokens), :]
        upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [dec.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(dec.num_mask_tokens)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou_pred = dec.iou_prediction_head(iou_token_out)
        return masks[:, 1:].flatten(0, 1), iou_pred[:, 1:].flatten()  # multimask_output=True: outputs 1..3

    def _foreground_masks(self, logits: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
        """Apply SAM's quality filters and the foreground rule to ``[M, h, w]`` mask logits."""
        from segment_anything.utils.amg import calculate_stability_score

        thr = self.sam.mask_threshold
        stability = calculate_stability_score(logits, thr, self.stability_score_offset)
        ok = (iou >= self.pred_iou_thresh) & (stability >= self.stability_score_thresh)
        masks = logits[ok] > thr
        if self.foreground_rule == "all" or masks.shape[0] == 0:
            return masks[masks.flatten(1).any(dim=1)]
        h, w = masks.shape[-2:]
        area = masks.flatten(1).float().mean(dim=1)
        borders = (
            masks[:, 0, :].any(dim=1).int()
            + masks[:, -1, :].any(dim=1).int()
            + masks[:, :, 0].any(dim=1).int()
            + masks[:, :, -1].any(dim=1).int()
        )
        fg = (area >= self.min_area) & (area <= self.max_area) & (borders <= self.max_border_sides)
        return masks[fg]

    # -- ViT on the black-filled frames ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_background(self, frames: torch.Tensor, foreground: torch.Tensor, return_details: bool = False):
        """Fill ``foreground`` (bool ``[T, h, w]``, any resolution covering the frame) with pure black and encode
        with the ViT: ``[T, dim]`` [CLS] embeddings."""
        frames = self.check_frames(frames)
        x = frames.to(self.device).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=self.vit_size, mode="bilinear", antialias=True, align_corners=False)
        x = x.round().clamp(0, 255)
        fg = F.interpolate(foreground[:, None].float().to(self.device), size=self.vit_size, mode="nearest") > 0.5
        x = x.masked_fill(fg, 0.0)  # pure black where the foreground is
        pixel = (x / 255.0 - self.image_mean) / self.image_std
        cls = self.encoder(pixel_values=pixel).last_hidden_state[:, 0].float()
        if return_details:
            return cls, {"vit_input_uint8": x.to(torch.uint8), "vit_foreground": fg[:, 0], "pixel_values": pixel}
        return cls

    @torch.no_grad()
    def extract(self, frames: torch.Tensor, return_details: bool = False):
        frames = downscale_frames(self.check_frames(frames), self.max_side)
        foreground, counts = self.segment_foreground(frames)
        cls, details = self.encode_background(frames, foreground, return_details=True)
        features = cls[:, None, :]
        mask = torch.ones(frames.shape[0], 1, dtype=torch.bool, device=features.device)
        if return_details:
            details.update(
                {"foreground": foreground, "num_foreground_masks": counts, "frame_size": tuple(frames.shape[1:3])}
            )
            return features, mask, details
        return features, mask
