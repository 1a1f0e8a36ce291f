"""BackgroundExtractor: SAM-V1 (segment-anything, official checkpoint format) masks, black fill, ViT [CLS]."""

from __future__ import annotations

import json
import pickle

import pytest
import segment_anything  # noqa: F401  (installed by scripts/setup.sh: a missing one fails, it does not skip)
import torch

from processing import base  # noqa: E402
from processing.background import (  # noqa: E402
    SAM_ARCHS,
    BackgroundExtractor,
    build_sam_from_arch,
    load_sam,
)


@pytest.fixture(scope="module")
def background() -> BackgroundExtractor:
    return BackgroundExtractor.tiny(seed=0)


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, 72, 96, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def tiny_sam_pth(tmp_path_factory):
    """A tiny SAM built from segment_anything.modeling classes, saved like Meta's .pth files (a state dict)."""
    torch.manual_seed(123)
    sam = build_sam_from_arch(SAM_ARCHS["tiny"])
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path, sam


def test_contract_shapes_one_background_per_frame(background, frames):
    feats, mask = background.extract(frames)
    assert feats.shape == (3, 1, background.output_dim) and feats.dtype == torch.float32
    assert mask.shape == (3, 1) and mask.dtype == torch.bool and mask.all()
    assert torch.isfinite(feats).all()


def test_official_format_checkpoint_loads_through_the_user_path(tiny_sam_pth, frames):
    path, sam = tiny_sam_pth
    loaded = BackgroundExtractor.from_pretrained(path, sam_type="tiny", encoder=BackgroundExtractor.tiny().encoder)
    for name, tensor in sam.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[name], tensor), name
    assert loaded.config_dict()["sam_checkpoint"] == "sam_tiny.pth"
    # different SAM weights -> a different cache identity
    assert loaded.config_dict()["sam_sha256"] != BackgroundExtractor.tiny().config_dict()["sam_sha256"]
    assert loaded.extract(frames)[0].shape == (3, 1, 32)


def test_checkpoint_of_another_architecture_is_refused_with_names(tiny_sam_pth):
    """vit_b is built by segment_anything.sam_model_registry itself; the tiny state dict does not fit it."""
    path, _ = tiny_sam_pth
    with pytest.raises(ValueError, match=r"sam_tiny\.pth.*sam_type='vit_b'"):
        load_sam(path, "vit_b")


class _NotATensor:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path, tiny_sam_pth):
    _, sam = tiny_sam_pth
    path = tmp_path / "evil.pth"
    torch.save({"model": sam.state_dict(), "payload": _NotATensor()}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match=r"evil\.pth.*weights-only"):
        load_sam(path, "tiny")


@pytest.mark.parametrize(
    "path, sam_type, error, match",
    [("nope.pth", "tiny", FileNotFoundError, "nope.pth"), (None, "vit_x", ValueError, "vit_x")],
)
def test_bad_checkpoint_arguments(tmp_path, path, sam_type, error, match):
    with pytest.raises(error, match=match):
        load_sam(None if path is None else tmp_path / path, sam_type)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_sam_pth):
    src, _ = tiny_sam_pth
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pth"):
        load_sam(bad, "tiny")


def test_foreground_is_filled_with_pure_black_before_the_vit(frames):
    """SAM's masks (all kept: rule 'all', no quality filter, random tiny SAM) are black in the ViT's input."""
    ext = BackgroundExtractor.tiny(seed=0, foreground_rule="all", pred_iou_thresh=-1e9, stability_score_thresh=0.0)
    feats, mask, details = ext.extract(frames, return_details=True)
    fg = details["vit_foreground"]  # [T, S, S] at the ViT's input resolution
    assert fg.any() and (~fg).any()
    vit_in = details["vit_input_uint8"].permute(0, 2, 3, 1)  # [T, S, S, 3]
    assert (vit_in[fg] == 0).all()
    assert vit_in[~fg].float().mean() > 50  # the rest is the frame itself
    black = ((0 - ext.image_mean) / ext.image_std).flatten()
    pixels = details["pixel_values"].permute(0, 2, 3, 1)[fg]
    torch.testing.assert_close(pixels, black.expand_as(pixels))
    assert sum(details["num_foreground_masks"]) > 0


