"""ScenePipeline: the four extractors together, contract-valid features on real clips, config hash, loading."""

from __future__ import annotations

import json

import facenet_pytorch  # noqa: F401  (installed by scripts/setup.sh: a missing one fails, it does not skip)
import pytest
import segment_anything  # noqa: F401
import torch

from modeling_icm.scene_contract import validate_scene_inputs  # noqa: E402
from modeling_icm.templates import SCENE_NAMES  # noqa: E402
from processing.background import BackgroundExtractor  # noqa: E402
from processing.face import FaceExtractor  # noqa: E402
from processing.pipeline import ScenePipeline  # noqa: E402
from processing.video import sample_frames  # noqa: E402


@pytest.fixture(scope="module")
def pipeline() -> ScenePipeline:
    return ScenePipeline.tiny(seed=0)


@pytest.fixture(scope="module")
def carphone_clip(carphone_path):
    return sample_frames(carphone_path, num_frames=4)


def test_tiny_pipeline_produces_the_contract_on_a_real_clip(pipeline, carphone_clip):
    assert pipeline.scenes == SCENE_NAMES
    features, masks = pipeline.extract(carphone_clip.frames)
    assert set(features) == set(masks) == set(SCENE_NAMES)
    for scene in SCENE_NAMES:
        assert features[scene].shape == (4, pipeline.max_items[scene], pipeline.output_dims[scene])
        assert features[scene].dtype == torch.float32 and masks[scene].dtype == torch.bool
        assert torch.isfinite(features[scene]).all()
        assert (features[scene][~masks[scene]] == 0).all(), scene  # absent items are zeros and masked
    batched_f = {s: f[None] for s, f in features.items()}
    batched_m = {s: m[None] for s, m in masks.items()}
    validate_scene_inputs(batched_f, batched_m, pipeline.output_dims, num_frames=4, batch_size=1)
    assert masks["face"][:, 0].sum() >= 3  # the real MTCNN finds the talking man
    assert masks["background"].all()


def test_config_hash_is_stable_and_sensitive(pipeline):
    cfg = pipeline.config_dict()
    assert json.loads(json.dumps(cfg)) == cfg
    assert list(cfg["scenes"]) == list(SCENE_NAMES)
    assert len(pipeline.config_hash()) == 64
    again = ScenePipeline({s: pipeline.extractors[s] for s in reversed(SCENE_NAMES)})
    assert again.config_hash() == pipeline.config_hash()  # scene order is canonical
    other_face = ScenePipeline({**dict(pipeline.extractors), "face": FaceExtractor.tiny(seed=0, max_faces=2)})
    assert other_face.config_hash() != pipeline.config_hash()
    assert other_face.max_items["face"] == 2


def test_from_pretrained_loads_every_extractor_from_official_format_files(tmp_path, pipeline, carphone_clip):
    """Save the tiny weights the way each official release ships them, load them through from_pretrained, and get
    exactly the tiny pipeline's features."""
    ex = pipeline.extractors
    ex["face"].encoder.save_pretrained(tmp_path / "face_cnn")  # transformers layout (safetensors)
    ex["background"].encoder.save_pretrained(tmp_path / "vit")
    torch.save(ex["background"].sam.state_dict(), tmp_path / "sam_tiny.pth")  # SAM: a plain state dict
    torch.save(ex["action"].model.state_dict(), tmp_path / "higherhrnet.pth")  # HigherHRNet: a plain state dict
    torch.save({"model": ex["object"].model.state_dict()}, tmp_path / "reltr.pth")  # RelTR: {"model": ...}
    loaded = ScenePipeline.from_pretrained(
        face_encoder=str(tmp_path / "face_cnn"),
        background_encoder=str(tmp_path / "vit"),
        sam_checkpoint=str(tmp_path / "sam_tiny.pth"),
        sam_type="tiny",
        action_checkpoint=str(tmp_path / "higherhrnet.pth"),
        relation_checkpoint=str(tmp_path / "reltr.pth"),
        extractor_kwargs={
            "face": {"face_size": ex["face"].face_size},
            "background": {"points_per_side": ex["background"].points_per_side},
            "action": {"config": ex["action"].model.config, "input_size": 64, "nms_kernel": 3},
            "object": {"config": ex["object"].model.config, "min_size": 96, "max_size": 160},
        },
        device="cpu",
        mode="fast",  # the tiny pipeline's mode (from_pretrained defaults to the official pipelines)
    )
    assert loaded.output_dims == pipeline.output_dims
    frames = carphone_clip.frames[:2]
    got_f, got_m = loaded.extract(frames)
    want_f, want_m = pipeline.extract(frames)
    for scene in SCENE_NAMES:
        assert torch.equal(got_m[scene], want_m[scene]), scene
        torch.testing.assert_close(got_f[scene], want_f[scene], atol=1e-5, rtol=1e-5, msg=scene)


@pytest.mark.parametrize(
    "scene, missing", [("background", "sam_checkpoint"), ("action", "action_checkpoint"), ("object", "relation")]
)
def test_from_pretrained_names_the_missing_checkpoint(scene, missing):
    with pytest.raises(ValueError, match=missing):
        ScenePipeline.from_pretrained(scenes=(scene,))


