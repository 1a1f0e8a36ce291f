"""Omni-SILA data (paper §4.1): the annotation schema, clip windows over source videos, the ``OmniSila`` and
``SceneTuning`` builders, converters from the public sources (TSL-300, CUVA, CMU-MOSEI, HumanML3D, RefCOCO,
Places365), Parquet + dataset-card export, and the embedded mini set.

Attributes are imported lazily, so ``import datasets_scripts`` is cheap; ``datasets`` is imported only by the
builders and the export.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # schema
    "ClipRecord": ".schema",
    "ValidationIssue": ".schema",
    "ValidationReport": ".schema",
    "AnnotationError": ".schema",
    "read_annotations": ".schema",
    "iter_annotations": ".schema",
    # clip windows (the one clip construction)
    "ClipWindows": ".windows",
    "SourceVideo": ".windows",
    "WindowConfig": ".windows",
    "write_annotations": ".schema",
    "validate_record": ".schema",
    "SceneRecord": ".scene_schema",
    "read_scene_annotations": ".scene_schema",
    "write_scene_annotations": ".scene_schema",
    # builders
    "OmniSila": ".builders",
    "OmniSilaConfig": ".builders",
    "SceneTuning": ".builders",
    "SceneTuningConfig": ".builders",
    "instruction_rows": ".builders",
    "omnisila_features": ".builders",
    "scene_tuning_features": ".builders",
    "sample_frames": ".frames",
    # export
    "export_parquet": ".export",
    "dataset_card": ".export",
    "export_dataset": ".export",
    "DatasetExportError": ".export",
    # mini set
    "generate_mini_set": ".mini_set",
    "load_mini_split": ".mini_set",
    "mini_set_corpus": ".mini_set",
    "format_region_box": ".mini_set",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
