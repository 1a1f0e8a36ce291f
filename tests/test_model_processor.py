"""IcmProcessor (model side): prompts, placeholders, padding, labels, save/load, extraction, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import make_tiny_model, make_tiny_processor, random_frames, random_scene_inputs

from modeling_icm import templates as T
from modeling_icm.scene_contract import SCENE_NAMES, collate_scene_features
from trainers.presets import tiny_icm_config


def _call(processor, config, n=2, **kwargs):
    feats, masks = random_scene_inputs(config, num_items=tuple(range(1, n + 1)))
    kwargs.setdefault("text", [T.combined_instruction("explicit")] * n)
    return processor(random_frames(n), scene_features=feats, scene_masks=masks, **kwargs)


def test_prompt_has_placeholders_and_timestamps(tiny_processor, tiny_config):
    times = [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5]
    feats, masks = random_scene_inputs(tiny_config, num_items=(2,))
    batch = tiny_processor(
        random_frames(1), text=[T.identify_instruction("implicit")], scene_features=feats, frame_timestamps=[times]
    )
    ids = batch["input_ids"][0]
    tok = tiny_processor.tokenizer
    assert int((ids == tok.convert_tokens_to_ids(T.SCENE_TOKEN)).sum()) == 8
    # 32x32 crops with patch 8: 16 patches + CLS per frame
    assert int((ids == tok.convert_tokens_to_ids(T.VIDEO_TOKEN)).sum()) == 8 * 17
    text = tok.decode(ids, skip_special_tokens=True)
    assert "The frames are sampled at 0s, 1.5s, 3s, 4.5s, 6s, 7.5s, 9s, 10.5s." in text
    assert T.identify_instruction("implicit") in text and text.rstrip().endswith("ASSISTANT:")
    assert batch["frame_timestamps"].tolist() == [times]
    # scene placeholders come first (Norm(y_moe + y_iec) + y_t + y_v, §3.4)
    first_scene = (ids == tok.convert_tokens_to_ids(T.SCENE_TOKEN)).nonzero()[0, 0]
    first_video = (ids == tok.convert_tokens_to_ids(T.VIDEO_TOKEN)).nonzero()[0, 0]
    assert first_scene < first_video


def test_generation_batches_are_left_padded(tiny_processor, tiny_config):
    batch = _call(tiny_processor, tiny_config, text=["Short.", T.combined_instruction("implicit")])
    assert "labels" not in batch
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert (batch["input_ids"][0][mask[0] == 0] == tiny_processor.tokenizer.pad_token_id).all()


def test_training_batches_are_right_padded_with_masked_labels(tiny_processor, tiny_config):
    answers = [
        T.combined_answer("explicit", "negative", [[2, 5]], "a sad face."),
        "The explicit visual sentiment is neutral.",
    ]
    batch = _call(tiny_processor, tiny_config, answers=answers)
    tok = tiny_processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert mask[:, 0].all() and mask[1, -1] == 0  # right padding
    special = {tok.convert_tokens_to_ids(T.SCENE_TOKEN), tok.convert_tokens_to_ids(T.VIDEO_TOKEN)}
    for i, answer in enumerate(answers):
        supervised = ids[i][labels[i] != -100]
        assert tok.decode(supervised, skip_special_tokens=True).strip() == answer
        assert supervised[-1].item() == tok.eos_token_id
        assert not any(t.item() in special for t in supervised)
        assert (labels[i][mask[i] == 0] == -100).all()


def test_truncation_never_cuts_placeholders(tiny_processor, tiny_config):
    answer = T.combined_answer("implicit", "Fire", [[1, 4]], "an orange fire flickers in the corner of the street.")
    full = _call(tiny_processor, tiny_config, n=1, answers=[answer])
    prompt_len = int((full["labels"][0] == -100).sum())
    cut = _call(tiny_processor, tiny_config, n=1, answers=[answer], max_length=prompt_len + 3)
    assert cut["input_ids"].shape[1] == prompt_len + 3
    assert int((cut["labels"][0] != -100).sum()) == 3
    with pytest.raises(ValueError, match="example 0.*placeholders are never truncated"):
        _call(tiny_processor, tiny_config, n=1, answers=[answer], max_length=prompt_len - 1)


def test_precomputed_batched_features(tiny_processor, tiny_config):
    feats, masks = random_scene_inputs(tiny_config, num_items=(2, 2))
    batched_f, batched_m = collate_scene_features(list(zip(feats, masks)))
    a = tiny_processor(random_frames(2), text=["x", "y"], scene_features=batched_f, scene_masks=batched_m)
    b = tiny_processor(random_frames(2), text=["x", "y"], scene_features=feats, scene_masks=masks)
    for s in SCENE_NAMES:
        assert torch.equal(a["scene_features"][s], b["scene_features"][s])
        assert torch.equal(a["scene_masks"][s], b["scene_masks"][s])


def test_collate_pads_with_masked_zeros(tiny_config):
    feats, masks = random_scene_inputs(tiny_config, num_items=(1, 3))
    f, m = collate_scene_features(list(zip(feats, masks)))
    assert f["face"].shape[:3] == (2, 8, 3) and m["face"].shape == (2, 8, 3)
    assert not m["face"][0, :, 1:].any() and (f["face"][0, :, 1:] == 0).all()
    assert (f["face"][~m["face"]] == 0).all()  # padded or absent items are zeros and masked


def test_processor_round_trip_and_auto(tmp_path, tiny_tokenizer):
    from transformers import AutoProcessor

    proc = make_tiny_processor(tiny_tokenizer)
    proc.save_pretrained(tmp_path)
    back = AutoProcessor.from_pretrained(tmp_path)
    assert type(back).__name__ == "IcmProcessor"
    assert (back.num_frames, back.num_scene_tokens, back.patch_size) == (8, 8, 8)
    assert back.scene_extraction == {"pipeline": "tiny"}
    assert back.video_tokens_per_frame == proc.video_tokens_per_frame == 17
    assert back.tokenizer.convert_tokens_to_ids(T.SCENE_TOKEN) == proc.scene_token_id


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": ["a", "b", "c"]}, "text has 3 entries for 2 videos"),
        ({"videos": [torch.zeros(6, 8, 8, 3, dtype=torch.uint8)] * 2}, "frame count mismatch"),
        ({"videos": [torch.zeros(8, 8, 8, dtype=torch.uint8)] * 2}, r"videos\[0\] must be"),
        ({"frame_timestamps": [[0.0] * 3, [0.0] * 8]}, r"frame_timestamps\[0\]"),
        ({"return_tensors": "np"}, "return_tensors"),
    ],
)
def test_processor_bad_input(tiny_processor, tiny_config, kwargs, message):
    feats, masks = random_scene_inputs(tiny_config, num_items=(1, 2))
    call = {"videos": random_frames(2), "text": ["a", "b"], "scene_features": feats, "scene_masks": masks}
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        tiny_processor(**call)


def test_processor_extracts_contract_valid_features_from_a_real_clip(carphone_path, tiny_tokenizer):
    """The whole path on a real video: decode, sample 8 frames, run the four (tiny) extractors with the real MTCNN,
    build the prompt — and a tiny ICM with the extractors' dimensions consumes it."""
    proc = make_tiny_processor(tiny_tokenizer)
    batch = proc([str(carphone_path)], text=[T.combined_instruction("explicit")])
    pipeline = proc.scene_pipeline
    times = batch["frame_timestamps"][0]
    assert len(times) == 8 and times[0] >= 0 and times[-1] <= 120 / 29.97 + 1e-6 and bool((times.diff() > 0).all())
    for scene in SCENE_NAMES:
        f, m = batch["scene_features"][scene], batch["scene_masks"][scene]
        assert f.dim() == 4 and f.shape[:2] == (1, 8) and f.shape[-1] == pipeline.output_dims[scene]
        assert m.shape == f.shape[:3] and m.dtype == torch.bool
        assert torch.isfinite(f).all() and (f[~m] == 0).all()
    assert batch["scene_masks"]["face"].any(), "MTCNN should find the talking person's face"
    assert batch["scene_masks"]["background"].all()
    model = make_tiny_model(tiny_icm_config(tiny_tokenizer, scene_dims=dict(pipeline.output_dims)))
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.logits).all() and out.router_probs.shape == (1, 8, 4)


def test_extraction_without_the_extractors_names_the_install(tmp_path, tiny_tokenizer):
    proc = make_tiny_processor(tiny_tokenizer)
    proc.save_pretrained(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["processing"] = None  # the extractors are not installed
        import torch
        from modeling_icm.processing_icm import IcmProcessor
        proc = IcmProcessor.from_pretrained({str(tmp_path)!r})
        try:
            proc([torch.zeros(8, 16, 16, 3, dtype=torch.uint8)], text=["x"])
        except ImportError as err:
            print("IMPORTERROR", err)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "IMPORTERROR" in result.stdout, result.stderr[-2000:]
    assert "pip install 'omnisila-icm[scene]'" in result.stdout
