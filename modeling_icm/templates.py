"""Labels, scene names, prompt and answer templates of Omni-SILA — defined once, here.

This module ships with the Hub remote code (the processor builds prompts with it), and the datasets, the
answer parser, the trainer and the CLI import it from here. It imports nothing beyond the standard library, so
`import modeling_icm.templates` never pulls in torch.

Wording follows the paper (§3.4, §4.1):

* instructions begin "You will be presented with a video. After watching the video", then ask to identify
  ("please identify the explicit/implicit visual sentiments in the video"), locate ("please locate the timestamp
  when ...") and attribute ("please attribute ... considering facial expression, human action, object relations
  and visual backgrounds");
* answers are "The explicit/implicit visual sentiment is X.", "The location of X is from 4s to 18s." (several
  segments: "from 4s to 18s and from 25s to 30s") and "The attribution is ...";
* the combined answer (test time, §4.1 "inferring three tasks with the same instruction") is the three sentences
  in that order.

Choices where the paper is silent (documented here, used everywhere):

* a clip without a located segment answers "The location of X is none." (``NO_SEGMENT_PHRASE``);
* times are written in seconds with at most two decimals, trailing zeros dropped ("4s", "18.44s");
* the prompt states the timestamps of the sampled frames ("The frames are sampled at 0s, 2.5s, ...") so that the
  model can answer in seconds;
* the conversation wrapper is Video-LLaVA's ("USER: ... ASSISTANT:").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# --------------------------------------------------------------------------------------------------------------
# Labels and scenes
# --------------------------------------------------------------------------------------------------------------

#: Scenes in the order of the paper: facial expression (explicit), human action, object relations and visual
#: background (implicit). The order fixes the expert index j of Eq. 1-2.
SCENE_NAMES: tuple[str, ...] = ("face", "action", "object", "background")
EXPLICIT_SCENES: tuple[str, ...] = ("face",)
IMPLICIT_SCENES: tuple[str, ...] = ("action", "object", "background")

EXPLICIT_LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
IMPLICIT_LABELS: tuple[str, ...] = (
    "Fighting",
    "Animals Hurting People",
    "Water Incidents",
    "Vandalism",
    "Traffic Accidents",
    "Robbery",
    "Theft",
    "Traffic Violations",
    "Fire",
    "Pedestrian Incidents",
    "Forbidden to Burn",
    "Normal",
)
#: The two Omni-SILA configurations ("explicit" is built on TSL-300, "implicit" on CUVA).
LABELS: dict[str, tuple[str, ...]] = {"explicit": EXPLICIT_LABELS, "implicit": IMPLICIT_LABELS}
CONFIG_NAMES: tuple[str, ...] = tuple(LABELS)

#: Labels whose frames count as positives for the FNRs metric (paper §4.4: missing a negative / abnormal frame is
#: the costly error): "negative" for explicit, every label but "Normal" for implicit.
FNR_TARGET_LABELS: dict[str, tuple[str, ...]] = {
    "explicit": ("negative",),
    "implicit": tuple(label for label in IMPLICIT_LABELS if label != "Normal"),
}

# TSL-300 writes its labels as single letters in gt.json.
TSL300_LABEL_CODES: dict[str, str] = {"p": "positive", "n": "negative", "u": "neutral", "neu": "neutral"}


def check_config_name(config_name: str) -> str:
    if config_name not in LABELS:
        raise ValueError(f"config name must be one of {list(CONFIG_NAMES)}, got {config_name!r}")
    return config_name


def normalize_label(label: str, config_name: str) -> str | None:
    """The canonical spelling of ``label`` in ``config_name`` (case and spacing ignored), or None if unknown."""
    key = " ".join(str(label).strip().strip(".").split()).lower()
    for candidate in LABELS[check_config_name(config_name)]:
        if candidate.lower() == key:
            return candidate
    return None


# --------------------------------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------------------------------

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
#: Placeholder of one scene token (a row of Norm(y_moe + y_iec)); the processor writes ``num_scene_tokens`` of them.
SCENE_TOKEN = "<scene>"

# --------------------------------------------------------------------------------------------------------------
# Instructions (paper §4.1)
# --------------------------------------------------------------------------------------------------------------

INSTRUCTION_PREFIX = "You will be presented with a video. After watching the video"
SCENE_CLUES = "considering facial expression, human action, object relations and visual backgrounds"


def identify_instruction(config_name: str) -> str:
    return f"{INSTRUCTION_PREFIX}, please identify the {check_config_name(config_name)} visual sentiments in the video."


def locate_instruction(config_name: str, label: str) -> str:
    return (
        f"{INSTRUCTION_PREFIX}, please locate the timestamp when the {check_config_name(config_name)} visual "
        f"sentiment {label} happens in the video."
    )


def attribute_instruction(config_name: str, label: str) -> str:
    return (
        f"{INSTRUCTION_PREFIX}, please attribute the {check_config_name(config_name)} visual sentiment {label} "
        f"{SCENE_CLUES}."
    )


def combined_instruction(config_name: str) -> str:
    """The single test-time instruction that asks for all three answers (paper §3.4 and §4.1)."""
    kind = check_config_name(config_name)
    return (
        f"{INSTRUCTION_PREFIX}, please identify the {kind} visual sentiments in the video, locate the timestamp "
        f"when they happen, and attribute them {SCENE_CLUES}."
    )


#: Scene-tuning prompts (paper §3.4: "Please describe the facial/action/image region/background").
SCENE_TUNING_PROMPTS: dict[str, str] = {
    "face": "Please describe the facial.",
    "action": "Please describe the action.",
    "object": "Please describe the image region.",
    "background": "Please describe the background.",
}

# --------------------------------------------------------------------------------------------------------------
# Answers (paper §4.1)
# --------------------------------------------------------------------------------------------------------------

NO_SEGMENT_PHRASE = "none"


def format_seconds(value: float) -> str:
    """Seconds as the answers write them: at most two decimals, no trailing zeros ("4", "18.44")."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"time must be a finite number of seconds, got {value!r}")
    text = f"{round(value, 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def identify_answer(config_name: str, label: str) -> str:
    return f"The {check_config_name(config_name)} visual sentiment is {label}."


