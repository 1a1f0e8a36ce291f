"""The data collator of ICM: a list of examples (``trainers.data``) -> an ``IcmBatch`` through the ``IcmProcessor``.

Training batches use right padding and labels that are -100 on the prompt, the ``<video>`` and ``<scene>``
placeholders and the padding (the processor does it; truncation only ever cuts an answer's tail, never a
placeholder). Generation batches (``with_answers=False``) use left padding and carry no labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class IcmDataCollator:
    """Args:
    processor: an ``IcmProcessor``.
    with_answers: add the answers as targets (training) or not (generation prompts).
    max_length: token budget handed to the processor (answers may be truncated, placeholders never).
    """

    processor: Any
    with_answers: bool = True
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]):
        if not examples:
            raise ValueError("IcmDataCollator got an empty batch")
        for index, example in enumerate(examples):
            for field_name in ("frames", "instruction", "scene_features"):
                if field_name not in example:
                    raise ValueError(f"example {index} ({example.get('clip_id', '?')}) has no {field_name!r} field")
            if self.with_answers and "answer" not in example:
                raise ValueError(f"example {index} ({example.get('clip_id', '?')}) has no 'answer' field")
        batch = self.processor(
            videos=[e["frames"] for e in examples],
            text=[e["instruction"] for e in examples],
            answers=[e["answer"] for e in examples] if self.with_answers else None,
            scene_features=[e["scene_features"] for e in examples],
            scene_masks=[e.get("scene_masks") for e in examples],
            frame_timestamps=[e["timestamps"] for e in examples],
            max_length=self.max_length,
        )
        # the model does not read these (the timestamps are in the prompt); dropping them keeps DDP's
        # input-broadcasting simple
        batch.data.pop("clip_start", None)
        batch.data.pop("frame_timestamps", None)
        return batch


__all__ = ["IcmDataCollator"]
