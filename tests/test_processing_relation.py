"""RelTR object-relation extractor (paper §3.1): official checkpoint layout, strict loading, x_o and its mask."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_layout
from official_references import deterministic_weights, load_reference, reference_frames

from modeling_icm.scene_contract import (
    DEFAULT_SCENE_DIMS,
    DEFAULT_SCENE_ITEMS,
    RELTR_HIDDEN,
    RELTR_NUM_ENTITY_CLASSES,
    RELTR_NUM_PREDICATE_CLASSES,
    validate_scene_inputs,
)
from processing.relation import (
    VG150_OBJECT_CLASSES,
    VG150_PREDICATE_CLASSES,
    RelationExtractor,
    RelTR,
    RelTRConfig,
    ResNetBody,
)

LAYOUT = checkpoint_layout("reltr_vg.json")
OFFICIAL_NUM_PARAMETERS = 63_901_928


def _layout() -> dict:
    assert LAYOUT.exists(), f"the official RelTR layout file ships with the package: {LAYOUT}"
    return json.loads(LAYOUT.read_text())


def _random_like_layout(layout: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the official names/shapes (running variances positive, counters integral)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(150, dtype=torch.long)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(shape, generator=g) * 0.02
    return out


def _frames(n: int = 8, h: int = 96, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def tiny() -> RelationExtractor:
    return RelationExtractor.tiny()


# ------------------------------------------------------------------------------------------------- official layout
@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[dict[str, torch.Tensor], RelationExtractor]:
    """A random state dict with exactly the official names/shapes, saved in the official container and loaded
    through the user path (small frames keep the full-architecture forward fast)."""
    state_dict = _random_like_layout(_layout()["state_dict"])
    path = tmp_path_factory.mktemp("reltr") / "checkpoint0149.pth"
    torch.save({"model": state_dict, "epoch": 149}, path)
    return state_dict, RelationExtractor.from_checkpoint(path, min_size=96, max_size=128, score_threshold=0.0, probability_threshold=0.0)


def test_state_dict_matches_official_layout_exactly(official):
    layout = _layout()
    model = official[1].model
    mine = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(mine) == list(layout["state_dict"])  # names, in the official order
    assert mine == layout["state_dict"]  # and shapes
    num_params = sum(p.numel() for p in model.parameters())
    assert num_params == layout["num_parameters"] == OFFICIAL_NUM_PARAMETERS


def test_official_container_loads_strict_through_user_path(official):
    state_dict, extractor = official
    assert extractor.model.config == RelTRConfig()  # architecture read off the checkpoint = the VG default
    loaded = extractor.model.state_dict()
    assert list(loaded) == list(state_dict)
    for name in ("backbone.0.body.layer3.5.conv2.weight", "transformer.decoder.layers.5.cross_obj_entity.in_proj_weight",
                 "rel_class_embed.layers.1.bias", "backbone.0.body.bn1.running_var", "so_mask_conv.7.running_mean"):  # fmt: skip
        assert torch.equal(loaded[name], state_dict[name]), name
    assert extractor.output_dim == DEFAULT_SCENE_DIMS["object"] == 868
    assert extractor.max_items == DEFAULT_SCENE_ITEMS["object"] == 10
    assert 2 * RELTR_HIDDEN + 2 * RELTR_NUM_ENTITY_CLASSES + RELTR_NUM_PREDICATE_CLASSES == 868
    assert not any(p.requires_grad for p in extractor.parameters()) and not extractor.training


def test_full_config_forward_gives_868_dim_x_o(official):
    """The real architecture end to end on random official-layout weights (one small frame)."""
    _, extractor = official
    features, mask = extractor.extract(_frames(1, 96, 128))
    assert features.shape == (1, 10, 868) and features.dtype == torch.float32
    assert mask.shape == (1, 10) and mask.all()
    assert torch.isfinite(features).all() and features.abs().sum() > 0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda sd: sd.pop("so_embed.weight"), "so_embed.weight"),
        (lambda sd: sd.__setitem__("extra.weight", torch.zeros(1)), "extra.weight"),
        (lambda sd: sd.__setitem__("so_embed.weight", torch.zeros(3, 32)), "so_embed.weight"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_mismatched_checkpoint_is_rejected_naming_file_and_key(tmp_path, tiny, mutate, match):
    state_dict = dict(tiny.model.state_dict())
    mutate(state_dict)
    path = tmp_path / "bad.pth"
    torch.save({"model": state_dict}, path)
    with pytest.raises(ValueError, match=match) as info:
        RelationExtractor.from_checkpoint(path, config=tiny.model.config)
    assert "bad.pth" in str(info.value)


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        RelationExtractor.from_checkpoint(tmp_path / "nowhere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pth"):
        RelationExtractor.from_checkpoint(garbage)
    no_model = tmp_path / "no_model.pth"
    torch.save({"optimizer": {"lr": 1e-4}}, no_model)
    with pytest.raises(ValueError, match="no_model.pth.*'model'"):
        RelationExtractor.from_checkpoint(no_model)


def test_arbitrary_pickles_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": Path("/")}, path)  # a non-tensor class in the pickle
    with pytest.raises(ValueError, match="weights_only"):
        RelationExtractor.from_checkpoint(path)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_tiny_checkpoint_round_trip(tmp_path, tiny, fmt):
    path = tiny.model.save_checkpoint(tmp_path / f"tiny.{fmt}")
    loaded = RelationExtractor.from_checkpoint(path, min_size=96, max_size=160, mode="fast")
    assert loaded.model.config == tiny.model.config  # num_heads is not in the shapes: the saved config carries it
    frames = _frames(3)
    torch.testing.assert_close(loaded.predict(frames).rel_logits, tiny.predict(frames).rel_logits)
    assert loaded.config_dict() == tiny.config_dict()


def test_training_checkpoint_with_args_loads_and_takes_heads_from_args(tmp_path, tiny):
    """RelTR's main.py saves model, optimizer, lr_scheduler, epoch and the argparse ``args`` in one file."""
    state_dict = tiny.model.state_dict()
    path = tmp_path / "checkpoint0149.pth"
    args = argparse.Namespace(nheads=2, hidden_dim=32, dataset="vg", lr=1e-4)
    torch.save({"model": state_dict, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "lr_scheduler": {"last_epoch": 149}, "epoch": 149, "args": args}, path)  # fmt: skip
    model = RelTR.from_official_checkpoint(path)
    assert model.config == tiny.model.config
    plain = tmp_path / "plain.pth"
    torch.save({"model": state_dict}, plain)  # no args: shapes + the default 8 heads unless told
    assert RelTR.from_official_checkpoint(plain).config.num_heads == 8
    assert RelTR.from_official_checkpoint(plain, num_heads=2).config == tiny.model.config


