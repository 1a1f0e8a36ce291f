"""FaceExtractor: the real MTCNN (weights from the facenet-pytorch wheel) on real images, a tiny random CNN."""

from __future__ import annotations

import json

import facenet_pytorch  # noqa: F401  (installed by scripts/setup.sh: a missing one fails, it does not skip)
import numpy as np
import pytest
import skimage.data as skimage_data
import torch
import torch.nn.functional as F

from processing import base  # noqa: E402
from processing.face import FaceExtractor, downscale_frames  # noqa: E402

# the astronaut's face in skimage.data.astronaut() downscaled to 256 x 256, pixels (x1, y1, x2, y2)
ASTRONAUT_FACE = (85, 25, 140, 93)


@pytest.fixture(scope="module")
def face() -> FaceExtractor:
    return FaceExtractor.tiny(seed=0)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    # 256 px (from 512) keeps MTCNN's image pyramid, hence the test, cheap
    return downscale_frames(torch.from_numpy(skimage_data.astronaut())[None], 256)[0]


def _inside(box: torch.Tensor, region: tuple[int, int, int, int]) -> bool:
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def test_mtcnn_finds_the_astronauts_face(face, astronaut):
    feats, mask, details = face.extract(astronaut[None], return_details=True)
    assert feats.shape == (1, 4, face.output_dim) and feats.dtype == torch.float32
    assert mask.shape == (1, 4) and mask.dtype == torch.bool
    det = details["detections"][0]
    assert mask[0].tolist() == [True, False, False, False], det
    assert det["probs"][0] > 0.99
    assert _inside(det["boxes"][0], ASTRONAUT_FACE), det["boxes"][0]
    assert torch.isfinite(feats).all() and feats[0, 0].abs().sum() > 0
    assert (feats[0, 1:] == 0).all()  # absent faces: zeros and masked
    assert details["crops"].shape == (1, 3, face.face_size, face.face_size)


def test_mtcnn_finds_faces_in_carphone_frames(face, carphone_path):
    from processing.video import sample_frames

    clip = sample_frames(carphone_path, num_frames=8)
    feats, mask = face.extract(clip.frames)
    assert feats.shape == (8, 4, face.output_dim)
    # a man talking on the phone fills the clip: his face is found in (nearly) every frame
    assert mask[:, 0].sum() >= 7, mask
    assert torch.isfinite(feats).all()
    assert (feats[~mask] == 0).all()


@pytest.mark.parametrize(
    "frames",
    [
        torch.zeros(3, 96, 96, 3, dtype=torch.uint8),
        torch.full((2, 64, 80, 3), 200, dtype=torch.uint8),
        torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)),
    ],
    ids=["black", "flat-grey", "noise"],
)
def test_frames_without_faces_give_all_false_masks(face, frames):
    feats, mask = face.extract(frames)
    assert feats.shape == (frames.shape[0], 4, face.output_dim)
    assert not mask.any()
    assert (feats == 0).all()


def test_batched_equals_frame_by_frame(face, astronaut):
    small = downscale_frames(astronaut[None], 160)[0]
    frames = torch.stack([small, small.flip(1), torch.zeros_like(small)])
    feats, mask = face.extract(frames)
    for i in range(frames.shape[0]):
        f_i, m_i = face.extract(frames[i : i + 1])
        assert torch.equal(m_i[0], mask[i])
        torch.testing.assert_close(f_i[0], feats[i], atol=1e-4, rtol=1e-4)
    assert mask[:2, 0].all() and not mask[2].any()


def test_very_large_frame_is_downscaled(astronaut):
    face = FaceExtractor.tiny(seed=0, max_side=256)
    big = F.interpolate(astronaut.permute(2, 0, 1)[None].float(), size=(3000, 3000), mode="bilinear")
    big = big.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
    feats, mask, details = face.extract(big[None], return_details=True)
    assert tuple(details["frame_size"]) == (256, 256)
    assert mask[0, 0] and _inside(details["detections"][0]["boxes"][0], ASTRONAUT_FACE)