def format_segments(segments: Iterable[Sequence[float]]) -> str:
    parts = [f"from {format_seconds(start)}s to {format_seconds(end)}s" for start, end in segments]
    return " and ".join(parts) if parts else NO_SEGMENT_PHRASE


def locate_answer(label: str, segments: Iterable[Sequence[float]]) -> str:
    return f"The location of {label} is {format_segments(segments)}."


def attribute_answer(cause: str) -> str:
    cause = " ".join(str(cause).split())
    if cause and cause[-1] not in ".!?":
        cause += "."
    return f"The attribution is {cause}" if cause else "The attribution is none."


def combined_answer(config_name: str, label: str, segments: Iterable[Sequence[float]], cause: str) -> str:
    return " ".join((identify_answer(config_name, label), locate_answer(label, segments), attribute_answer(cause)))


# --------------------------------------------------------------------------------------------------------------
# The prompt the LLM sees (the processor fills the placeholders)
# --------------------------------------------------------------------------------------------------------------


def format_frame_times(timestamps: Iterable[float]) -> str:
    return ", ".join(f"{format_seconds(t)}s" for t in timestamps)


def build_prompt(
    instruction: str,
    timestamps: Sequence[float] | None = None,
    num_scene_tokens: int = 0,
    with_video: bool = True,
) -> str:
    """The Video-LLaVA conversation with the scene placeholders first (the LLM sees ``Norm(y_moe + y_iec) + y_t +
    y_v``, §3.4), the video placeholder, the sampled frames' timestamps and the instruction.

    ``num_scene_tokens`` placeholders are written as consecutive ``<scene>`` tokens; the video placeholder is
    written once (the processor expands it to the number of video patch tokens).
    """
    scene = SCENE_TOKEN * int(num_scene_tokens)
    video = f"{VIDEO_TOKEN}\n" if with_video else ""
    times = f"The frames are sampled at {format_frame_times(timestamps)}. " if timestamps is not None else ""
    head = f"{scene}\n" if scene else ""
    return f"USER: {head}{video}{times}{instruction} ASSISTANT:"