# --------------------------------------------------------------------------------------------- network semantics
@pytest.mark.parametrize(
    "arch, block, depths", [("resnet18", "basic", (2, 2, 2, 2)), ("resnet50", "bottleneck", (3, 4, 6, 3))]
)
def test_backbone_equals_torchvision_resnet(arch, block, depths):
    """Our ResNet trunk with torchvision's names computes what torchvision's ResNet computes (DETR's backbone)."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d as TvFrozenBN

    reference = getattr(torchvision.models, arch)(weights=None, norm_layer=TvFrozenBN).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in reference.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
            elif name.endswith("weight"):
                buf.copy_(1 + 0.1 * torch.randn(buf.shape, generator=g))
            else:
                buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
    body = ResNetBody(RelTRConfig(backbone_block=block, backbone_depths=depths))
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    body.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 80, generator=g)
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    with torch.no_grad():
        expected = trunk(x)
        torch.testing.assert_close(body(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    assert expected.abs().max() > 1e-3  # a meaningful signal reached layer4


def test_padding_is_ignored_by_the_transformer(tiny):
    """Padded positions (DETR padding mask) must not change any decoder output."""
    model = tiny.model
    src = torch.randn(1, 32, 4, 5)
    mask = torch.zeros(1, 4, 5, dtype=torch.bool)
    mask[:, :, 3:] = True
    pos = model.backbone[1](mask)
    altered = src.clone()
    altered[..., 3:] = torch.randn(1, 32, 4, 2) * 10
    args = (model.entity_embed.weight, model.triplet_embed.weight, model.so_embed.weight)
    with torch.no_grad():
        a = model.transformer(src, mask, pos, *args)
        b = model.transformer(altered, mask, pos, *args)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert (a[2][..., 3:] == 0).all()  # no attention mass on the padding


def test_matches_outputs_of_official_reltr_code():
    """Golden numbers from the official implementation (github yrcong/RelTR @ fca7397, models/reltr.py and
    models/transformer.py, with our ResNet trunk as its backbone) run on the same deterministic weights/input."""
    config = RelTRConfig(hidden_dim=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=96,
                         num_entities=7, num_triplets=9, backbone_block="basic", backbone_depths=(1, 1, 1, 1),
                         backbone_width=8)  # fmt: skip
    model = RelTR(config).eval()
    model.load_state_dict(_golden_weights(model), strict=True)
    x, mask = _golden_input()
    with torch.no_grad():
        out = model(x, mask)
    for name, expected in GOLDEN.items():
        got = getattr(out, name)
        torch.testing.assert_close(got[:, :3, :4].flatten().tolist(), expected, rtol=1e-4, atol=1e-4)


def _golden_weights(model: RelTR) -> dict[str, torch.Tensor]:
    """Deterministic weights in the official enumeration order, independent of the modules' own initialisation."""
    return deterministic_weights(model, seed=1234, bias_std=0.02)


