"""HigherHRNet action extractor (processing/action.py): official checkpoint layout, decoding, x_a contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import checkpoint_layout
from official_references import deterministic_weights, load_reference, reference_frames

from modeling_icm.scene_contract import DEFAULT_SCENE_DIMS
from processing.action import (
    ActionExtractor,
    HigherHRNet,
    HigherHRNetConfig,
    OfficialGeometry,
    PersonPoses,
    PoseDecodingConfig,
    aggregate_outputs,
    decode_poses,
    encode_persons,
    load_higherhrnet_state_dict,
    munkres_assignment,
    warp_affine_bilinear,
)
from processing.video import sample_frames

LAYOUT = checkpoint_layout("higherhrnet_w32_512.json")


@pytest.fixture(scope="module")
def layout() -> dict:
    assert LAYOUT.exists(), f"the official layout file ships with the package: {LAYOUT}"
    return json.loads(LAYOUT.read_text())


@pytest.fixture(scope="module")
def carphone_frames(carphone_path) -> torch.Tensor:
    return sample_frames(carphone_path, num_frames=8, max_side=96).frames


def random_official_state_dict(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the official names and shapes (BN variances positive, counters int64)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in layout["state_dict"].items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(1000, dtype=torch.long)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05
    return sd


# ------------------------------------------------------------------------------------------ official layout
def test_state_dict_is_exactly_the_official_layout(layout):
    with torch.device("meta"):  # names, shapes and counts only: no need to initialise 28.6 M weights
        model = HigherHRNet(HigherHRNetConfig())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == layout["state_dict"]
    assert list(ours) == list(layout["state_dict"])  # same order too
    assert sum(p.numel() for p in model.parameters()) == 28_645_331 == layout["num_parameters"]


def test_default_output_dim_is_the_contract_dim():
    with torch.device("meta"):
        model = HigherHRNet()
    extractor = ActionExtractor(model)
    assert extractor.output_dim == DEFAULT_SCENE_DIMS["action"] == 595
    assert extractor.max_items == 4 and extractor.scene == "action"
    assert extractor.decoding.input_size == 512


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory, layout) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = random_official_state_dict(layout)
    path = tmp_path_factory.mktemp("hrnet") / "pose_higher_hrnet_w32_512.pth"
    torch.save(sd, path)  # the official container: a plain state dict
    return path, sd


def test_official_checkpoint_loads_strict_through_the_user_path(official_checkpoint, carphone_frames):
    path, sd = official_checkpoint
    extractor = ActionExtractor.from_checkpoint(path, input_size=64, max_persons=3)
    loaded = extractor.model.state_dict()
    assert list(loaded) == list(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert not any(p.requires_grad for p in extractor.parameters()) and not extractor.training
    features, mask = extractor.extract(carphone_frames[:1])
    assert features.shape == (1, 3, 595) and features.dtype == torch.float32
    assert mask.shape == (1, 3) and mask.dtype == torch.bool
    assert torch.isfinite(features).all()
    assert extractor.config_dict()["weights_sha256"] != ActionExtractor.tiny().config_dict()["weights_sha256"]


@pytest.mark.parametrize("container", ["module_prefix", "state_dict_key", "safetensors"])
def test_other_containers_load(tmp_path, container):
    model = ActionExtractor.tiny(seed=3).model
    sd = model.state_dict()
    if container == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        obj = {f"module.{k}": v for k, v in sd.items()} if container == "module_prefix" else {"state_dict": sd}
        torch.save(obj, path)
    loaded = HigherHRNet.from_official_checkpoint(path, config=model.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())


def test_checkpoint_errors_name_the_file(tmp_path):
    model = ActionExtractor.tiny().model
    sd = model.state_dict()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ActionExtractor.from_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"\x80\x04not a torch file")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_higherhrnet_state_dict(bad)
    incomplete = dict(sd)
    incomplete.pop("final_layers.1.weight")
    torch.save(incomplete, tmp_path / "incomplete.pth")
    with pytest.raises(ValueError, match=r"(?s)incomplete.pth.*Missing.*final_layers\.1\.weight"):
        HigherHRNet.from_official_checkpoint(tmp_path / "incomplete.pth", config=model.config)
    # the full W32 layout does not fit the tiny one: strict loading refuses it
    torch.save(sd, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="tiny.pth"):
        ActionExtractor.from_checkpoint(tmp_path / "tiny.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "not_a_state_dict.pth")
    with pytest.raises(ValueError, match="(?s)not_a_state_dict.pth.*not a state dict"):
        load_higherhrnet_state_dict(tmp_path / "not_a_state_dict.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="(?s)evil.pth.*weights_only"):
        load_higherhrnet_state_dict(path)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ decoding
def _gaussian(h: int, w: int, x: int, y: int, peak: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return peak * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def _two_people(h: int = 64, w: int = 64, weak_joint: int | None = None):
    """Heatmaps and tags of two synthetic people: A (tag 0) on the left, B (tag 3) on the right."""
    a = [(6 + (j % 4) * 3, 4 + j * 3) for j in range(17)]
    b = [(40 + (j % 3) * 4, 6 + j * 3) for j in range(17)]
    heat = torch.zeros(1, 17, h, w)
    tags = torch.full((1, 17, h, w), 10.0)
    for j in range(17):
        heat[0, j] += _gaussian(h, w, *a[j], peak=0.9)
        heat[0, j] += _gaussian(h, w, *b[j], peak=0.05 if j == weak_joint else 0.7)
        for (x, y), tag in ((a[j], 0.0), (b[j], 3.0)):
            tags[0, j, y - 2 : y + 3, x - 2 : x + 3] = tag + 0.01 * j
    return heat, tags, a, b


def test_decode_two_people_by_tags():
    heat, tags, a, b = _two_people()
    (poses,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3))
    assert poses.keypoints.shape == (2, 17, 3)
    best, second = poses.keypoints
    assert [tuple(map(int, p[:2])) for p in best] == a  # A has the higher scores: first
    assert [tuple(map(int, p[:2])) for p in second] == b
    assert poses.scores.tolist() == pytest.approx([0.9, 0.7], abs=1e-4)
    assert poses.tags.tolist() == pytest.approx([0.08, 3.08], abs=1e-4)


def test_refinement_recovers_a_weak_joint_with_the_persons_tag():
    heat, tags, a, b = _two_people(weak_joint=9)
    (refined,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3, refine=True))
    (raw,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3, refine=False))
    person_b = refined.keypoints[1]
    assert tuple(map(int, person_b[9, :2])) == b[9] and person_b[9, 2] == pytest.approx(0.05, abs=1e-3)
    assert raw.keypoints[1, 9].tolist() == [0.0, 0.0, 0.0]  # not detected, not refined


def test_max_persons_and_thresholds():
    heat, tags, a, b = _two_people()
    (one,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3, max_persons=1))
    assert one.keypoints.shape[0] == 1 and [tuple(map(int, p[:2])) for p in one.keypoints[0]] == a
    (none,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3, detection_threshold=0.95))
    assert none.keypoints.shape[0] == 0
    # a tag threshold larger than the tag gap merges both people's joints into one person per joint pair
    (merged,) = decode_poses(heat, tags, PoseDecodingConfig(nms_kernel=3, tag_threshold=5.0))
    assert merged.keypoints.shape[0] == 2 and (merged.keypoints[..., 2] > 0.5).sum() == 34


def test_aggregation_averages_upsampled_heatmaps():
    low = torch.zeros(1, 34, 8, 8)
    low[0, :17] = 1.0
    low[0, 17:] = 2.0
    high = torch.zeros(1, 17, 16, 16)
    heat, tags = aggregate_outputs([low, high], 17)
    assert heat.shape == (1, 17, 16, 16) and torch.allclose(heat, torch.full_like(heat, 0.5))
    assert tags.shape == (1, 17, 16, 16) and torch.allclose(tags, torch.full_like(tags, 2.0))


def test_encode_persons_layout_and_feature_sampling():
    h, w, c = 16, 20, 3
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    feats = torch.cat((xs, ys, torch.ones(1, 1, h, w)), dim=1).repeat(2, 1, 1, 1)
    kp = torch.stack((torch.arange(17.0) % w, torch.arange(17.0) % h, torch.linspace(0.2, 1, 17)), -1)
    poses = [PersonPoses(kp[None], torch.tensor([0.6]), torch.zeros(1)), PersonPoses(torch.zeros(0, 17, 3), torch.zeros(0), torch.zeros(0))]
    x_a, mask = encode_persons(poses, feats, max_persons=2)
    assert x_a.shape == (2, 2, 17 * 3 + 17 * c)
    assert mask.tolist() == [[True, False], [False, False]]
    person = x_a[0, 0]
    keypoints = person[:51].view(17, 3)
    assert torch.allclose(keypoints[:, 0], (kp[:, 0] + 0.5) / w) and torch.allclose(keypoints[:, 1], (kp[:, 1] + 0.5) / h)
    assert torch.allclose(keypoints[:, 2], kp[:, 2])
    sampled = person[51:].view(17, c)  # the feature map sampled at each keypoint: its own coordinates back
    assert torch.allclose(sampled[:, 0], kp[:, 0], atol=1e-5) and torch.allclose(sampled[:, 1], kp[:, 1], atol=1e-5)
    assert (x_a[0, 1] == 0).all() and (x_a[1] == 0).all()


# ------------------------------------------------------------------------------------------------ extractor
def test_tiny_extract_contract_on_real_frames(carphone_frames):
    extractor = ActionExtractor.tiny()
    assert extractor.output_dim == 17 * 3 + 17 * 8 and extractor.max_items == 4
    features, mask = extractor.extract(carphone_frames)
    assert features.shape == (8, 4, extractor.output_dim) and features.dtype == torch.float32
    assert mask.shape == (8, 4) and mask.dtype == torch.bool
    assert (features[~mask] == 0).all()
    kp = features[mask][:, :51].view(-1, 17, 3)
    assert ((kp[..., :2] >= 0) & (kp[..., :2] <= 1)).all()
    # frozen and deterministic; a different seed is a different model
    again, mask_again = ActionExtractor.tiny().extract(carphone_frames)
    assert torch.equal(again, features) and torch.equal(mask_again, mask)
    other, _ = ActionExtractor.tiny(seed=1).extract(carphone_frames)
    assert not torch.equal(other, features)


def test_batching_over_frames_does_not_change_the_output(carphone_frames):
    batched = ActionExtractor.tiny(batch_size=8).extract(carphone_frames[:4])
    single = ActionExtractor.tiny(batch_size=1).extract(carphone_frames[:4])
    assert torch.equal(batched[1], single[1])
    assert torch.allclose(batched[0], single[0], atol=1e-4)


def test_frames_without_people_give_all_false_masks(carphone_frames):
    extractor = ActionExtractor.tiny()
    heads = extractor.model.final_layers
    for layer in heads:  # heatmaps far below the detection threshold everywhere: nobody in the frame
        layer.weight.zero_()
        layer.bias.fill_(-10.0)
    features, mask = extractor.extract(carphone_frames[:3])
    assert features.shape == (3, 4, extractor.output_dim)
    assert not mask.any() and (features == 0).all()


def test_keypoints_report_names_and_normalised_coordinates(carphone_frames):
    persons = ActionExtractor.tiny(max_persons=2).keypoints(carphone_frames[:2])
    assert len(persons) == 2
    for frame in persons:
        assert len(frame) <= 2
        for person in frame:
            assert list(person["keypoints"])[:3] == ["nose", "left_eye", "right_eye"]
            assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y, _ in person["keypoints"].values())


def test_config_dict_is_a_cache_key():
    a = ActionExtractor.tiny()
    cfg = a.config_dict()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg == ActionExtractor.tiny().config_dict()
    assert cfg != ActionExtractor.tiny(detection_threshold=0.2).config_dict()
    assert cfg != ActionExtractor.tiny(seed=5).config_dict()
    assert cfg["decoding"]["max_persons"] == 4 and cfg["model"]["width"] == 8


def test_input_is_resized_to_multiples_of_32():
    extractor = ActionExtractor.tiny(input_size=64)
    assert extractor.input_size_for(144, 176) == (64, 64)  # 64 x 78.2 -> 64 x 64
    assert extractor.input_size_for(720, 1280) == (64, 128)
    assert ActionExtractor(extractor.model, input_size=512).input_size_for(144, 176) == (512, 640)
    x = extractor.preprocess(torch.full((2, 50, 70, 3), 255, dtype=torch.uint8))
    assert x.shape == (2, 3, 64, 96)
    assert torch.allclose(x[0, :, 10, 10], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


@pytest.mark.parametrize(
    "frames, match",
    [
        (torch.zeros(2, 32, 32, 3), "uint8"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), "T, H, W, 3"),
        (torch.zeros(2, 32, 32, 4, dtype=torch.uint8), "T, H, W, 3"),
    ],
)
def test_bad_frames_are_rejected(frames, match):
    with pytest.raises(ValueError, match=match):
        ActionExtractor.tiny().extract(frames)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"max_persons": 0}, "max_persons"), ({"nms_kernel": 4}, "nms_kernel"), ({"input_size": 100}, "input_size")],
)
def test_bad_decoding_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ActionExtractor.tiny(**kwargs)


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="max_people"):
        ActionExtractor.tiny(max_people=3)


def test_heavy_packages_not_imported_at_module_import():
    code = (
        "import sys, processing.action, processing.video; "
        "print(sorted(m for m in ('decord', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compares CPU with CUDA: no CUDA device is present")
@pytest.mark.parametrize("mode", ["fast", "official"])
def test_extract_on_cuda_matches_cpu(carphone_frames, mode):
    cpu = ActionExtractor.tiny(mode=mode)
    gpu = ActionExtractor.tiny(mode=mode).to("cuda")
    f_cpu, m_cpu = cpu.extract(carphone_frames[:4])
    f_gpu, m_gpu = gpu.extract(carphone_frames[:4])
    assert f_gpu.device.type == "cpu" and torch.equal(m_cpu, m_gpu)
    assert torch.allclose(f_cpu, f_gpu, atol=1e-3)


@pytest.mark.slow
def test_full_w32_at_512_on_real_frames(official_checkpoint, carphone_frames):
    extractor = ActionExtractor.from_checkpoint(official_checkpoint[0])
    features, mask = extractor.extract(carphone_frames[:2])
    assert features.shape == (2, 4, 595) and mask.shape == (2, 4)
    assert torch.isfinite(features).all() and (features[~mask] == 0).all()


@pytest.mark.parametrize(
    "overrides, scale",
    [({"tag_per_joint": False}, 2), ({"num_deconvs": 2}, 1), ({"deconv_kernel": 3}, 2), ({"width": 4}, 2)],
)
def test_architecture_variants_run(carphone_frames, overrides, scale):
    extractor = ActionExtractor.tiny(**overrides)
    c = extractor.model.config
    with torch.no_grad():
        out = extractor.model(extractor.preprocess(carphone_frames[:2]))
    assert out.outputs[0].shape[1] == c.num_joints + c.num_tag_maps
    assert out.features.shape[-2:] == (64 // scale, 64 // scale) and out.features.shape[1] == c.width
    features, mask = extractor.extract(carphone_frames[:2])
    assert features.shape == (2, 4, 17 * 3 + 17 * c.width) and mask.shape == (2, 4)


# ------------------------------------------------------------------------------------------ official pipeline


@pytest.fixture(scope="module")
def real_frames() -> dict:
    return reference_frames()


def _official_extractor(tmp_path: Path, reference: dict, **kwargs) -> ActionExtractor:
    """Our extractor on the reference's weights, through the user path: the official container, loaded strict."""
    config = HigherHRNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in reference["model"].items()})
    with torch.device("meta"):
        shapes = HigherHRNet(config)
    model = HigherHRNet(config)
    assert list(shapes.state_dict()) == list(model.state_dict())
    path = tmp_path / "pose_higher_hrnet.pth"
    torch.save(deterministic_weights(model, seed=0), path)
    return ActionExtractor.from_checkpoint(path, config=config, input_size=reference["input_size"], **kwargs)