def test_constructor_rejects_bad_extractor_maps(pipeline):
    face = pipeline.extractors["face"]
    with pytest.raises(ValueError, match="unknown scene 'faces'"):
        ScenePipeline({"faces": face})
    with pytest.raises(ValueError, match="extracts scene 'face'"):
        ScenePipeline({"background": face})
    with pytest.raises(TypeError, match="not a SceneExtractor"):
        ScenePipeline({"face": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="non-empty"):
        ScenePipeline({})


def test_subset_of_scenes_and_bad_frames(pipeline):
    bg = ScenePipeline({"background": BackgroundExtractor.tiny(seed=0)})
    assert bg.scenes == ("background",) and bg.output_dims == {"background": 32}
    with pytest.raises(ValueError, match="0 frames"):
        bg.extract(torch.zeros(0, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        bg.extract(torch.zeros(1, 32, 32, 3))


def test_no_people_no_faces_gives_valid_all_false_masks(pipeline):
    feats, masks = pipeline.extract(torch.zeros(2, 96, 96, 3, dtype=torch.uint8))
    assert not masks["face"].any() and (feats["face"] == 0).all()
    assert masks["background"].all()
    for scene in SCENE_NAMES:
        assert feats[scene].shape[:2] == masks[scene].shape == (2, pipeline.max_items[scene])


def test_frozen_and_movable(pipeline):
    assert not any(p.requires_grad for p in pipeline.parameters())
    pipeline.train()
    assert not pipeline.training
    assert pipeline.to("cpu") is pipeline and pipeline.device.type == "cpu"


@pytest.mark.slow
def test_real_size_architectures_match_the_contracts_default_dims():
    """The paper's extractors at their real sizes (random weights: nothing is downloaded) give DEFAULT_SCENE_DIMS."""
    from transformers import ResNetConfig, ViTConfig

    from modeling_icm.scene_contract import DEFAULT_SCENE_DIMS, DEFAULT_SCENE_ITEMS
    from processing.action import ActionExtractor, HigherHRNet, HigherHRNetConfig
    from processing.relation import RelationExtractor, RelTR, RelTRConfig

    resnet18 = ResNetConfig(
        embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"
    )
    real = ScenePipeline(
        {
            "face": FaceExtractor(encoder=resnet18),
            "action": ActionExtractor(HigherHRNet(HigherHRNetConfig()).eval()),
            "object": RelationExtractor(RelTR(RelTRConfig()).eval()),
            "background": BackgroundExtractor(encoder=ViTConfig(), sam_type="vit_b"),
        }
    )
    assert real.output_dims == DEFAULT_SCENE_DIMS
    assert real.max_items == DEFAULT_SCENE_ITEMS
    assert real.extractors["background"].vit_size == (224, 224)


@pytest.mark.parametrize(
    "kind, kwargs, face_class",
    [
        ("tiny", {"seed": 0, "scenes": ["face", "object"]}, "FaceExtractor"),
        ("lite", {"seed": 0, "scenes": ["face", "object"]}, "LiteFaceExtractor"),
    ],
)  # fmt: skip
def test_from_kind_builds_each_kind_by_name(kind, kwargs, face_class):
    """One factory turns a pipeline name into extractors (the CLI, recipes, distributed extraction and the
    processor call it); the built pipeline is the one the named constructor builds."""
    from processing.pipeline import PIPELINE_KINDS

    assert kind in PIPELINE_KINDS
    built = ScenePipeline.from_kind(kind, **kwargs)
    assert built.scenes == ("face", "object") and type(built.extractors["face"]).__name__ == face_class
    direct = getattr(ScenePipeline, kind)(**kwargs)
    assert built.config_hash() == direct.config_hash()


def test_from_kind_names_an_unknown_kind():
    with pytest.raises(ValueError, match="'paper'.*|.*'paper'"):
        ScenePipeline.from_kind("paper")


def test_distributed_extraction_builds_the_lite_pipeline():
    """``python -m processing.distributed --pipeline lite`` builds the real offline extractors through the factory."""
    from processing.distributed import build_pipeline, parse_args

    built = build_pipeline(parse_args(["--cache-dir", "unused", "--pipeline", "lite", "--scenes", "face,background"]))
    assert built.scenes == ("face", "background")
    assert [type(e).__name__ for e in built.extractors.values()] == ["LiteFaceExtractor", "LiteBackgroundExtractor"]


@pytest.mark.parametrize(
    "kind, checkpoints, expected",
    [("tiny", (None, None, None), "tiny"), (None, (None, None, None), "lite"),
     (None, (None, "reltr.pth", None), "pretrained"), ("lite", ("hrnet.pth", None, None), "lite")],
)  # fmt: skip
def test_pipeline_kind_of_a_command_line(kind, checkpoints, expected):
    from processing.pipeline import pipeline_kind

    assert pipeline_kind(kind, *checkpoints) == expected


def test_from_options_checks_the_checkpoints_and_keeps_the_kinds_options(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^relation_checkpoint .*reltr\.pth: file not found"):
        ScenePipeline.from_options(relation_checkpoint=tmp_path / "reltr.pth", scenes=("object",))
    with pytest.raises(ValueError, match="'paper'"):
        ScenePipeline.from_options("paper")
    tiny = ScenePipeline.from_options("tiny", scenes=("face", "object"), seed=3, sam_checkpoint=tmp_path / "x.pth")
    assert tiny.scenes == ("face", "object")
    assert tiny.config_hash() == ScenePipeline.tiny(seed=3, scenes=("face", "object")).config_hash()