def _golden_input() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    x = torch.randn(2, 3, 100, 130, generator=g)
    mask = torch.zeros(2, 100, 130, dtype=torch.bool)
    mask[1, :, 90:] = True
    mask[1, 70:, :] = True
    return x, mask


GOLDEN: dict[str, list[float]] = {
    "entity_logits": [
        1.19921,
        0.22281,
        1.04797,
        1.62615,
        1.0746,
        -0.06484,
        0.9019,
        1.94213,
        0.93454,
        0.38096,
        1.04011,
        1.36389,
        1.1702,
        0.11791,
        1.00897,
        1.46174,
        1.07595,
        -0.12505,
        0.86427,
        1.78796,
        0.9674,
        0.33039,
        1.0138,
        1.17557,
    ],
    "sub_logits": [
        0.82126,
        0.43271,
        0.15643,
        -0.98121,
        0.86082,
        0.1927,
        0.07072,
        -1.66586,
        0.83688,
        0.21268,
        0.31469,
        -1.17664,
        0.82803,
        0.32606,
        0.26618,
        -0.97078,
        0.79936,
        0.13613,
        0.15272,
        -1.55407,
        0.85048,
        0.09,
        0.41456,
        -1.14054,
    ],
    "obj_boxes": [
        0.44983,
        0.63873,
        0.5235,
        0.37839,
        0.49746,
        0.6053,
        0.4979,
        0.36555,
        0.4941,
        0.61137,
        0.51557,
        0.38199,
        0.4184,
        0.61362,
        0.51841,
        0.36766,
        0.4462,
        0.57747,
        0.48536,
        0.37321,
        0.44445,
        0.58445,
        0.51301,
        0.38419,
    ],
    "rel_logits": [
        -0.49478,
        0.10686,
        -0.18073,
        -0.19219,
        -0.47824,
        0.01738,
        -0.04009,
        -0.26099,
        -0.65027,
        0.19292,
        -0.24921,
        -0.16918,
        -0.49502,
        0.20194,
        -0.28619,
        -0.30545,
        -0.45117,
        0.12408,
        -0.1739,
        -0.41421,
        -0.61509,
        0.33184,
        -0.36451,
        -0.27913,
    ],
}


