"""ICM as an lmms-eval model: ``lmms-eval --model icm --model_args pretrained=DIR --tasks omni_sila
--include_path TASK_DIR`` (lmms-eval 0.7).

lmms-eval knows models by name through its model registry; a package adds one with an entry point of the group
``lmms_eval.models`` whose payload is a ``ModelManifest`` (or a callable returning one). omnisila-icm declares
``icm = "inference.lmms_eval_model:lmms_eval_manifest"`` in ``pyproject.toml``, so an installed omnisila-icm
makes ``--model icm`` available; ``register()`` does the same in a running process (an editable install made before
the entry point existed, or tests).

:class:`IcmLmms` answers ``generate_until`` requests (the only request type of ``omni_sila``): per document, the
task's ``doc_to_visual`` gives the clip's video path, ``num_frames`` frames are sampled uniformly as ICM's data
pipeline samples them (``processing.video.sample_frames``), the processor's own scene extractors compute the scene
features, and the task's prompt (``doc_to_text``) is the instruction, after which ICM's prompt writes the frames'
timestamps; greedy generation in batches of ``batch_size`` (``inference.generation.generate_answers``). A clip that
cannot be decoded gets the empty answer (scored as wrong) and is reported.

This module imports lmms-eval: lmms-eval loads it, ``import evaluate_metrics`` does not.
"""

from __future__ import annotations

import logging

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

MODEL_NAME = "icm"
logger = logging.getLogger(__name__)


class IcmLmms(lmms):
    """An ICM checkpoint (a merged model folder, a LoRA adapter folder or a Hub id) behind lmms-eval's model API.

    Args:
        pretrained: what ``inference.loading.load_model`` loads.
        device: torch device.
        batch_size: clips per ``generate`` call.
        num_frames: frames sampled per clip (paper §4.1: 8).
        max_new_tokens: the default when a task's ``generation_kwargs`` give none.
    """

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        batch_size: int | str = 1,
        num_frames: int = 8,
        max_new_tokens: int = 128,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"--model {MODEL_NAME}: unknown model_args {sorted(kwargs)} (pretrained, device, "
                             "batch_size, num_frames, max_new_tokens)")  # fmt: skip
        from inference.loading import load_model

        self.model, self.processor = load_model(pretrained, device=str(device))
        self.batch_size_per_gpu = max(1, int(batch_size))
        self.num_frames = int(num_frames)
        self.max_new_tokens = int(max_new_tokens)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from inference.generation import generate_answers
        from processing.video import VideoDecodeError, sample_frames

        answers: list[str] = [""] * len(requests)
        pending: list[tuple[int, str, str, int, object, list[float]]] = []

        def flush() -> None:
            # one generate call per run of requests sharing the prompt's settings
            while pending:
                first = pending[0]
                group = [p for p in pending if p[1:4] == first[1:4]][: self.batch_size_per_gpu]
                out = generate_answers(self.model, self.processor, [p[4] for p in group], [p[5] for p in group],
                                       first[1], first[2], max_new_tokens=first[3])  # fmt: skip
                for p, answer in zip(group, out):
                    answers[p[0]] = answer["answer"]
                    pending.remove(p)

        for index, request in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            (video,) = doc_to_visual(doc)[:1]
            try:
                clip = sample_frames(video, num_frames=self.num_frames, max_side=self.processor.max_side)
            except (VideoDecodeError, OSError, ValueError) as err:
                logger.warning("%s document %s: %s (answered with the empty answer)", task, doc_id, err)
                continue
            origin = float(clip.start or 0.0)
            max_new_tokens = int((gen_kwargs or {}).get("max_new_tokens") or self.max_new_tokens)
            pending.append((index, context, doc.get("config", "implicit"), max_new_tokens, clip.frames,
                            [float(t) - origin for t in clip.timestamps]))  # fmt: skip
            if len(pending) >= self.batch_size_per_gpu:
                flush()
        flush()
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError(f"--model {MODEL_NAME}: only generate_until tasks (such as omni_sila)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"--model {MODEL_NAME}: only generate_until tasks (such as omni_sila)")


def lmms_eval_manifest():
    """The payload of the ``lmms_eval.models`` entry point ``icm``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.IcmLmms")


def register() -> None:
    """Make ``--model icm`` known to lmms-eval in this process (what the installed entry point does)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(lmms_eval_manifest(), overwrite=True)


__all__ = ["MODEL_NAME", "IcmLmms", "lmms_eval_manifest", "register"]
