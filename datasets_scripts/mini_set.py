"""The embedded Omni-SILA mini set: small synthetic videos on which a tiny model can learn to identify, locate and
attribute, so that learning can be shown end to end on a CPU (the demo and the training tests use it).

Design (the paper's data, §4.1, is 202K real clips; this set keeps its *form* and makes the *content* learnable):

* Every clip is a 64×64 px H.264 mp4 at 4 fps, 8–12 s long, written with PyAV. Frame ``i`` is shown at
  ``i / 4`` s; a segment ``[s, e]`` covers the frames with ``s <= t < e``. Segments start and end on integer
  seconds, are 2–4 s long, and 15 % of the abnormal/sentimental clips have two segments.
* Backgrounds are uninformative and varied: a seeded low-saturation grey gradient with a faint texture and a
  slowly drifting grey disk. Nothing saturated appears outside the labelled seconds.
* ``implicit`` config: each of the 11 abnormal labels has one distinct event, drawn only inside its segments, in
  its own saturated colour (:data:`EVENT_COLORS`) with its own shape and motion — Fire is a flickering orange
  blob, Traffic Accidents two yellow squares that drive into each other, Water Incidents a rising blue wave,
  Fighting two red bodies jostling, Animals Hurting People a leaping magenta triangle, Vandalism green spray
  strokes, Robbery a cyan figure dashing across, Theft a purple box carried off, Traffic Violations a pink car
  crossing diagonally, Pedestrian Incidents a white figure falling over, Forbidden to Burn a black smoke plume.
  "Normal" clips show no event; their segment is the whole clip (choice: the Normal sentiment holds throughout).
* ``explicit`` config: a real face (scikit-image ``astronaut()`` and ``lfw_subset()``) is pasted for the whole
  clip; inside the segments a sentiment cue is drawn — positive: a green frame and a brightened face; negative:
  a crimson frame and a darkened face. "neutral" clips show the face without a cue; their segment is the whole
  clip.
* Causes come from two templates per label, in the paper's attribution style (scene clues: facial expression,
  human action, object relations, visual background).
* A scene-tuning set (paper §3.4 stage 1) rides along: ``face`` and ``action`` reference clip segments (frames are
  sampled from the videos by the :class:`~datasets_scripts.builders.SceneTuning` builder), ``object`` and
  ``background`` are PNG images; the object answers carry the region box (:func:`format_region_box`).

**The study variant** (``variant="study"``, :func:`generate_study_set`): a test bed on which the scene information
alone carries the label, so that ICM can be told from a plain Video-LLaVA. Frames are wide panoramas (three 64-px panels: left,
centre, right). Video-LLaVA's video processor resizes the short side and crops the centre square
(``VideoLlavaVideoProcessor``: ``shortest_edge`` then ``crop_size``), so its tower sees only the centre panel, which
holds nothing but the uninformative background; the scene extractors read the whole frame. (The centre panel is
widened to 80 px by repeating its edge columns, so that the antialiased resize reaches nothing of the side panels:
frames are 64×208.) Every cue is drawn in one side panel (left or right, drawn per clip):

* ``implicit``: the label's event as above, in the side panel (read by the action scene; the card lists the scene
  probes measured on each scene's features).
* ``explicit``: the real face in the side panel; the sentiment cue is the face alone — brightened (positive) or
  darkened (negative), no coloured frame — so that the face scene reads it and the other scenes hardly do.
* **conflict clips** (the paper's Figure 1, a smiling face during a fight): ``explicit`` clips labelled
  ``negative`` whose face shows the *positive* cue while a negative event of the action scene (fighting, robbery,
  a pedestrian falling, vandalism) happens in the other side panel, in the same seconds. The label follows the
  implicit scene; their ids end in ``-conflict`` and the manifest lists them (``conflict_clips``).

Everything is seeded: the same ``seed`` and ``size`` give the same annotations and the same decoded frames (each
clip draws from its own ``SeedSequence([seed, config, label, index])``, and x264 runs single-threaded).

Layout written by :func:`generate_mini_set`::

    out_dir/
      explicit.jsonl, implicit.jsonl      # the clip schema (datasets_scripts.schema), both splits
      videos/{explicit,implicit}/*.mp4
      scene_tuning/{face,action,object,background}.jsonl, scene_tuning/images/*.png
      mini_set.json                       # manifest: seed, size, counts
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from modeling_icm.templates import (
    CONFIG_NAMES,
    EXPLICIT_LABELS,
    IMPLICIT_LABELS,
    LABELS,
    SCENE_NAMES,
    SCENE_TUNING_PROMPTS,
    attribute_answer,
    attribute_instruction,
    build_prompt,
    combined_answer,
    combined_instruction,
    identify_answer,
    identify_instruction,
    locate_answer,
    locate_instruction,
)

from .schema import ClipRecord, read_annotations, round_robin, write_annotations
from .windows import ClipWindows, SourceVideo, WindowConfig

FPS = 4
FRAME_SIZE = 64
DURATIONS = (8, 9, 10, 11, 12)
SEGMENT_LENGTHS = (2, 3, 4)
#: the study variant's single segments are longer: its cues take a third of the frame, not all of it, and the scene
#: features of a clip are read over all its sampled frames
STUDY_SEGMENT_LENGTHS = (4, 5, 6)
TWO_SEGMENT_PROBABILITY = 0.15
MINI_SET_VERSION = "1"
SOURCE_NAME = "omnisila-mini"

#: clips per label and split for each size ("tiny" for unit tests, "default" for the demo)
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {"implicit": {"train": 1, "test": 1}, "explicit": {"train": 1, "test": 1}},
    "small": {"implicit": {"train": 6, "test": 2}, "explicit": {"train": 10, "test": 4}},
    "default": {"implicit": {"train": 16, "test": 4}, "explicit": {"train": 24, "test": 6}},
}
#: the study variant: clips per label and split; "conflict": how many of the ``negative`` clips are conflict clips
#: (the labels stay balanced, so the majority class is chance)
STUDY_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {"implicit": {"train": 1, "test": 1}, "explicit": {"train": 2, "test": 2}, "conflict": {"train": 1, "test": 1}},
    "small": {"implicit": {"train": 6, "test": 2}, "explicit": {"train": 12, "test": 6}, "conflict": {"train": 6, "test": 3}},
    "default": {"implicit": {"train": 16, "test": 4}, "explicit": {"train": 24, "test": 8}, "conflict": {"train": 12, "test": 4}},
    # enough training clips for a linear probe to read the 12 implicit labels off the scene features (docs/study-set.md)
    "large": {"implicit": {"train": 64, "test": 8}, "explicit": {"train": 48, "test": 16}, "conflict": {"train": 24, "test": 8}},
}  # fmt: skip
VARIANTS = ("mini", "study")
STUDY_PANELS = 3  # left, centre (what the video tower sees), right
#: the centre panel is widened by this many pixels on each side (its edge columns repeated): the antialiased resize
#: before the tower's centre crop reaches a few pixels past the crop, and must find nothing of the side panels there
STUDY_GUTTER = 8
STUDY_WIDTH = FRAME_SIZE * STUDY_PANELS + 2 * STUDY_GUTTER
STUDY_SOURCE_NAME = "omnisila-study"
#: the negative events a conflict clip shows beside its smiling face (events the action scene reads)
CONFLICT_EVENTS = ("Fighting", "Robbery", "Pedestrian Incidents", "Vandalism")
#: which scene carries each label of the study variant (the scene whose features read the cue best: the card's
#: measured probes)
STUDY_CARRIERS: dict[str, str] = {label: "action" for label in IMPLICIT_LABELS if label != "Normal"} | {
    "positive": "face",
    "negative": "face (conflict clips: action)",
}
#: scene-tuning items per scene and split
SCENE_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"train": 6, "test": 2},
    "small": {"train": 16, "test": 4},
    "default": {"train": 40, "test": 10},
    "large": {"train": 40, "test": 10},  # the study variant's only
}

#: The saturated colour of each label's event (RGB); the grey backgrounds never come near these.
EVENT_COLORS: dict[str, tuple[int, int, int]] = {
    "Fighting": (220, 20, 20),
    "Animals Hurting People": (220, 0, 220),
    "Water Incidents": (20, 60, 240),
    "Vandalism": (20, 200, 40),
    "Traffic Accidents": (240, 220, 0),
    "Robbery": (0, 210, 220),
    "Theft": (130, 30, 230),
    "Traffic Violations": (255, 110, 170),
    "Fire": (255, 120, 0),
    "Pedestrian Incidents": (250, 250, 250),
    "Forbidden to Burn": (10, 10, 10),
    # explicit sentiment cues (the frame drawn around the face)
    "positive": (30, 220, 90),
    "negative": (200, 0, 60),
}
#: Background grey levels (low saturation) keep every event colour at least this far away per channel.
BACKGROUND_RANGE = (80, 170)
COLOR_TOLERANCE = 40

CAUSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Fighting": (
        "two people in red clothes push and hit each other in the middle of the scene, an aggressive human action",
        "the human action shows two red figures clashing again and again, so a fight breaks out",
    ),
    "Animals Hurting People": (
        "a magenta animal leaps at a person and attacks him, an animal hurting a person",
        "the object relation animal attacking person appears as a magenta animal jumps on the person",
    ),
    "Water Incidents": (
        "a blue wave rises from the bottom and floods the scene, a water incident",
        "the visual background fills with rising blue water, so the place is being flooded",
    ),
    "Vandalism": (
        "green paint strokes are sprayed over the scene one after another, damaging the property",
        "the human action of spraying leaves green marks across the wall, an act of vandalism",
    ),
    "Traffic Accidents": (
        "two yellow cars drive towards each other and crash in the middle of the road",
        "the object relation car hitting car appears as two yellow vehicles collide head on",
    ),
    "Robbery": (
        "a cyan figure dashes across the scene and grabs the belongings of others, a robbery",
        "the human action of a cyan person running fast through the scene shows a robbery",
    ),
    "Theft": (
        "a purple box is carried away quietly out of the scene, something is being stolen",
        "the object relation person taking box shows a purple box slipping away, a theft",
    ),
    "Traffic Violations": (
        "a pink car crosses the scene diagonally against the traffic rules",
        "the object relation car crossing road shows a pink vehicle cutting across, a traffic violation",
    ),
    "Fire": (
        "orange flames flicker near the ground and the scene glows, a fire is breaking out",
        "the visual background shows flickering orange flames, so something is on fire",
    ),
    "Pedestrian Incidents": (
        "a white pedestrian loses balance and falls down onto the ground",
        "the human action of a white figure tipping over shows a pedestrian falling",
    ),
    "Forbidden to Burn": (
        "black smoke rises from the ground as something is burned in a forbidden place",
        "the visual background darkens with a rising black smoke plume from illegal burning",
    ),
    "Normal": (
        "the scene stays calm with only a grey object drifting slowly, nothing abnormal happens",
        "no harmful human action, object relation or background change appears, the scene is normal",
    ),
    "positive": (
        "the facial expression brightens into a happy smile framed in green",
        "the person looks happy, the face lights up inside a green frame",
    ),
    "negative": (
        "the facial expression darkens into a sad face framed in crimson",
        "the person looks upset, the face turns dark inside a crimson frame",
    ),
    "neutral": (
        "the facial expression stays calm and unchanged throughout the video",
        "the person keeps a neutral face with no visible emotion",
    ),
}

#: causes of the conflict clips: the implicit scene wins over the smiling face (paper §1, Figure 1)
CONFLICT_CAUSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "Fighting": ("although the person smiles, two people fight right beside them, so the scene is negative",),
    "Robbery": ("although the person smiles, someone dashes past and robs the others, so the scene is negative",),
    "Pedestrian Incidents": ("although the person smiles, a pedestrian falls down nearby, so the scene is negative",),
    "Vandalism": ("although the person smiles, someone sprays paint over the wall, so the scene is negative",),
}

#: scene-tuning answers of the mini set (the paper's examples: "A woman with sad face.", "A person waves his hand.")
FACE_DESCRIPTIONS = {
    "positive": "A person with a happy face.",
    "negative": "A person with a sad face.",
    "neutral": "A person with a calm face.",
}
ACTION_DESCRIPTIONS = {
    "Fighting": "Two people fight with each other.",
    "Robbery": "A person runs across the scene.",
    "Pedestrian Incidents": "A person falls down.",
    "Vandalism": "A person sprays paint on the wall.",
    "Animals Hurting People": "An animal leaps at a person.",
}
OBJECT_SHAPES = ("square", "disk", "triangle")
OBJECT_COLORS = {"red": (220, 20, 20), "blue": (20, 60, 240), "yellow": (240, 220, 0), "green": (20, 200, 40)}
BACKGROUND_DESCRIPTIONS = {
    "plain": "A plain grey background.",
    "water": "A blue water surface.",
    "fire": "An orange fire glowing.",
    "smoke": "A sky full of black smoke.",
}


def format_region_box(box: tuple[float, float, float, float] | list[float]) -> str:
    """A region box as the object answers write it, ``<x1,y1,x2,y2>`` (paper §4.1: "A dog <0.48,2.23,1.87,0.79>
    on the grass."). Choice: the paper does not define its numbers; we write the corners normalised by the image
    width and height, two decimals."""
    if len(box) != 4:
        raise ValueError(f"a region box needs 4 numbers x1,y1,x2,y2, got {box!r}")
    return "<" + ",".join(f"{float(v):.2f}" for v in box) + ">"


# ----------------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------------

_YY, _XX = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE]


def _rect(frame: np.ndarray, x0: float, y0: float, w: float, h: float, color) -> None:
    xa, ya = max(int(round(x0)), 0), max(int(round(y0)), 0)
    xb, yb = min(int(round(x0 + w)), FRAME_SIZE), min(int(round(y0 + h)), FRAME_SIZE)
    if xb > xa and yb > ya:
        frame[ya:yb, xa:xb] = color


def _disk(frame: np.ndarray, cx: float, cy: float, r: float, color) -> None:
    frame[(_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r] = color


def _triangle(frame: np.ndarray, cx: float, cy: float, size: float, color) -> None:
    # upward triangle: apex at (cx, cy - size), base at y = cy + size
    inside = (_YY <= cy + size) & (_YY >= cy - size)
    half = (_YY - (cy - size)) / 2.0
    inside &= np.abs(_XX - cx) <= half
    frame[inside] = color


def _line(frame: np.ndarray, x0, y0, x1, y1, color, width: int = 2) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for x, y in zip(np.linspace(x0, x1, n), np.linspace(y0, y1, n)):
        _rect(frame, x - width / 2, y - width / 2, width, width, color)


def _background(rng: np.random.Generator, num_frames: int) -> Callable[[int], np.ndarray]:
    lo, hi = BACKGROUND_RANGE
    a, b = rng.uniform(lo + 5, hi - 5, size=2)
    tint = rng.uniform(-6, 6, size=3)
    direction = rng.integers(0, 3)
    ramp = np.linspace(0.0, 1.0, FRAME_SIZE)
    grad = {0: ramp[None, :], 1: ramp[:, None], 2: (ramp[None, :] + ramp[:, None]) / 2}[int(direction)]
    base = a + (b - a) * np.broadcast_to(grad, (FRAME_SIZE, FRAME_SIZE))
    texture = rng.normal(0, 3, size=(FRAME_SIZE // 8, FRAME_SIZE // 8)).repeat(8, 0).repeat(8, 1)
    still = np.clip(base[..., None] + texture[..., None] + tint, lo, hi)
    # an uninformative grey disk drifting slowly across every clip
    gray = float(np.clip(rng.uniform(lo, hi), lo, hi))
    x0, y0 = rng.uniform(8, 56, size=2)
    vx, vy = rng.uniform(-1.5, 1.5, size=2)
    radius = rng.uniform(3, 6)

    def frame_at(i: int) -> np.ndarray:
        frame = still.copy()
        cx = 8 + (x0 - 8 + vx * i) % 48
        cy = 8 + (y0 - 8 + vy * i) % 48
        _disk(frame, cx, cy, radius, (gray, gray, gray))
        return frame

    return frame_at


def _event_painter(label: str, rng: np.random.Generator) -> Callable[[np.ndarray, float, int], None]:
    """A function ``paint(frame, progress in [0, 1), frame_index)`` drawing ``label``'s event."""
    color = EVENT_COLORS.get(label)
    cx, cy = rng.uniform(20, 44, size=2)
    flicker = rng.random(64)
    if label == "Fire":

        def paint(frame, p, i):
            r = 6 + 4 * flicker[i % 64]
            _disk(frame, cx, 50, r, color)
            _disk(frame, cx + 5 * (flicker[(i + 7) % 64] - 0.5), 50 - r, r * 0.6, color)

    elif label == "Traffic Accidents":

        def paint(frame, p, i):
            meet = min(p * 2.0, 1.0)  # they meet halfway through the segment and stay crashed
            _rect(frame, 2 + (cx - 10 - 2) * meet, cy - 5, 10, 10, color)
            _rect(frame, 52 - (52 - cx) * meet, cy - 5, 10, 10, color)

    elif label == "Water Incidents":

        def paint(frame, p, i):
            level = 50 - 22 * p
            wave = level + 3 * np.sin(_XX[0] / 4.0 + i)
            frame[_YY >= wave[None, :]] = color

    elif label == "Fighting":

        def paint(frame, p, i):
            shake = 3 if i % 2 else -1
            _rect(frame, cx - 12 + shake, cy - 8, 9, 16, color)
            _rect(frame, cx + 3 - shake, cy - 8, 9, 16, color)

    elif label == "Animals Hurting People":

        def paint(frame, p, i):
            hop = abs(np.sin(np.pi * 3 * p)) * 14
            _triangle(frame, cx, 48 - hop, 7, color)

    elif label == "Vandalism":
        strokes = rng.uniform(6, 58, size=(12, 4))

        def paint(frame, p, i):
            for x0, y0, x1, y1 in strokes[: 2 + int(p * 10)]:
                _line(frame, x0, y0, x1, y1, color)

    elif label == "Robbery":

        def paint(frame, p, i):
            _rect(frame, 56 * p, cy - 9, 8, 18, color)

    elif label == "Theft":
        direction = 1 if rng.random() < 0.5 else -1
        distance = (FRAME_SIZE - 10 - (cx - 5)) if direction > 0 else (cx - 5)  # carried to the edge, still visible

        def paint(frame, p, i):
            _rect(frame, cx - 5 + direction * distance * p, cy - 5, 10, 10, color)

    elif label == "Traffic Violations":

        def paint(frame, p, i):
            _rect(frame, 50 * p, 50 - 44 * p, 14, 8, color)

    elif label == "Pedestrian Incidents":

        def paint(frame, p, i):
            if p < 0.5:
                _rect(frame, cx - 3, cy - 10, 6, 20, color)  # standing
            else:
                _rect(frame, cx - 10, cy + 4, 20, 6, color)  # fallen over

    elif label == "Forbidden to Burn":

        def paint(frame, p, i):
            for k in range(1 + int(p * 5)):
                _disk(frame, cx + 3 * np.sin(k + i * 0.5), 54 - 8 * k, 4 + k, color)

    elif label == "Normal":

        def paint(frame, p, i):
            return None

    else:
        raise ValueError(f"no mini-set event for label {label!r}")
    return paint


@lru_cache
def _faces() -> tuple[np.ndarray, ...]:
    """Real faces from scikit-image, grey levels in [0, 1], 28×28: astronaut() plus the LFW subset."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    faces = [resize(rgb2gray(data.astronaut()[20:200, 140:320]), (28, 28), order=1, anti_aliasing=True)]
    lfw = data.lfw_subset()
    faces += [resize(face, (28, 28), order=1) for face in lfw[:100]]
    return tuple(np.clip(f, 0.0, 1.0) for f in faces)


def _face_painter(
    label: str, rng: np.random.Generator, frame_cue: bool = True, brighten: float = 1.15
) -> tuple[Callable, Callable]:
    """(always, during): the face is pasted in every frame; the cue only inside the segments (the brightened or
    darkened face, and with ``frame_cue`` the coloured frame around it)."""
    faces = _faces()
    face = faces[int(rng.integers(0, len(faces)))]
    x0, y0 = (int(v) for v in rng.integers(5, FRAME_SIZE - 28 - 5, size=2))
    skin = np.array([1.0, 0.86, 0.74])
    rgb = face[..., None] * skin * 200 + 30  # [30, 230]: keeps clear of the cue colours

    def always(frame, cue: bool):
        patch = rgb
        if cue and label == "positive":
            patch = np.clip(rgb * brighten, 0, 240)
        elif cue and label == "negative":
            patch = rgb * 0.55
        frame[y0 : y0 + 28, x0 : x0 + 28] = patch

    def during(frame, p, i):
        if frame_cue and label in ("positive", "negative"):
            color = EVENT_COLORS[label]
            _rect(frame, x0 - 4, y0 - 4, 36, 4, color)
            _rect(frame, x0 - 4, y0 + 28, 36, 4, color)
            _rect(frame, x0 - 4, y0, 4, 28, color)
            _rect(frame, x0 + 28, y0, 4, 28, color)

    return always, during


# ----------------------------------------------------------------------------------------------------------------
# clips
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _ClipPlan:
    clip_id: str
    config: str
    label: str
    split: str
    duration: int
    segments: list[list[float]]
    cause: str
    seed: tuple[int, ...]
    variant: str = "mini"
    side: int = 0  # study variant: the panel holding the cue (0 left, 2 right)
    conflict: str | None = None  # study variant: the negative event beside the smiling face


_WHOLE_CLIP_LABELS = ("Normal", "neutral")


def _plan_segments(
    rng: np.random.Generator, label: str, duration: int, lengths: tuple[int, ...] = SEGMENT_LENGTHS
) -> list[list[float]]:
    if label in _WHOLE_CLIP_LABELS:
        return [[0.0, float(duration)]]
    length = int(rng.choice(lengths))
    if rng.random() < TWO_SEGMENT_PROBABILITY and duration >= 2 * 2 + 3:
        l1, l2 = 2, int(rng.integers(2, min(4, duration - 5) + 1))
        s1 = int(rng.integers(0, duration - l1 - l2 - 1 + 1))
        s2 = int(rng.integers(s1 + l1 + 1, duration - l2 + 1))
        return [[float(s1), float(s1 + l1)], [float(s2), float(s2 + l2)]]
    start = int(rng.integers(0, duration - length + 1))
    return [[float(start), float(start + length)]]


def _plans(seed: int, size: str, variant: str = "mini") -> list[_ClipPlan]:
    study = variant == "study"
    counts = STUDY_SIZES[size] if study else SIZES[size]
    plans = []
    for c_index, config in enumerate(CONFIG_NAMES):
        for l_index, label in enumerate(LABELS[config]):
            k = 0
            for split in ("train", "test"):
                number = counts[config][split]
                conflicts = counts["conflict"][split] if study and label == "negative" else 0
                for n in range(number):
                    # the mini set's clip seeds stay as they were; the study variant draws from its own
                    clip_seed = (seed, c_index, l_index, k) + ((7,) if study else ())
                    rng = np.random.default_rng(np.random.SeedSequence(list(clip_seed)))
                    duration = int(rng.choice(DURATIONS))
                    segments = _plan_segments(rng, label, duration, STUDY_SEGMENT_LENGTHS if study else SEGMENT_LENGTHS)
                    cause = CAUSE_TEMPLATES[label][int(rng.integers(0, len(CAUSE_TEMPLATES[label])))]
                    slug = label.lower().replace(" ", "_")
                    clip_id = f"{config}-{slug}-{k:03d}"
                    plan = _ClipPlan(clip_id, config, label, split, duration, segments, cause, clip_seed, variant)
                    if study:
                        plan.side = 0 if rng.random() < 0.5 else STUDY_PANELS - 1
                        if n >= number - conflicts:  # the last ones of the split
                            plan.conflict = CONFLICT_EVENTS[(n - number + conflicts) % len(CONFLICT_EVENTS)]
                            plan.cause = CONFLICT_CAUSE_TEMPLATES[plan.conflict][0]
                            plan.clip_id = f"{clip_id}-conflict"
                    plans.append(plan)
                    k += 1
    return plans


def _active(segments: list[list[float]], t: float) -> float | None:
    """Progress in [0, 1) of the segment covering time ``t`` (``start <= t < end``), else None."""
    for start, end in segments:
        if start <= t < end:
            return (t - start) / (end - start)
    return None


def render_clip_frames(plan: _ClipPlan) -> np.ndarray:
    """The uint8 RGB frames ``[T, 64, 64, 3]`` of one planned clip (before encoding); the study variant's are
    ``[T, 64, 208, 3]`` (:func:`_render_study_frames`)."""
    if plan.variant == "study":
        return _render_study_frames(plan)
    rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 1]))
    num_frames = plan.duration * FPS
    background = _background(rng, num_frames)
    frames = np.empty((num_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    if plan.config == "explicit":
        always, during = _face_painter(plan.label, rng)
    else:
        always, during = None, _event_painter(plan.label, rng)
    for i in range(num_frames):
        frame = background(i)
        progress = _active(plan.segments, i / FPS)
        cue = progress is not None and plan.label not in _WHOLE_CLIP_LABELS
        if always is not None:
            always(frame, cue)
        if cue:
            during(frame, progress, i)
        frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def _render_study_frames(plan: _ClipPlan) -> np.ndarray:
    """Three 64-px panels side by side, each with its own uninformative background; the cue in panel
    ``plan.side``; a conflict clip's event in the opposite side panel, in the same seconds as the smiling face."""
    rng = np.random.default_rng(np.random.SeedSequence([*plan.seed, 1]))
    num_frames = plan.duration * FPS
    backgrounds = [_background(rng, num_frames) for _ in range(STUDY_PANELS)]
    always = None
    if plan.config == "explicit":
        face_label = "positive" if plan.conflict else plan.label  # the smiling face of a conflict clip
        # without the coloured frame the face alone carries the cue: brightened as far as it is darkened
        always, during = _face_painter(face_label, rng, frame_cue=False, brighten=1.45)
    else:
        during = _event_painter(plan.label, rng)
    conflict_event = _event_painter(plan.conflict, rng) if plan.conflict else None
    other_side = STUDY_PANELS - 1 - plan.side
    frames = np.empty((num_frames, FRAME_SIZE, STUDY_WIDTH, 3), dtype=np.uint8)
    for i in range(num_frames):
        panels = [background(i) for background in backgrounds]
        panels[1] = np.pad(panels[1], ((0, 0), (STUDY_GUTTER, STUDY_GUTTER), (0, 0)), mode="edge")
        progress = _active(plan.segments, i / FPS)
        cue = progress is not None and plan.label not in _WHOLE_CLIP_LABELS
        if always is not None:
            always(panels[plan.side], cue)
        if cue:
            during(panels[plan.side], progress, i)
            if conflict_event is not None:
                conflict_event(panels[other_side], progress, i)
        frames[i] = np.clip(np.rint(np.concatenate(panels, axis=1)), 0, 255).astype(np.uint8)
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode uint8 RGB frames as H.264 (yuv420p, crf 12, single thread: deterministic bytes) with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast", "tune": "zerolatency"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video_frames(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a generated clip: ``(frames uint8 [T, H, W, 3], timestamps in seconds [T])``."""
    from processing.video import decode_all_frames

    return decode_all_frames(path, default_fps=FPS)


def count_event_pixels(frames: np.ndarray, label: str, tolerance: int = COLOR_TOLERANCE) -> np.ndarray:
    """Per frame, the number of pixels within ``tolerance`` (per channel) of ``label``'s event colour."""
    color = np.asarray(EVENT_COLORS[label], dtype=np.int16)
    diff = np.abs(np.asarray(frames, dtype=np.int16) - color).max(axis=-1)
    return (diff <= tolerance).reshape(len(frames), -1).sum(axis=1)


# ----------------------------------------------------------------------------------------------------------------
# scene tuning
# ----------------------------------------------------------------------------------------------------------------


def _scene_items(seed: int, size: str, clips: list[ClipRecord], image_dir: Path, root: Path) -> dict[str, list[dict]]:
    from PIL import Image

    counts = SCENE_SIZES[size]
    items: dict[str, list[dict]] = {scene: [] for scene in SCENE_NAMES}
    # face / action: segments of the mini clips; the builder samples their frames
    by_split = {split: [c for c in clips if c.split == split] for split in ("train", "test")}
    for split, pool in by_split.items():
        faces = [c for c in pool if c.config == "explicit" and not c.id.endswith("-conflict")]  # face != label
        actions = [c for c in pool if c.config == "implicit" and c.label in ACTION_DESCRIPTIONS]
        for scene, source, describe in (
            ("face", faces, lambda c: FACE_DESCRIPTIONS[c.label]),
            ("action", actions, lambda c: ACTION_DESCRIPTIONS[c.label]),
        ):
            # label by label in turn: the first N clips of the pool would all carry its first label
            for clip in round_robin(source, lambda c: c.label, counts[split]):
                start, end = clip.segments[0]
                items[scene].append(
                    {
                        "id": f"{scene}-{clip.id}",
                        "scene": scene,
                        "split": split,
                        "text": describe(clip),
                        "video": os.path.relpath(clip.video, root),
                        "start": start,
                        "end": end,
                        "image": None,
                        "box": None,
                        "source": SOURCE_NAME,
                        "source_id": clip.id,
                    }
                )
    # object / background: still images
    for s_index, scene in enumerate(("object", "background")):
        k = 0
        for split in ("train", "test"):
            for _ in range(counts[split]):
                rng = np.random.default_rng(np.random.SeedSequence([seed, 99, s_index, k]))
                frame = _background(rng, 1)(0)
                box = None
                if scene == "object":
                    shape = OBJECT_SHAPES[int(rng.integers(0, len(OBJECT_SHAPES)))]
                    color_name = list(OBJECT_COLORS)[int(rng.integers(0, len(OBJECT_COLORS)))]
                    half = int(rng.integers(5, 12))
                    cx, cy = (int(v) for v in rng.integers(half + 1, FRAME_SIZE - half - 1, size=2))
                    color = OBJECT_COLORS[color_name]
                    if shape == "square":
                        _rect(frame, cx - half, cy - half, 2 * half, 2 * half, color)
                    elif shape == "disk":
                        _disk(frame, cx, cy, half, color)
                    else:
                        _triangle(frame, cx, cy, half, color)
                    box = [
                        (cx - half) / FRAME_SIZE,
                        (cy - half) / FRAME_SIZE,
                        (cx + half) / FRAME_SIZE,
                        (cy + half) / FRAME_SIZE,
                    ]
                    box = [round(v, 2) for v in box]
                    text = f"A {color_name} {shape} {format_region_box(box)} on the grey ground."
                else:
                    kind = list(BACKGROUND_DESCRIPTIONS)[k % len(BACKGROUND_DESCRIPTIONS)]
                    if kind != "plain":
                        color = {"water": "Water Incidents", "fire": "Fire", "smoke": "Forbidden to Burn"}[kind]
                        frame[: FRAME_SIZE // 2 + int(rng.integers(0, 20))] = EVENT_COLORS[color]
                        frame = frame[::-1] if kind != "smoke" else frame
                    text = BACKGROUND_DESCRIPTIONS[kind]
                name = f"{scene}-{k:03d}.png"
                Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8)).save(image_dir / name)
                items[scene].append(
                    {
                        "id": f"{scene}-{k:03d}",
                        "scene": scene,
                        "split": split,
                        "text": text,
                        "video": None,
                        "start": None,
                        "end": None,
                        "image": os.path.relpath(image_dir / name, root),
                        "box": box,
                        "source": SOURCE_NAME,
                        "source_id": f"{scene}-{k:03d}",
                    }
                )
                k += 1
    return items


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------