# ------------------------------------------------------------------------------------------------------- x_o, mask
def test_tiny_extract_contract(tiny):
    frames = _frames(8)
    features, mask = tiny.extract(frames)
    assert tiny.scene == "object"
    assert features.shape == (8, tiny.max_items, tiny.output_dim) and features.dtype == torch.float32
    assert mask.shape == (8, tiny.max_items) and mask.dtype == torch.bool
    assert tiny.output_dim == 2 * 32 + 2 * 152 + 52
    validate_scene_inputs({"object": features[None]}, {"object": mask[None]}, {"object": tiny.output_dim})


def test_random_model_is_not_confident_all_false_mask(tiny):
    """Random heads spread probability over 152/52 classes: no triplet passes 0.3³, so nothing is 'seen'."""
    features, mask = tiny.extract(_frames(4))
    assert not mask.any()
    assert (features == 0).all()  # masked rows are zeros (scene contract)
    assert tiny.describe(_frames(2)) == [[], []]


def test_x_o_layout_and_ranking():
    extractor = RelationExtractor.tiny(score_threshold=0.0)
    frames = _frames(3)
    features, mask = extractor.extract(frames)
    assert mask.all()
    out = extractor.predict(frames)
    scores = extractor.triplet_scores(out)
    top = scores.topk(extractor.top_k, dim=1)
    hidden, ce, cp = 32, 152, 52
    sub_h, obj_h, sub_p, rel_p, obj_p = features.split([hidden, hidden, ce, cp, ce], dim=-1)
    idx = top.indices
    torch.testing.assert_close(sub_h, out.sub_hidden.gather(1, idx[..., None].expand(-1, -1, hidden)))
    torch.testing.assert_close(obj_h, out.obj_hidden.gather(1, idx[..., None].expand(-1, -1, hidden)))
    for probs in (sub_p, rel_p, obj_p):
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, extractor.top_k))
    # the ranking score is p_sub * p_pred * p_obj without the no-object / no-relation columns
    recomputed = sub_p[..., :-1].amax(-1) * rel_p[..., :-1].amax(-1) * obj_p[..., :-1].amax(-1)
    torch.testing.assert_close(recomputed, top.values)
    assert (top.values[:, :-1] >= top.values[:, 1:]).all()


def _confident(**kw) -> RelationExtractor:
    """A tiny RelTR whose heads are sure of 'man riding horse' for every query except query 0 ('no-relation')."""
    extractor = RelationExtractor.tiny(**kw)
    m = extractor.model
    with torch.no_grad():
        for head, index in ((m.sub_class_embed, VG150_OBJECT_CLASSES.index("man")),
                            (m.obj_class_embed, VG150_OBJECT_CLASSES.index("horse"))):  # fmt: skip
            head.weight.zero_()
            head.bias.zero_()
            head.bias[index] = 30.0
        last = m.rel_class_embed.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[VG150_PREDICATE_CLASSES.index("riding")] = 30.0
    return extractor


def test_confident_triplets_are_masked_in_and_described():
    extractor = _confident(top_k=4)
    frames = _frames(2, 90, 120)
    features, mask = extractor.extract(frames)
    assert mask.all()
    described = extractor.describe(frames)
    assert len(described) == 2 and all(len(frame) == 4 for frame in described)
    t = described[0][0]
    assert (t.subject, t.predicate, t.object) == ("man", "riding", "horse")
    assert t.score == pytest.approx(1.0, abs=1e-6)
    # boxes: RelTR's normalised (cx, cy, w, h) of one triplet query, as (x0, y0, x1, y1) pixels of the 120x90 frame
    out = extractor.predict(frames[:1])
    scale = torch.tensor([120.0, 90.0, 120.0, 90.0])

    def xyxy(b: torch.Tensor) -> torch.Tensor:
        return torch.cat((b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2), dim=-1) * scale

    candidates = torch.cat((xyxy(out.sub_boxes[0]), xyxy(out.obj_boxes[0])), dim=-1)  # [queries, 8]
    for triplet in described[0]:
        got = torch.tensor([*triplet.boxes[0], *triplet.boxes[1]])
        assert (candidates - got).abs().amax(-1).min() < 1e-3


