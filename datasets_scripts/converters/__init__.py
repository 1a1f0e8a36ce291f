"""Converters from the public sources into our schemas (paper §4.1). Each returns ``(records, report)``: bad entries
are skipped and listed in the :class:`~datasets_scripts.schema.ValidationReport`, and writes JSON Lines when given
``out_jsonl``."""

from .cuva import CUVA_CATEGORY_NUMBERS, convert_cuva, parse_cuva_category, parse_cuva_timestamps
from .scene_sources import (
    convert_cmu_mosei,
    convert_humanml3d,
    convert_places365,
    convert_refcoco,
    load_refcoco_refs,
    places365_scene_name,
)
from .sources import SOURCE_CONFIGS, Conversion, ConversionInputError, convert_source
from .tsl300 import convert_tsl300

__all__ = [
    "CUVA_CATEGORY_NUMBERS",
    "SOURCE_CONFIGS",
    "Conversion",
    "ConversionInputError",
    "convert_source",
    "convert_cmu_mosei",
    "convert_cuva",
    "convert_humanml3d",
    "convert_places365",
    "convert_refcoco",
    "convert_tsl300",
    "load_refcoco_refs",
    "parse_cuva_category",
    "parse_cuva_timestamps",
    "places365_scene_name",
]