def _assert_matches_official(extractor: ActionExtractor, frames: dict, reference: dict) -> None:
    for name, expected in reference["frames"].items():
        frame = torch.from_numpy(frames[name])[None]
        (pose,), _ = extractor.detect(frame)
        assert list(pose.frame_size) == expected["frame_size"] and list(pose.input_size) == expected["input_size"]
        n = len(expected["persons"])
        assert pose.keypoints.shape[0] == min(n, extractor.max_items), name
        for k, person in enumerate(expected["persons"][: extractor.max_items]):
            assert float(pose.scores[k]) == pytest.approx(person["score"], rel=1e-5, abs=1e-4), (name, k)
            ref = torch.tensor(person["keypoints"])
            got = pose.frame_keypoints[k]
            shift = (got[:, :2] - ref[:, :2]).norm(dim=-1)
            assert shift.max() < 1.0, (name, k)  # within a pixel of the frame
            # float32 sums over a deep net differ in the last digits between CPU kernels; where two heatmap pixels
            # nearly tie, that can move one joint by a sub-pixel step to a pixel of another value: at most one
            # joint per person may do so, every other joint's value agrees
            same = shift < 0.05
            assert int((~same).sum()) <= 1, (name, k)
            torch.testing.assert_close(got[same, 2], ref[same, 2], atol=1e-3, rtol=1e-5)