def test_threshold_is_configurable_and_masks_partially():
    extractor = _confident(top_k=10)
    with torch.no_grad():  # a random predicate head again: scores now differ from query to query
        last = extractor.model.rel_class_embed.layers[-1]
        last.weight.normal_(0, 1.0)
        last.bias.normal_(0, 1.0)
    scores = extractor.triplet_scores(extractor.predict(_frames(1)))[0].sort(descending=True).values
    assert scores[3] > scores[4]
    extractor.score_threshold = float(scores[3] + scores[4]) / 2
    _, mask = extractor.extract(_frames(1))
    assert mask[0].tolist() == [True] * 4 + [False] * 6


def test_top_k_larger_than_queries_pads_masked_zeros():
    extractor = RelationExtractor.tiny(top_k=25, score_threshold=0.0)  # 20 triplet queries
    features, mask = extractor.extract(_frames(2))
    assert features.shape == (2, 25, extractor.output_dim)
    assert mask[:, :20].all() and not mask[:, 20:].any()
    assert (features[:, 20:] == 0).all()


def test_batched_equals_frame_by_frame(tiny):
    frames = _frames(5)
    batched = RelationExtractor(tiny.model, batch_size=5, min_size=96, max_size=160, score_threshold=0.0)
    single = RelationExtractor(tiny.model, batch_size=1, min_size=96, max_size=160, score_threshold=0.0)
    torch.testing.assert_close(batched.extract(frames), single.extract(frames), rtol=1e-4, atol=1e-5)


def test_preprocess_resizes_and_pads_mixed_sizes(tiny):
    big = _frames(1, 300, 1200)[0]  # very wide: the long side caps at max_size
    small = _frames(1, 96, 128)[0]
    pixel_values, pixel_mask = tiny.preprocess([big, small])
    assert tiny.target_size(300, 1200) == (40, 160) and tiny.target_size(96, 128) == (96, 128)
    assert pixel_values.shape == (2, 3, 96, 160)
    assert not pixel_mask[0, :40].any() and pixel_mask[0, 40:].all()
    assert not pixel_mask[1, :, :128].any() and pixel_mask[1, :, 128:].all()
    features, mask = tiny.extract([big, small])
    assert features.shape == (2, 10, tiny.output_dim)


def test_very_large_frame_is_downscaled(tiny):
    frames = torch.full((1, 2000, 3600, 3), 128, dtype=torch.uint8)  # converted one frame at a time, then resized
    pixel_values, pixel_mask = tiny.preprocess(frames)
    assert pixel_values.shape == (1, 3, 89, 160) and not pixel_mask.any()
    features, mask = tiny.extract(frames)
    assert features.shape == (1, 10, tiny.output_dim) and torch.isfinite(features).all()


@pytest.mark.parametrize(
    "frames, match",
    [
        (torch.zeros(2, 32, 32, 3, dtype=torch.float32), "uint8"),
        (torch.zeros(2, 32, 32, dtype=torch.uint8), r"\[T, H, W, 3\]"),
        (torch.zeros(2, 32, 32, 4, dtype=torch.uint8), r"\[T, H, W, 3\]"),
        (torch.zeros(0, 32, 32, 3, dtype=torch.uint8), "empty"),
    ],
    ids=["float", "grayscale-no-channel", "rgba", "no-frames"],
)
def test_bad_frames_raise_clear_errors(tiny, frames, match):
    with pytest.raises(ValueError, match=match):
        tiny.extract(frames)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"top_k": 0}, "top_k"),
        ({"min_size": 200, "max_size": 100}, "max_size"),
        ({"backbone_block": "vit"}, "backbone"),
    ],
)
def test_bad_settings_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        RelationExtractor.tiny(**overrides)