def test_encode_background_with_a_known_mask(background, frames):
    fg = torch.zeros(3, 72, 96, dtype=torch.bool)
    fg[:, :, :48] = True  # left half is "foreground"
    cls_masked, details = background.encode_background(frames, fg, return_details=True)
    cls_plain, plain = background.encode_background(frames, torch.zeros_like(fg), return_details=True)
    s = background.vit_size[1]
    assert (details["vit_input_uint8"][..., : s // 2] == 0).all()
    assert torch.equal(details["vit_input_uint8"][..., s // 2 :], plain["vit_input_uint8"][..., s // 2 :])
    assert not torch.allclose(cls_masked, cls_plain)


def test_compact_rule_keeps_people_and_objects_not_stuff(background):
    h = w = 32
    logits = torch.full((4, h, w), -20.0)
    logits[0, 10:20, 12:18] = 20  # an object in the middle: foreground
    logits[1, 20:, 4:10] = 20  # a person standing on the bottom border: foreground
    logits[2, :8, :] = 20  # the sky: touches three borders -> background
    logits[3, 2:30, 2:30] = 20  # a region covering most of the frame -> background
    kept = background._foreground_masks(logits, torch.ones(4))
    assert kept.shape[0] == 2
    assert torch.equal(kept[0], logits[0] > 0) and torch.equal(kept[1], logits[1] > 0)
    # SAM's quality filter: a low predicted IoU drops the mask
    assert background._foreground_masks(logits, torch.tensor([0.1, 1.0, 1.0, 1.0])).shape[0] == 1


def test_frames_without_people_give_a_valid_background(background):
    black = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    feats, mask = background.extract(black)
    assert mask.all() and torch.isfinite(feats).all()


def test_very_large_frame_is_downscaled(background):
    big = torch.zeros(1, 3000, 4000, 3, dtype=torch.uint8)
    big[:, 1000:2000, 1500:2500] = 255
    ext = BackgroundExtractor.tiny(seed=0, max_side=256)
    feats, mask, details = ext.extract(big, return_details=True)
    assert feats.shape == (1, 1, 32) and mask.all()
    assert details["frame_size"] == (192, 256)


def test_config_dict(background):
    cfg = background.config_dict()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["foreground_rule"] == "compact" and cfg["output_dim"] == 32 and cfg["max_items"] == 1
    assert BackgroundExtractor.tiny(seed=0).config_dict() == cfg
    assert BackgroundExtractor.tiny(seed=0, max_area=0.5).config_dict() != cfg
    with pytest.raises(ValueError, match="foreground_rule='people'"):
        BackgroundExtractor.tiny(foreground_rule="people")


def test_missing_segment_anything_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(base, "_has", lambda module: module != "segment_anything")
    with pytest.raises(ImportError, match=r"omnisila-icm\[scene\]"):
        load_sam(None, "tiny")


def test_cross_frame_mask_decoding_equals_sams_mask_decoder(background, frames):
    """Our decoder call (one image embedding per prompt, several frames per call) == SAM's MaskDecoder per frame."""
    sam = background.sam
    inputs, _ = background._sam_inputs(frames[:2])
    emb = sam.image_encoder(inputs)
    coords = torch.tensor([[[10.0, 20.0]], [[40.0, 30.0]], [[5.0, 50.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    pe = sam.prompt_encoder.get_dense_pe()
    pairs_frame = torch.tensor([0, 0, 0, 1, 1, 1])
    pairs_point = torch.tensor([0, 1, 2, 0, 1, 2])
    ours, our_iou = background._decode(emb[pairs_frame], pe, sparse[pairs_point], dense[pairs_point])
    for f in range(2):
        low, iou = sam.mask_decoder(
            image_embeddings=emb[f : f + 1],
            image_pe=pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        torch.testing.assert_close(ours[f * 9 : (f + 1) * 9], low.flatten(0, 1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(our_iou[f * 9 : (f + 1) * 9], iou.flatten(), atol=1e-5, rtol=1e-5)
