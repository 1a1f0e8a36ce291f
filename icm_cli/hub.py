"""Kept for existing imports: model cards, the Hub layouts and the upload live in :mod:`trainers.hub` (the library)."""

from trainers.hub import (  # noqa: F401
    REQUIRED_MODEL_FILES,
    HubError,
    HubExportError,
    HubUploadError,
    eval_results,
    export_dataset,
    export_model,
    is_video_llava_7b,
    model_card,
    read_evaluations,
    upload,
)

__all__ = ["REQUIRED_MODEL_FILES", "eval_results", "export_dataset", "export_model", "is_video_llava_7b",
           "model_card", "read_evaluations", "upload"]  # fmt: skip
