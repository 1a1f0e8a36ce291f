"""Kept for existing imports: loading, generation and the windowed analysis live in :mod:`processing.analysis`
(the library); the ``icm`` command only parses arguments, shows progress and maps errors to exit codes."""

from processing.analysis import (  # noqa: F401
    ANALYSIS_FORMAT,
    HUB_ID_RE,
    PROCESSOR_FILES,
    WEIGHT_FILES,
    analysis_document,
    analyze_video,
    check_model_dir,
    generate_answers,
    load_model,
    placeholder_token_ids,
)

__all__ = ["analyze_video", "check_model_dir", "generate_answers", "load_model"]