def test_official_warp_is_bit_identical_to_opencv(real_frames):
    """The keep-aspect resize-and-pad equals OpenCV's (classic fixed-point, 4.x) warpAffine output bit for bit:
    the sha256 of the official pipeline's warped images."""
    reference = load_reference("higherhrnet_w8_128.json")
    import hashlib

    for name, expected in reference["frames"].items():
        frame = real_frames[name]
        g = OfficialGeometry.for_frame(*frame.shape[:2], reference["input_size"])
        assert [g.input_height, g.input_width] == expected["input_size"]
        warped = warp_affine_bilinear(frame, g.forward, g.input_width, g.input_height)
        assert hashlib.sha256(warped.tobytes()).hexdigest() == expected["warped_sha256"], name


def test_official_mode_matches_the_official_pipeline_on_real_frames(tmp_path, real_frames):
    """Whole extractor (preprocessing, flip test, projection, grouping, adjustment, refinement, inverse affine) vs
    numbers produced by the official HigherHRNet test code on the same frames and weights (a W8 network with the
    official stem, 128-pixel input): the 8 best persons, keypoints within a pixel, scores within 1e-3."""
    reference = load_reference("higherhrnet_w8_128.json")
    extractor = _official_extractor(tmp_path, reference, max_persons=8)
    assert extractor.decoding.mode == "official" and extractor.decoding.flip_test
    _assert_matches_official(extractor, real_frames, reference)
    features, mask = extractor.extract(torch.from_numpy(real_frames["chelsea"])[None])
    assert mask.all() and features.shape == (1, 8, 17 * 3 + 17 * 8)
    kp = features[0, :, :51].view(8, 17, 3)
    (pose,), _ = extractor.detect(torch.from_numpy(real_frames["chelsea"])[None])
    expected_xy = (pose.frame_keypoints[..., :2] / torch.tensor([451.0, 300.0])).clamp(0, 1)
    torch.testing.assert_close(kp[..., :2], expected_xy)


