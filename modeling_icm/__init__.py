"""ICM (Implicit-enhanced Causal MoE) for Omni-SILA — the Hub remote code.

Attributes are imported lazily so that light modules (``modeling_icm.templates``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "IcmConfig": ".configuration_icm",
    "IcmForVideoSentiment": ".modeling_icm",
    "IcmPreTrainedModel": ".modeling_icm",
    "IcmOutput": ".modeling_icm",
    "SceneExpert": ".modeling_icm",
    "SceneBalancedMoE": ".modeling_icm",
    "ImplicitEnhancedCausal": ".modeling_icm",
    "IcmProcessor": ".processing_icm",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