def _check_generation_args(seed: Any, size: Any, variant: Any) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    sizes = STUDY_SIZES if variant == "study" else SIZES
    if size not in sizes:
        raise ValueError(f"{variant} set size must be one of {list(sizes)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"{variant} set seed must be an integer in [0, 2**32), got {seed!r}")


def generate_mini_set(
    out_dir: str | os.PathLike, seed: int = 0, size: str = "default", variant: str = "mini"
) -> dict[str, Any]:
    """Write the mini set (or its study variant) into ``out_dir`` and return its manifest.

    Args:
        out_dir: the folder to write (created; existing mini-set files are overwritten).
        seed: the seed, an integer in ``[0, 2**32)``; the same seed, size and variant give the same annotations and
            the same decoded frames.
        size: ``"tiny"`` (30 clips, for unit tests), ``"small"`` (140) or ``"default"`` (330 clips); the study
            variant has its own counts (:data:`STUDY_SIZES`: conflict clips, and ``"large"``, 1,056 clips).
        variant: ``"mini"`` (64×64 frames, every cue in view of the video tower) or ``"study"`` (wide frames whose
            cues lie outside the tower's centre crop; see the module docstring).

    Returns:
        The manifest also written to ``out_dir/mini_set.json``: variant, seed, size, clip counts per
        config/split/label, scene-tuning counts, paths and the wall time; for the study variant also the conflict
        clips' ids and which scene carries which label.
    """
    _check_generation_args(seed, size, variant)
    source_name = STUDY_SOURCE_NAME if variant == "study" else SOURCE_NAME
    started = time.perf_counter()
    out = Path(out_dir)
    # a previous generation (another size or seed) must not leave unreferenced media behind
    for stale in [*out.glob("videos/*/*.mp4"), *out.glob("scene_tuning/images/*.png")]:
        stale.unlink()
    records: list[ClipRecord] = []
    # clips are cut by the one clip construction (datasets_scripts.windows): a mini source is as long as its clip,
    # so a window as long as the longest source gives one clip per source, which keeps the source's id
    whole = WindowConfig(window=float(max(DURATIONS)), stride=float(max(DURATIONS)))
    plans = _plans(int(seed), size, variant)
    for plan in plans:
        video_dir = out / "videos" / plan.config
        video_dir.mkdir(parents=True, exist_ok=True)
        path = video_dir / f"{plan.clip_id}.mp4"
        write_video(path, render_clip_frames(plan))
        source = SourceVideo(
            source_id=plan.clip_id,
            video=str(path.resolve()),
            duration=float(plan.duration),
            fps=float(FPS),
            split=plan.split,
            config=plan.config,
            segments=[(float(s), float(e), plan.label) for s, e in plan.segments],
            causes={plan.label: plan.cause},
            source=source_name,
        )
        (record,) = ClipWindows([source], whole).windows_of(source)
        record.id = plan.clip_id
        records.append(record)
    counts: dict[str, Any] = {}
    for config in CONFIG_NAMES:
        chosen = [r for r in records if r.config == config]
        write_annotations(chosen, out / f"{config}.jsonl")
        counts[config] = {
            split: {label: sum(r.split == split and r.label == label for r in chosen) for label in LABELS[config]}
            for split in ("train", "test")
        }
    scene_root = out / "scene_tuning"
    image_dir = scene_root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    scene_items = _scene_items(int(seed), size, records, image_dir, scene_root)
    for scene, items in scene_items.items():
        with (scene_root / f"{scene}.jsonl").open("w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item) + "\n")
    manifest = {
        "name": source_name,
        "version": MINI_SET_VERSION,
        "variant": variant,
        "seed": int(seed),
        "size": size,
        "fps": FPS,
        "frame_size": FRAME_SIZE if variant == "mini" else [FRAME_SIZE, STUDY_WIDTH],
        "num_clips": len(records),
        "clips": counts,
        "scene_tuning": {scene: len(items) for scene, items in scene_items.items()},
        "files": {config: f"{config}.jsonl" for config in CONFIG_NAMES}
        | {f"scene_tuning/{scene}": f"scene_tuning/{scene}.jsonl" for scene in SCENE_NAMES},
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if variant == "study":
        manifest["conflict_clips"] = sorted(p.clip_id for p in plans if p.conflict)
        manifest["carriers"] = dict(STUDY_CARRIERS)
    (out / "mini_set.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def generate_study_set(out_dir: str | os.PathLike, seed: int = 0, size: str = "small") -> dict[str, Any]:
    """The study variant of the mini set (:func:`generate_mini_set` with ``variant="study"``)."""
    return generate_mini_set(out_dir, seed=seed, size=size, variant="study")


def conflict_clip_ids(data_dir: str | os.PathLike) -> set[str]:
    """The ids of the conflict clips of a generated study set (empty for the mini set or another data folder)."""
    manifest = Path(data_dir) / "mini_set.json"
    if not manifest.is_file():
        return set()
    return set(json.loads(manifest.read_text(encoding="utf-8")).get("conflict_clips", []))


def load_mini_split(out_dir: str | os.PathLike, config: str, split: str) -> list[ClipRecord]:
    """The validated clip records of one config and split of a generated mini set (strict validation)."""
    path = Path(out_dir) / f"{config}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no mini set at {out_dir}: {path.name} is missing; run generate_mini_set first")
    records, _ = read_annotations(path, strict=True, config=config)
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise ValueError(f"{path}: no clips in split {split!r}; splits present: {sorted({r.split for r in records})}")
    return chosen


def possible_segments(label: str, variant: str = "mini") -> list[list[list[float]]]:
    """Every segment list :func:`generate_mini_set` can give ``label`` (mirrors ``_plan_segments``)."""
    if label in _WHOLE_CLIP_LABELS:
        return [[[0.0, float(d)]] for d in DURATIONS]
    found: dict[str, list[list[float]]] = {}
    for d in DURATIONS:
        for length in STUDY_SEGMENT_LENGTHS if variant == "study" else SEGMENT_LENGTHS:
            for start in range(0, d - length + 1):
                found.setdefault(repr((start, length)), [[float(start), float(start + length)]])
        if d >= 7:
            for l2 in range(2, min(4, d - 5) + 1):
                for s1 in range(0, d - 2 - l2 - 1 + 1):
                    for s2 in range(s1 + 3, d - l2 + 1):
                        found.setdefault(repr((s1, s2, l2)), [[float(s1), float(s1 + 2)], [float(s2), float(s2 + l2)]])
    return list(found.values())


def mini_set_corpus(variant: str = "mini") -> list[str]:
    """Every instruction, answer, cause and prompt text the mini set (and its builders) can produce — the corpus on
    which a tiny tokenizer is trained; the study variant adds its conflict clips' causes. Deterministic order, no
    duplicates."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    texts: list[str] = []
    for config in CONFIG_NAMES:
        texts += [identify_instruction(config), combined_instruction(config)]
        for label in LABELS[config]:
            texts += [locate_instruction(config, label), attribute_instruction(config, label)]
            texts.append(identify_answer(config, label))
            segment_lists = possible_segments(label, variant)
            texts += [locate_answer(label, segments) for segments in segment_lists]
            for cause in CAUSE_TEMPLATES[label]:
                texts += [cause, attribute_answer(cause)]
                texts += [combined_answer(config, label, segments, cause) for segments in segment_lists]
    times = [i / FPS for i in range(max(DURATIONS) * FPS)]
    for config in CONFIG_NAMES:
        for duration in DURATIONS:
            texts.append(build_prompt(combined_instruction(config), times[: duration * FPS]))
    texts += list(SCENE_TUNING_PROMPTS.values())
    texts += list(FACE_DESCRIPTIONS.values()) + list(ACTION_DESCRIPTIONS.values())
    texts += list(BACKGROUND_DESCRIPTIONS.values())
    for color in OBJECT_COLORS:
        for shape in OBJECT_SHAPES:
            texts.append(f"A {color} {shape} {format_region_box([0.07, 0.2, 0.42, 0.99])} on the grey ground.")
    texts.append(" ".join(f"{i / 100:.2f}" for i in range(101)))  # every box coordinate
    if variant == "study":
        for causes in CONFLICT_CAUSE_TEMPLATES.values():
            for cause in causes:
                texts += [cause, attribute_answer(cause)]
                texts += [combined_answer("explicit", "negative", segs, cause) for segs in possible_segments("negative", variant)]
    return list(dict.fromkeys(texts))


__all__ = [
    "CONFLICT_EVENTS",
    "EVENT_COLORS",
    "STUDY_CARRIERS",
    "EXPLICIT_LABELS",
    "IMPLICIT_LABELS",
    "conflict_clip_ids",
    "count_event_pixels",
    "format_region_box",
    "generate_mini_set",
    "generate_study_set",
    "load_mini_split",
    "mini_set_corpus",
    "possible_segments",
    "read_video_frames",
    "render_clip_frames",
    "write_video",
]