@pytest.mark.slow
def test_official_mode_matches_the_official_pipeline_full_w32_512(tmp_path, real_frames):
    """The same with the real architecture (HRNet-W32, 512-pixel input) on one photograph."""
    reference = load_reference("higherhrnet_w32_512.json")
    _assert_matches_official(_official_extractor(tmp_path, reference, max_persons=8), real_frames, reference)


@pytest.mark.parametrize(
    "frame_size, input_size, expected",
    [((300, 451), 512, (512, 832)), ((640, 427), 512, (768, 512)), ((144, 176), 512, (512, 640)),
     ((720, 1280), 512, (512, 960)), ((512, 512), 512, (512, 512)), ((300, 451), 100, (128, 192))],
)  # fmt: skip
def test_official_input_keeps_the_aspect_ratio(frame_size, input_size, expected):
    g = OfficialGeometry.for_frame(*frame_size, input_size)
    assert (g.input_height, g.input_width) == expected
    # one uniform scale, the frame centred: the frame centre maps to the input centre
    assert g.forward[0, 0] == pytest.approx(g.forward[1, 1]) and g.forward[[0, 1], [1, 0]] == pytest.approx([0, 0], abs=1e-9)
    cx, cy = int(frame_size[1] / 2 + 0.5), int(frame_size[0] / 2 + 0.5)
    assert g.forward @ np.array([cx, cy, 1.0]) == pytest.approx([expected[1] / 2, expected[0] / 2])
    assert g.inverse @ np.r_[g.forward @ np.array([10.0, 20.0, 1.0]), 1.0] == pytest.approx([10.0, 20.0])