def test_config_dict_is_a_cache_key():
    a, b = RelationExtractor.tiny(seed=0), RelationExtractor.tiny(seed=0)
    assert json.loads(json.dumps(a.config_dict())) == a.config_dict() == b.config_dict()
    assert RelationExtractor.tiny(seed=1).config_dict() != a.config_dict()  # other weights
    assert RelationExtractor.tiny(score_threshold=0.5).config_dict() != a.config_dict()
    assert RelationExtractor.tiny(top_k=5).config_dict() != a.config_dict()
    assert RelationExtractor.tiny(batch_size=1).config_dict() == a.config_dict()  # does not change the output


def test_tiny_is_deterministic_per_seed_and_frozen(tiny):
    frames = _frames(2)
    torch.testing.assert_close(
        RelationExtractor.tiny(seed=0).predict(frames).rel_logits, tiny.predict(frames).rel_logits
    )
    tiny.train()
    assert not tiny.training and not tiny.model.training


def test_real_clip_features_are_contract_valid(carphone_path):
    import decord
    reader = decord.VideoReader(str(carphone_path))
    indices = torch.linspace(0, len(reader) - 1, 4).round().long().tolist()
    frames = torch.from_numpy(reader.get_batch(indices).asnumpy())
    extractor = RelationExtractor.tiny(score_threshold=0.0)
    features, mask = extractor.extract(frames)
    validate_scene_inputs({"object": features[None]}, {"object": mask[None]}, {"object": extractor.output_dim},
                          num_frames=4)  # fmt: skip
    assert mask.all() and torch.isfinite(features).all()
    assert len(extractor.describe(frames[:1])[0]) == extractor.top_k


# ------------------------------------------------------------------------------------------ official pipeline


@pytest.fixture(scope="module")
def real_frames() -> dict:
    return reference_frames()


def _reference_checkpoint(tmp_path: Path, reference: dict) -> Path:
    """The reference's weights in the official container, with RelTR's training args (their nheads)."""
    config = RelTRConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in reference["model"].items()})
    path = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(nheads=config.num_heads, hidden_dim=config.hidden_dim)
    torch.save({"model": deterministic_weights(RelTR(config), seed=0), "args": args}, path)
    return path


def _assert_triplets_match(got: list, expected: list, frame_name: str) -> None:
    """Same triplets (classes, boxes within 1e-3 pixel, scores within 1e-4 relative): near-tied scores (random
    weights: ~2e-8 apart) may swap ranks, so they are matched as sets."""
    assert len(got) == len(expected), frame_name
    for t in expected:
        names = (VG150_OBJECT_CLASSES[t["subject"]], VG150_PREDICATE_CLASSES[t["predicate"]], VG150_OBJECT_CLASSES[t["object"]])
        boxes = torch.tensor(t["subject_box"] + t["object_box"])
        match = [g for g in got if (g.subject, g.predicate, g.object) == names
                 and (torch.tensor(g.boxes[0] + g.boxes[1]) - boxes).abs().max() < 1e-3]  # fmt: skip
        assert len(match) == 1, (frame_name, t)
        assert match[0].score == pytest.approx(t["score"], rel=1e-4)
    assert all(a.score >= b.score for a, b in zip(got, got[1:]))  # best first