def test_alignment_levels_the_eyes(face, astronaut):
    """Rotating the image by 25 degrees: aligned crops stay close to the upright crop, unaligned ones do not."""
    import torchvision.transforms.functional as TF

    rotated = TF.rotate(astronaut.permute(2, 0, 1), 25.0, center=[112, 59]).permute(1, 2, 0).contiguous()
    _, _, upright = face.extract(astronaut[None], return_details=True)
    _, m_rot, aligned = face.extract(rotated[None], return_details=True)
    face.align = False
    try:
        _, _, unaligned = face.extract(rotated[None], return_details=True)
    finally:
        face.align = True
    assert m_rot[0, 0]
    ref = upright["crops"][0]
    err_aligned = (aligned["crops"][0] - ref).abs().mean()
    err_unaligned = (unaligned["crops"][0] - ref).abs().mean()
    assert err_aligned < 0.75 * err_unaligned, (err_aligned, err_unaligned)


def test_encoder_loads_from_a_saved_pretrained_directory(tmp_path, face):
    """The real loading path (AutoModel.from_pretrained on a local directory, safetensors) with the tiny CNN."""
    face.encoder.save_pretrained(tmp_path / "cnn")
    (tmp_path / "cnn" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )
    assert (tmp_path / "cnn" / "model.safetensors").exists()
    loaded = FaceExtractor.from_pretrained(str(tmp_path / "cnn"), face_size=face.face_size)
    cfg = loaded.config_dict()
    assert cfg["encoder"] == str(tmp_path / "cnn")
    assert cfg["encoder_sha256"] == face.config_dict()["encoder_sha256"]
    assert cfg["image_mean"] == [0.5, 0.5, 0.5] and cfg["image_std"] == [0.25, 0.25, 0.25]
    crops = torch.rand(3, 3, face.face_size, face.face_size) * 255
    loaded.image_mean.copy_(face.image_mean)
    loaded.image_std.copy_(face.image_std)
    torch.testing.assert_close(loaded.encode_faces(crops), face.encode_faces(crops))


def test_missing_encoder_path_names_it(tmp_path):
    with pytest.raises(OSError, match="does-not-exist"):
        FaceExtractor.from_pretrained(str(tmp_path / "does-not-exist"))


def test_config_dict_is_json_and_identifies_the_weights(face):
    cfg = face.config_dict()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["output_dim"] == face.output_dim == 32 and cfg["max_items"] == 4
    assert FaceExtractor.tiny(seed=0).config_dict() == cfg
    assert FaceExtractor.tiny(seed=1).config_dict()["encoder_sha256"] != cfg["encoder_sha256"]
    assert FaceExtractor.tiny(seed=0, min_prob=0.5).config_dict() != cfg


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 32, 32, 3, dtype=torch.float32), "uint8"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), r"\[T, H, W, 3\]"),
        (torch.zeros(2, 32, 32, 4, dtype=torch.uint8), r"\[T, H, W, 3\]"),
    ],
)
def test_bad_frames_raise_clear_errors(face, bad, match):
    with pytest.raises(ValueError, match=match):
        face.extract(bad)


def test_frozen_and_device_aware(face):
    assert not face.training and not any(p.requires_grad for p in face.parameters())
    face.train()
    assert not face.training
    assert face.to("cpu").device.type == "cpu"


def test_missing_facenet_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(base, "_has", lambda module: module != "facenet_pytorch")
    with pytest.raises(ImportError, match=r"omnisila-icm\[scene\]"):
        FaceExtractor.tiny()


def test_lfw_faces_vs_non_faces():
    """skimage's lfw_subset: 100 faces then 100 non-faces (25 x 25 grey). Upscaled to 48 px with a 16 px grey
    border (MTCNN needs the face inside the frame). Measured: faces 99-100 % detected, non-faces 0 %."""
    face = FaceExtractor.tiny(seed=0, min_face_size=30)
    images = torch.from_numpy(skimage_data.lfw_subset()).float()[:, None]
    images = F.pad(F.interpolate(images, size=(48, 48), mode="bilinear"), (16,) * 4, value=0.5)
    frames = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1)
    detected = torch.tensor([d["boxes"].shape[0] > 0 for d in face.detect(frames.contiguous())])
    face_rate, non_face_rate = detected[:100].float().mean().item(), detected[100:].float().mean().item()
    print(f"LFW subset: faces detected {face_rate:.2%}, non-faces detected {non_face_rate:.2%}")
    assert face_rate >= 0.9 and non_face_rate <= 0.1