@pytest.mark.parametrize(
    "cost, expected",
    [
        ([[4, 1, 3], [2, 0, 5], [3, 2, 2]], [(0, 1), (1, 0), (2, 2)]),
        # ties: the textbook scan's choice, as the munkres package (1.1.4) the official grouping calls returns it
        ([[1, 1], [1, 1]], [(0, 0), (1, 1)]),
        ([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [(0, 2), (1, 0), (2, 1)]),
        ([[5, 9, 1]], [(0, 2)]),  # fewer rows than columns: padded with zero rows
        ([[-0.5, -0.25, 99.5], [-0.75, 99.0, -0.5]], [(0, 0), (1, 2)]),
        ([[0, 1e10], [0, 1e10]], [(0, 0), (1, 1)]),
    ],
)
def test_munkres_assignment(cost, expected):
    assert munkres_assignment(np.array(cost, dtype=float)) == expected


def test_munkres_is_a_minimum_cost_assignment():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    for _ in range(20):
        cost = np.round(rng.random((rng.integers(1, 9), rng.integers(1, 9))) * 4) * 100 - rng.random((1, 1))
        rows, cols = linear_sum_assignment(cost)
        pairs = munkres_assignment(cost)
        assert len(pairs) == cost.shape[0] if cost.shape[0] <= cost.shape[1] else True
        real = [(r, c) for r, c in pairs if c < cost.shape[1]]
        assert sum(cost[r, c] for r, c in real) == pytest.approx(cost[rows, cols].sum())


def test_fast_mode_is_the_default_and_a_different_cache_key(carphone_frames):
    fast = ActionExtractor.tiny()
    official = ActionExtractor.tiny(mode="official")
    assert fast.decoding.mode == "fast" and official.decoding.mode == "official"
    assert fast.config_dict() != official.config_dict()
    assert fast.input_size_for(144, 176) == (64, 64) and official.input_size_for(144, 176) == (64, 128)
    features, mask = official.extract(carphone_frames[:2])
    assert features.shape == (2, 4, fast.output_dim) and (features[~mask] == 0).all()
    kp = features[mask][:, :51].view(-1, 17, 3)
    assert ((kp[..., :2] >= 0) & (kp[..., :2] <= 1)).all()
    for frame in official.keypoints(carphone_frames[:1]):
        assert all(0 <= x <= 1 and 0 <= y <= 1 for p in frame for x, y, _ in p["keypoints"].values())
    # the official mode batches frame + mirror image: batching over frames does not change its output either
    one = ActionExtractor.tiny(mode="official", batch_size=1).extract(carphone_frames[:3])
    three = ActionExtractor.tiny(mode="official", batch_size=3).extract(carphone_frames[:3])
    assert torch.equal(one[1], three[1]) and torch.allclose(one[0], three[0], atol=1e-4)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "shape, match",
    [((1, 20, 20, 3), "smaller than HigherHRNet's stride"), ((1, 1, 20, 3), "smaller than HigherHRNet's stride"),
     ((1, 31, 400, 3), "smaller than HigherHRNet's stride"), ((1, 40, 400, 3), "aspect ratio"),
     ((1, 64, 64), r"\[T, H, W, 3\]"), ((1, 64, 64, 1), r"\[T, H, W, 3\]")],
    ids=["below-stride", "1x20", "thin", "aspect-10", "grayscale", "grayscale-1-channel"],
)  # fmt: skip
def test_bad_frame_sizes_and_grayscale_get_clear_errors(shape, match):
    extractor = ActionExtractor.tiny(mode="official")
    with pytest.raises(ValueError, match=match) as info:
        extractor.extract(torch.zeros(shape, dtype=torch.uint8))
    if "stride" in match or "aspect" in match:
        assert f"{shape[1]}x{shape[2]}" in str(info.value)  # names the frame size
    if "T, H, W" in match:
        with pytest.raises(ValueError, match=match):
            ActionExtractor.tiny(mode="fast").extract(torch.zeros(shape, dtype=torch.uint8))