@pytest.mark.parametrize("variant", ["inference", "capped"])
def test_official_mode_matches_the_official_pipeline_on_real_frames(tmp_path, real_frames, variant):
    """Whole extractor (PIL 8-bit resize, truncating size rule, optional cap, network, selection, pixel boxes) vs
    numbers produced by RelTR's own inference code on the same frames and weights (ResNet-18 RelTR at 200 px):
    ``inference`` — ``T.Resize(200)`` of inference.py (``max_size=None``); ``capped`` — the evaluation transform
    ``RandomResize([200], max_size=400)``."""
    reference = load_reference("reltr_r18_200.json")
    max_size = None if variant == "inference" else reference["max_size"]
    path = _reference_checkpoint(tmp_path, reference)
    everything = RelationExtractor.from_checkpoint(path, min_size=reference["min_size"], max_size=max_size,
                                                   probability_threshold=0.0)  # fmt: skip
    official = RelationExtractor.from_checkpoint(path, min_size=reference["min_size"], max_size=max_size)
    assert official.mode == "official" and official.probability_threshold == 0.3
    for name, expected in reference["frames"].items():
        assert list(everything.target_size(*expected["frame_size"])) == expected[f"{variant}_input_size"]
        if variant == "capped" and expected["capped_input_size"] == expected["inference_input_size"]:
            continue  # the cap changes only the wide frame (bikes, 272×640): the rest is the inference variant
        frame = torch.from_numpy(real_frames[name])[None]
        _assert_triplets_match(everything.describe(frame)[0], expected[f"{variant}_threshold_0.0"], name)
        # the official 0.3-per-probability rule keeps nothing from random weights, and neither do we
        assert official.describe(frame)[0] == [] and expected[f"{variant}_threshold_0.3"] == []
        features, mask = official.extract(frame)
        assert not mask.any() and (features == 0).all()


@pytest.mark.slow
def test_official_mode_matches_the_official_pipeline_full_size(tmp_path, real_frames):
    """The same with the real architecture (ResNet-50, 6+6 layers, 100 + 200 queries) at 800 px, capped at 1333."""
    reference = load_reference("reltr_vg_800.json")
    extractor = RelationExtractor.from_checkpoint(_reference_checkpoint(tmp_path, reference), probability_threshold=0.0)
    assert (extractor.min_size, extractor.max_size) == (800, 1333)
    for name, expected in reference["frames"].items():
        frame = torch.from_numpy(real_frames[name])[None]
        assert list(extractor.target_size(*expected["frame_size"])) == expected["capped_input_size"]
        _assert_triplets_match(extractor.describe(frame)[0], expected["capped_threshold_0.0"], name)
        assert expected["capped_best_score"] < 0.3**3  # random weights: the object scene is always masked


@pytest.mark.parametrize(
    "size, max_size, official, fast",
    [((480, 640), 1333, (800, 1066), (800, 1067)), ((720, 1280), 1333, (750, 1333), (750, 1333)),
     ((720, 1280), None, (800, 1422), None), ((640, 427), 1333, (1199, 800), (1199, 800)),
     ((300, 451), 1333, (800, 1202), (800, 1203)), ((800, 1000), 1333, (800, 1000), (800, 1000)),
     ((272, 640), 1333, (567, 1334), (567, 1333))],  # RelTR's rule overshoots its cap by a pixel here (bikes.mp4)
)  # fmt: skip
def test_size_rule_truncates_in_official_mode(size, max_size, official, fast):
    model = RelationExtractor.tiny().model
    assert RelationExtractor(model, max_size=max_size).target_size(*size) == official
    if fast is not None:
        assert RelationExtractor(model, max_size=max_size, mode="fast").target_size(*size) == fast


def test_official_resize_is_pil_8bit_and_fast_is_float(tiny, real_frames):
    """Official: PIL bilinear on uint8 (exactly torchvision's Resize on a PIL image); fast: float antialiased
    bilinear, within about one grey level."""
    import torchvision.transforms as T
    from PIL import Image

    frame = real_frames["chelsea"]
    official = RelationExtractor(tiny.model, min_size=96, max_size=160)
    fast = RelationExtractor(tiny.model, min_size=96, max_size=160, mode="fast")
    got, _ = official.preprocess(torch.from_numpy(frame)[None])
    ref = T.Compose([T.Resize(96), T.ToTensor(), T.Normalize(official.image_mean, official.image_std)])(Image.fromarray(frame))
    assert got.shape[-2:] == ref.shape[-2:] == (96, 144)
    assert torch.equal(got[0], ref)
    approx, _ = fast.preprocess(torch.from_numpy(frame)[None])
    grey = ((approx[0] - got[0]) * torch.tensor(official.image_std)[:, None, None] * 255).abs()
    assert 0 < grey.max() < 3