@pytest.mark.parametrize("shape, size", [((1, 20, 20, 3), (64, 64)), ((1, 1, 20, 3), (64, 1280))])
def test_fast_mode_stretches_small_frames_as_documented(shape, size):
    extractor = ActionExtractor.tiny(mode="fast")
    assert extractor.preprocess(torch.zeros(shape, dtype=torch.uint8)).shape[-2:] == size
    features, mask = extractor.extract(torch.full(shape, 80, dtype=torch.uint8))
    assert features.shape == (1, 4, extractor.output_dim) and (features[~mask] == 0).all()


def test_aspect_ratio_limit_is_a_field():
    extractor = ActionExtractor.tiny(mode="official", max_aspect_ratio=12.0)
    features, mask = extractor.extract(torch.full((1, 40, 400, 3), 90, dtype=torch.uint8))
    assert features.shape == (1, 4, extractor.output_dim)
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        ActionExtractor.tiny(max_aspect_ratio=0.5)


def test_checkpoint_of_another_width_is_named_not_mis_shaped(tmp_path):
    """A W48 checkpoint given to the W32 builder: a clear error naming both widths; without a config the width is
    read off the checkpoint (documented), so a checkpoint of another width builds that width."""
    w48_head = {"final_layers.0.weight": torch.zeros(34, 48, 1, 1)}
    torch.save(w48_head, tmp_path / "pose_higher_hrnet_w48_640.pth")
    with pytest.raises(ValueError, match=r"(?s)w48_640.pth.*W48.*W32.*width=48"):
        HigherHRNet.from_official_checkpoint(tmp_path / "pose_higher_hrnet_w48_640.pth", config=HigherHRNetConfig())
    other = ActionExtractor.tiny(width=12).model  # the same mechanism end to end with a small model
    torch.save(other.state_dict(), tmp_path / "w12.pth")
    tiny_w8 = ActionExtractor.tiny().model.config
    with pytest.raises(ValueError, match="W12.*W8"):
        HigherHRNet.from_official_checkpoint(tmp_path / "w12.pth", config=tiny_w8)
    loaded = HigherHRNet.from_official_checkpoint(
        tmp_path / "w12.pth", stem_channels=8, stem_blocks=1, stage_modules=(1, 1, 1), stage_blocks=1, deconv_blocks=1
    )
    assert loaded.config.width == 12