def test_official_selection_ranks_real_triplets_first():
    extractor = _confident(top_k=4)  # 'man riding horse' on every query but 0
    extractor.mode, extractor.probability_threshold = "official", 0.3
    features, mask = extractor.extract(_frames(2, 90, 120))
    assert mask.all()
    described = extractor.describe(_frames(1, 90, 120))[0]
    assert [(t.subject, t.predicate, t.object) for t in described] == [("man", "riding", "horse")] * 4


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 20, 3), (1, 20, 1, 3), (1, 2, 2, 3)],
    ids=["1x20", "20x1", "2x2"],
)
def test_tiny_and_elongated_frames_have_documented_behaviour(shape):
    """RelTR takes any frame size: the resize brings the short side to min_size and the cap bounds the long side
    (a 1×20 strip becomes 8×160 at min_size 96 / max_size 160); the output keeps the contract shape."""
    extractor = RelationExtractor.tiny(mode="official")
    frames = torch.full(shape, 100, dtype=torch.uint8)
    pixel_values, _ = extractor.preprocess(frames)
    h, w = extractor.target_size(*shape[1:3])
    assert pixel_values.shape[-2:] == (h, w) and max(h, w) <= 160
    features, mask = extractor.extract(frames)
    assert features.shape == (1, extractor.top_k, extractor.output_dim) and torch.isfinite(features).all()


@pytest.mark.parametrize("mode", ["official", "fast"])
def test_grayscale_frames_are_rejected_naming_the_layout(mode):
    extractor = RelationExtractor.tiny(mode=mode)
    for frames in (torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, 1, dtype=torch.uint8)):
        with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
            extractor.extract(frames)


def test_mode_and_cap_settings_are_checked_and_keyed():
    model = RelationExtractor.tiny().model
    with pytest.raises(ValueError, match="mode"):
        RelationExtractor(model, mode="paper")
    with pytest.raises(ValueError, match="max_size=None"):
        RelationExtractor(model, mode="fast", max_size=None)
    keys = {json.dumps(RelationExtractor(model, **kw).config_dict(), sort_keys=True)
            for kw in ({}, {"mode": "fast"}, {"max_size": None}, {"probability_threshold": 0.2})}  # fmt: skip
    assert len(keys) == 4


def test_reports_say_random_reltr_never_sees_an_object_scene(tmp_path, tiny_model):
    """Wherever the object scene is reported (model card, demo report), the random-weights masking is said plainly."""
    from trainers.demo import _report
    from processing.relation import RANDOM_WEIGHTS_OBJECT_NOTE
    from trainers.hub import model_card

    assert "always masked" in RANDOM_WEIGHTS_OBJECT_NOTE and "0.027" in RANDOM_WEIGHTS_OBJECT_NOTE
    assert RANDOM_WEIGHTS_OBJECT_NOTE in str(model_card(tiny_model, "org/icm-tiny"))
    result = {"recipe": {"data": {"mini_set": "mini"}, "name": "demo"}, "model_dir": str(tmp_path),
              "output_dir": str(tmp_path)}  # fmt: skip
    analysis = {"video": "v.mp4", "duration": 1.0, "num_windows": 1, "window": 1.0, "overlap": 0.0,
                "ground_truth": [], "segments": [], "timeline": str(tmp_path / "t.png")}  # fmt: skip
    assert RANDOM_WEIGHTS_OBJECT_NOTE in _report(tmp_path, result, {}, {}, analysis, {"total_s": 60.0})
    # and it is true: the tiny RelTR's best triplet is far below the threshold
    assert float(RelationExtractor.tiny().triplet_scores(RelationExtractor.tiny().predict(_frames(2))).max()) < 0.3**3