def test_paper_preset_defaults_to_the_official_pipelines(tmp_path):
    """ScenePipeline.from_pretrained (the paper's extractors) builds HigherHRNet and RelTR in the official mode;
    ``mode="fast"`` or a per-scene override picks the fast path."""
    from processing.pipeline import ScenePipeline
    from processing.relation import RelationExtractor

    hrnet = ActionExtractor.tiny()
    torch.save(hrnet.model.state_dict(), tmp_path / "hrnet.pth")
    reltr = RelationExtractor.tiny().model.save_checkpoint(tmp_path / "reltr.pth")
    kwargs = dict(scenes=("action", "object"), action_checkpoint=str(tmp_path / "hrnet.pth"), relation_checkpoint=str(reltr))
    extra = {"action": {"config": hrnet.model.config, "input_size": 64}, "object": {"min_size": 96, "max_size": 160}}
    paper = ScenePipeline.from_pretrained(**kwargs, extractor_kwargs=extra)
    assert paper.extractors["action"].decoding.mode == "official" and paper.extractors["object"].mode == "official"
    fast = ScenePipeline.from_pretrained(**kwargs, extractor_kwargs=extra, mode="fast")
    assert fast.extractors["action"].decoding.mode == "fast" and fast.extractors["object"].mode == "fast"
    mixed = ScenePipeline.from_pretrained(**kwargs, extractor_kwargs={**extra, "object": {**extra["object"], "mode": "fast"}})
    assert mixed.extractors["action"].decoding.mode == "official" and mixed.extractors["object"].mode == "fast"
    assert paper.config_hash() != fast.config_hash()
