"""The two-stage ICM recipe (paper §3.4, §4.3) from a recipe file, with the ablations of Tables 1-3.

``run_recipe(path_or_dict)`` runs, in order:

1. **data** — the Omni-SILA annotations (``data.data_dir``), or the embedded mini set generated into
   ``<output_dir>/data`` (``data.mini_set``), plus the scene-tuning annotations (``<data_dir>/scene_tuning``);
2. **features** — the frozen scene extractors run once over every clip/image into the feature cache
   (``processing.cache``); cached entries are reused, training never runs extractors;
3. **evaluation of the untrained model** (optional, ``evaluate.before_training``);
4. **stage 1, scene-tuning** on the scene-tuning set (skipped by the ``w/o scene-tuning`` ablation);
5. **K-means IEC dictionary** from the Omni-SILA training clips (§3.3);
6. **stage 2, Omni-SILA tuning**;
7. **evaluation through generation** on the test split, and **saving** (``trainers.saving.save_icm``).

Recipe files are YAML or JSON. A recipe may name a ``base`` recipe (path relative to itself, or the name of a
recipe shipped in ``trainers/recipes/``) and override any of its fields: non-empty mappings merge key by key; an
explicit empty mapping ``{}`` or ``null`` *replaces* what the base holds (``pipeline_kwargs: {}`` drops every key the
base set; ``null`` on a section such as ``stages.scene`` or ``data`` means that section's defaults; ``null`` on a
single value is that value). Unknown fields raise :class:`RecipeError` (a ``ValueError``) naming the field. Files a
recipe names (data folder, extractor checkpoints, the pretrained model) are checked before any work starts
(:func:`preflight`). The fields (defaults in brackets):

.. code-block:: yaml

    base: paper.yaml              # optional
    name: my-run                  # [recipe file name]
    output_dir: runs/my-run       # [runs/<name>]
    seed: 0
    threads: null                 # torch intra-op threads (null: torch's default); 1 is fastest for tiny models
    data:
      data_dir: null              # folder with explicit.jsonl / implicit.jsonl (+ scene_tuning/)
      mini_set: {seed: 0, size: small}   # or generate the embedded mini set (when data_dir is null);
                                         # variant: study = the scene-dependence study set
      configs: [implicit]         # Omni-SILA configs trained on and evaluated
      train_split: train
      eval_split: test
      train_tasks: [identify, locate, attribute, combined]
      max_train_clips: null       # per config
      max_eval_clips: null        # per config
      max_scene_items: null       # scene-tuning records per scene
    features:
      pipeline: tiny              # tiny | lite (real offline weights) | pretrained
      pipeline_kwargs: {}         # ScenePipeline.tiny/from_pretrained arguments
      cache_dir: null             # [<output_dir>/cache]
      num_frames: 8
    model:
      preset: tiny                # tiny | 7b | pretrained | smollm2 (real SmolLM2-135M LLM)
      pretrained: null            # preset pretrained: an ICM folder/id (AutoModel) or a Video-LLaVA id (from_video_llava)
      config_overrides: {}        # IcmConfig fields
      dtype: auto                 # weights of a pretrained model: auto (bfloat16/float16 when training.bf16/fp16 is
                                  # set, else float32) | float32 | bfloat16 | float16
    ablation:                     # Tables 1-3
      scene_tuning: true          # false = "w/o scene-tuning"
      sbm: true                   # false = "w/o SBM"
      iec: true                   # false = "w/o IEC"
      scenes: [face, action, object, background]   # Table 3: the scenes captured
      scene_tokens: true          # false = the Video-LLaVA baseline: the backbone alone (IcmConfig.use_scene_tokens)
      video_tokens: true          # false = "w/o video", scene-only: no <video> tokens (IcmConfig.use_video_tokens)
    training: {...}               # IcmTrainingArguments fields shared by both stages
    stages:
      scene: {...}                # IcmTrainingArguments overrides of stage 1
      omnisila: {...}             # ... of stage 2
    evaluate:
      before_training: true
      attribution_metrics: [sem_r]   # null = all (Sem-C/Sen-A load a sentence encoder)
      max_new_tokens: 96
      batch_size: 8
    save:
      merge_lora: true
      dir: null                   # [<output_dir>/model]
      event_probe: true           # fit the scene probe of event-driven analysis on the training clips and save it
                                  # with the model (event_probe.json; inference.events.SceneEventProbe)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).parent / "recipes"


class RecipeError(ValueError):
    """A recipe that cannot run: an unknown field, a bad value, a missing file."""


# The recipe schema: a nested dict whose leaves are defaults; ``_ARGS`` marks a mapping of IcmTrainingArguments
# fields and ``_FREE`` a free mapping (checked elsewhere).
_ARGS = object()
_FREE = object()
SCHEMA: dict[str, Any] = {
    "base": None,
    "name": None,
    "output_dir": None,
    "seed": 0,
    "threads": None,
    "data": {
        "data_dir": None,
        "mini_set": {"seed": 0, "size": "small", "variant": "mini"},
        "configs": ["implicit"],
        "train_split": "train",
        "eval_split": "test",
        "train_tasks": ["identify", "locate", "attribute", "combined"],
        "max_train_clips": None,
        "max_eval_clips": None,
        "max_scene_items": None,
    },
    "features": {"pipeline": "tiny", "pipeline_kwargs": _FREE, "cache_dir": None, "num_frames": 8},
    "model": {"preset": "tiny", "pretrained": None, "config_overrides": _FREE, "dtype": "auto"},
    "ablation": {
        "scene_tuning": True,
        "sbm": True,
        "iec": True,
        "scenes": ["face", "action", "object", "background"],
        "scene_tokens": True,
        "video_tokens": True,
    },
    "training": _ARGS,
    "stages": {"scene": _ARGS, "omnisila": _ARGS},
    "evaluate": {"before_training": True, "attribution_metrics": ["sem_r"], "max_new_tokens": 96, "batch_size": 8},
    "save": {"merge_lora": True, "dir": None, "event_probe": True},
}


def _training_arg_names() -> set[str]:
    from .args import IcmTrainingArguments

    return {f.name for f in dataclasses.fields(IcmTrainingArguments) if f.init}


def _check(node: Any, schema: Any, where: str) -> None:
    if schema is _FREE:
        if node is not None and not isinstance(node, Mapping):
            raise RecipeError(f"recipe field {where!r} must be a mapping, got {type(node).__name__}")
        return
    if schema is _ARGS:
        if node is None:
            return
        if not isinstance(node, Mapping):
            raise RecipeError(f"recipe field {where!r} must be a mapping of training arguments")
        names = _training_arg_names()
        for key in node:
            if key not in names:
                raise RecipeError(f"unknown recipe field '{where}.{key}': not an IcmTrainingArguments field")
        for forbidden in ("output_dir", "stage"):
            if forbidden in node:
                raise RecipeError(f"recipe field {where}.{forbidden!r} is set by the recipe itself")
        return
    if isinstance(schema, dict):
        if node is None:
            return
        if not isinstance(node, Mapping):
            raise RecipeError(f"recipe field {where or '<root>'!r} must be a mapping, got {type(node).__name__}")
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in schema:
                raise RecipeError(f"unknown recipe field {path!r}; known fields here: {sorted(schema)}")
            _check(value, schema[key], path)


def _merge(base: Any, override: Any) -> Any:
    """``override`` on top of ``base``: non-empty mappings merge key by key; anything else, an empty mapping and
    ``None`` included, replaces the base's value."""
    if isinstance(base, Mapping) and isinstance(override, Mapping) and override:
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _defaults(schema: Any) -> Any:
    if schema is _FREE or schema is _ARGS:
        return {}
    if isinstance(schema, dict):
        return {k: _defaults(v) for k, v in schema.items()}
    return copy.deepcopy(schema)


def _fill_defaults(schema: Any, node: Any) -> Any:
    """The schema's defaults under ``node``: a missing or ``None`` section is its defaults; a leaf keeps ``None``."""
    if schema is _FREE or schema is _ARGS:
        return copy.deepcopy(node) if node is not None else {}
    if isinstance(schema, dict):
        node = node or {}
        return {k: _fill_defaults(v, node[k]) if k in node else _defaults(v) for k, v in schema.items()}
    return copy.deepcopy(node)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
        else:
            data = json.loads(text)
    except Exception as err:
        raise RecipeError(f"recipe file {path} cannot be parsed: {err}") from err
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _resolve_base(name: str, relative_to: Path | None) -> Path:
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / name)
    candidates += [Path(name), RECIPES_DIR / name]
    if not Path(name).suffix:  # a shipped recipe by its name, as load_recipe and --recipe accept it ("demo-real")
        candidates.append(RECIPES_DIR / f"{name}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RecipeError(f"recipe field 'base': {name!r} not found (looked in {[str(c) for c in candidates]})")


def load_recipe(recipe: str | os.PathLike | Mapping) -> dict:
    """Read, resolve ``base`` chains, validate and fill defaults. ``recipe`` is a path, the name of a shipped recipe
    (``"demo"``, ``"paper"``, ...) or a mapping."""
    source_dir: Path | None = None
    if isinstance(recipe, Mapping):
        data = dict(recipe)
    else:
        path = Path(recipe)
        if not path.is_file() and (RECIPES_DIR / f"{recipe}.yaml").is_file():
            path = RECIPES_DIR / f"{recipe}.yaml"
        data = _read_file(path)
        source_dir = path.parent
        data.setdefault("name", path.stem)
    _check(data, SCHEMA, "")
    seen = []
    while data.get("base"):
        base_path = _resolve_base(str(data["base"]), source_dir)
        if base_path.resolve() in seen:
            raise RecipeError(f"recipe field 'base': cycle through {base_path}")
        seen.append(base_path.resolve())
        base = _read_file(base_path)
        _check(base, SCHEMA, "")
        override = {k: v for k, v in data.items() if k != "base"}
        data = _merge(base, override) if override else base  # a bare {"base": ...} is the base itself
        source_dir = base_path.parent
    resolved = _fill_defaults(SCHEMA, data)
    resolved.pop("base", None)
    _validate_values(resolved)
    return resolved


_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _validate_values(r: dict) -> None:
    from modeling_icm.templates import CONFIG_NAMES, SCENE_NAMES
    from processing.pipeline import PIPELINE_KINDS

    for config in r["data"]["configs"]:
        if config not in CONFIG_NAMES:
            raise RecipeError(f"recipe field 'data.configs': unknown config {config!r}; known: {list(CONFIG_NAMES)}")
    scenes = r["ablation"]["scenes"]
    if not scenes or any(s not in SCENE_NAMES for s in scenes):
        raise RecipeError(f"recipe field 'ablation.scenes' must be a non-empty subset of {list(SCENE_NAMES)}")
    if r["features"]["pipeline"] not in PIPELINE_KINDS:
        raise RecipeError("recipe field 'features.pipeline' must be 'tiny', 'lite' or 'pretrained'")
    if r["model"]["preset"] not in ("tiny", "7b", "pretrained", "smollm2"):
        raise RecipeError("recipe field 'model.preset' must be 'tiny', '7b', 'pretrained' or 'smollm2'")
    if r["model"]["preset"] == "pretrained" and not r["model"]["pretrained"]:
        raise RecipeError("recipe field 'model.pretrained' is required with model.preset 'pretrained'")
    if r["model"]["dtype"] not in _DTYPES:
        raise RecipeError(f"recipe field 'model.dtype' must be one of {list(_DTYPES)}, got {r['model']['dtype']!r}")
    from .data import OMNISILA_TASKS

    for task in r["data"]["train_tasks"]:
        if task not in OMNISILA_TASKS:
            raise RecipeError(f"recipe field 'data.train_tasks': unknown task {task!r}; known: {list(OMNISILA_TASKS)}")


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------


def recipe_pipeline(r: dict):
    """The scene extractors a resolved recipe names (``features.pipeline`` and ``pipeline_kwargs``, its scenes)."""
    from processing.pipeline import ScenePipeline

    kwargs = dict(r["features"]["pipeline_kwargs"] or {})
    kwargs.setdefault("scenes", list(r["ablation"]["scenes"]))
    return ScenePipeline.from_kind(r["features"]["pipeline"], **kwargs)


def prepare_data(r: dict, out: Path, log) -> Path:
    """The data folder of a resolved recipe: ``data.data_dir``, or the generated mini / study set in ``out/data``
    (reused when its manifest matches ``data.mini_set``)."""
    data = r["data"]
    if data["data_dir"]:
        data_dir = Path(data["data_dir"])
        if not data_dir.is_dir():
            raise RecipeError(f"recipe field 'data.data_dir': {data_dir} is not a folder")
        return data_dir
    from datasets_scripts.mini_set import generate_mini_set

    mini = data["mini_set"] or {}
    data_dir = out / "data"
    manifest = data_dir / "mini_set.json"
    wanted = {"seed": mini.get("seed", 0), "size": mini.get("size", "small"), "variant": mini.get("variant", "mini")}
    if manifest.is_file():
        existing = json.loads(manifest.read_text())
        if {k: existing.get(k, "mini" if k == "variant" else None) for k in wanted} == wanted:
            log(f"data: reusing the {wanted['variant']} set in {data_dir}")
            return data_dir
    started = time.perf_counter()
    try:
        generate_mini_set(data_dir, **wanted)
    except ValueError as err:
        raise RecipeError(f"recipe field 'data.mini_set': {err}") from None
    log(f"data: generated the {wanted['variant']} set ({wanted}) in {time.perf_counter() - started:.1f}s")
    return data_dir


def data_variant(data_dir: Path) -> str:
    """``"study"`` for a generated study set, else ``"mini"`` (the mini set, or any other data folder)."""
    manifest = Path(data_dir) / "mini_set.json"
    if manifest.is_file():
        return json.loads(manifest.read_text(encoding="utf-8")).get("variant", "mini")
    return "mini"


def clip_records(r: dict, data_dir: Path, config: str, split: str, limit_key: str):
    """The clip records of one config and split that a recipe uses: at most ``data[limit_key]`` of them
    (``max_train_clips`` / ``max_eval_clips``), taken label by label in turn so that a small limit keeps every label."""
    from datasets_scripts.schema import round_robin

    from .data import read_clip_records

    records = read_clip_records(data_dir, config, split)
    limit = r["data"][limit_key]
    if limit is not None:
        records = round_robin(records, lambda rec: rec.label, int(limit))  # a small limit keeps every label
    return records


def _windowed(records) -> bool:
    """Clip windows of longer sources (``datasets_scripts.windows``) rather than whole-video clips (the mini set)."""
    return any(rec.offset > 0 for rec in records)


def _extract(r: dict, data_dir: Path, cache, pipeline, log) -> None:
    from processing.cache import extract_videos

    from .data import extract_still_images, scene_tuning_sources

    num_frames = int(r["features"]["num_frames"])
    records = []
    for config in r["data"]["configs"]:
        for split, key in ((r["data"]["train_split"], "max_train_clips"), (r["data"]["eval_split"], "max_eval_clips")):
            records += clip_records(r, data_dir, config, split, key)
    started = time.perf_counter()
    if _windowed(records):  # clip windows of longer sources: each source once, on its frame grid
        from processing.grid import extract_source_grids

        report = extract_source_grids([rec.video for rec in records], pipeline, cache, progress=False)
    else:
        report = extract_videos([rec.video for rec in records], pipeline, cache, num_frames=num_frames, progress=False)
    log(f"features: Omni-SILA clips: {str(report).splitlines()[0]} ({time.perf_counter() - started:.1f}s)")
    if r["ablation"]["scene_tuning"]:
        scene_dir = data_dir / "scene_tuning"
        scenes = list(r["ablation"]["scenes"])
        video_items, images = scene_tuning_sources(
            scene_dir, scenes, r["data"]["train_split"], r["data"]["max_scene_items"]
        )
        started = time.perf_counter()
        report = extract_videos(video_items, pipeline, cache, num_frames=num_frames, progress=False)
        still = extract_still_images(images, pipeline, cache, num_frames=num_frames)
        log(
            f"features: scene-tuning: {str(report).splitlines()[0]}; images: {len(still['computed'])} computed, "
            f"{len(still['cached'])} cached, {len(still['skipped'])} skipped ({time.perf_counter() - started:.1f}s)"
        )


def _build_model(r: dict, scene_dims: dict[str, int], corpus: list[str]):
    import torch

    overrides = dict(r["model"]["config_overrides"] or {})
    overrides.update(
        use_sbm=bool(r["ablation"]["sbm"]),
        use_iec=bool(r["ablation"]["iec"]),
        enabled_scenes=list(r["ablation"]["scenes"]),
        use_scene_tokens=bool(r["ablation"]["scene_tokens"]),
        use_video_tokens=bool(r["ablation"]["video_tokens"]),
    )
    preset = r["model"]["preset"]
    num_frames = int(r["features"]["num_frames"])
    if preset == "tiny":
        from .presets import tiny_icm

        return tiny_icm(scene_dims, corpus=corpus, seed=int(r["seed"]), num_frames=num_frames, **overrides)
    from inference.trust import config_from_pretrained, model_from_pretrained, processor_from_pretrained
    from modeling_icm.configuration_icm import IcmConfig
    from modeling_icm.modeling_icm import IcmForVideoSentiment

    torch.manual_seed(int(r["seed"]))
    if preset == "smollm2":  # the real SmolLM2-135M LLM, converted once at set-up (processing.real_weights)
        from .presets import smollm2_backbone_dir, smollm2_icm

        source = r["model"]["pretrained"] or smollm2_backbone_dir()
        return smollm2_icm(source, scene_dims, num_frames=num_frames, seed=int(r["seed"]), **overrides)
    if preset == "7b":
        raise RecipeError(
            "recipe field 'model.preset': '7b' builds the architecture only; use preset 'pretrained' with "
            "model.pretrained = a Video-LLaVA-7B id/folder (LanguageBind/Video-LLaVA-7B-hf) to start from its weights"
        )
    source = r["model"]["pretrained"]
    dtype = _model_dtype(r)
    scene_extraction = {"pipeline": r["features"]["pipeline"], **(r["features"]["pipeline_kwargs"] or {})}
    scene_extraction.setdefault("scenes", list(r["ablation"]["scenes"]))
    config = config_from_pretrained(source)  # inference.trust: no code of the folder runs
    if getattr(config, "model_type", None) == "icm":
        processor = processor_from_pretrained(source)
        _check_token_ids(config, processor, source)
        model = model_from_pretrained(source, dtype=dtype, **{"scene_dims": scene_dims, **overrides})
    else:  # a Video-LLaVA checkpoint: build ICM (and its processor) around it
        model, processor = IcmForVideoSentiment.from_video_llava(
            source,
            IcmConfig(scene_dims=scene_dims, num_frames=num_frames, num_scene_tokens=num_frames, **overrides),
            processor_kwargs={"scene_extraction": scene_extraction},
            dtype=dtype,
        )
    processor.scene_extraction = scene_extraction  # icm analyze on the saved model extracts scenes the same way
    if hasattr(processor, "num_scene_tokens"):  # 0 for the Video-LLaVA baseline (use_scene_tokens=False)
        processor.num_scene_tokens = model.config.num_scene_placeholders
    if hasattr(processor, "use_video"):  # False for the scene-only ablation (use_video_tokens=False)
        processor.use_video = bool(model.config.use_video_tokens)
    return model, processor


def _model_dtype(r: dict):
    import torch

    name = r["model"]["dtype"]
    if name == "auto":
        training = r["training"] or {}
        name = "bfloat16" if training.get("bf16") else "float16" if training.get("fp16") else "float32"
    return getattr(torch, name)


def _check_token_ids(config, processor, source: str) -> None:
    """An ICM checkpoint's config and its tokenizer must agree on the placeholder ids."""
    tokenizer = processor.tokenizer
    pairs = (
        ("<scene>", "scene_token_id", config.scene_token_id),
        ("<video>", "backbone_config.video_token_index", config.backbone_config.video_token_index),
    )
    for token, field, wanted in pairs:
        got = tokenizer.convert_tokens_to_ids(token)
        if got in (None, tokenizer.unk_token_id) and got != wanted:
            raise RecipeError(
                f"recipe field 'model.pretrained': {source}: the tokenizer has no {token} token but config.json has "
                f"{field}={wanted}"
            )
        if got != wanted:
            raise RecipeError(
                f"recipe field 'model.pretrained': {source}: the tokenizer already has {token} with id {got} but "
                f"config.json has {field}={wanted}"
            )


_CHECKPOINT_FIELDS = {"face": (), "action": ("action_checkpoint",), "object": ("relation_checkpoint",),
                      "background": ("sam_checkpoint",)}  # fmt: skip


def preflight(r: dict) -> None:
    """Check the files a resolved recipe names before any work starts; raise :class:`RecipeError` naming the field
    and the file: the data folder, the extractor checkpoints of the enabled scenes (``features.pipeline:
    pretrained``), and ``model.pretrained`` (a local ICM / Video-LLaVA folder with its processor files, or a Hub
    id that loads)."""
    if r["data"]["data_dir"] and not Path(r["data"]["data_dir"]).is_dir():
        raise RecipeError(f"recipe field 'data.data_dir': {r['data']['data_dir']} is not a folder")
    if r["features"]["pipeline"] == "pretrained":
        kwargs = r["features"]["pipeline_kwargs"] or {}
        for scene in r["ablation"]["scenes"]:
            for field in _CHECKPOINT_FIELDS[scene]:
                path = kwargs.get(field)
                if not path:
                    raise RecipeError(
                        f"recipe field 'features.pipeline_kwargs.{field}' is required for the {scene!r} scene"
                    )
                if not Path(path).is_file():
                    raise RecipeError(f"recipe field 'features.pipeline_kwargs.{field}': {path}: file not found")
        import inspect

        from processing.pipeline import ScenePipeline

        defaults = inspect.signature(ScenePipeline.from_pretrained).parameters
        for scene, field in (("face", "face_encoder"), ("background", "background_encoder")):
            if scene in r["ablation"]["scenes"]:
                value = kwargs.get(field, defaults[field].default)
                if isinstance(value, str):
                    _check_pretrained_ref(f"recipe field 'features.pipeline_kwargs.{field}'", value)
    if r["model"]["preset"] != "pretrained":
        return
    source = str(r["model"]["pretrained"])
    field = "recipe field 'model.pretrained'"
    if Path(source).is_dir():
        config_file = Path(source) / "config.json"
        if not config_file.is_file():
            raise RecipeError(f"{field}: {config_file}: file not found")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except ValueError as err:
            raise RecipeError(f"{field}: {config_file}: not valid JSON ({err})") from err
        if model_type == "icm":
            from inference.trust import UntrustedCodeError, config_from_pretrained, processor_from_pretrained

            try:
                _check_token_ids(config_from_pretrained(source), processor_from_pretrained(source), source)
            except UntrustedCodeError as err:
                raise RecipeError(f"{field}: {err}") from err
            return
        from modeling_icm.processing_icm import check_video_llava_folder

        try:
            check_video_llava_folder(source, need_weights=True)
        except (OSError, ValueError) as err:
            raise RecipeError(f"{field}: {err}") from err
        return
    _check_pretrained_ref(field, source)


def _check_pretrained_ref(field: str, source: str) -> None:
    """``source`` is a local folder or a Hub id whose config loads (from the cache when offline)."""
    if Path(source).is_dir():
        return
    try:
        from inference.trust import config_from_pretrained

        config_from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - offline, unknown id, no access: all mean "cannot start"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RecipeError(
            f"{field}: {source} is not a local folder and does not load as a Hub id ({first[:160]}); download it "
            f"(huggingface-cli download {source} --local-dir checkpoints/{source.rsplit('/', 1)[-1]}) and name the folder"
        ) from err


def _training_args(r: dict, stage: str, out: Path):
    from .args import IcmTrainingArguments

    kwargs = {"seed": int(r["seed"]), "save_strategy": "no", "disable_tqdm": True, "logging_steps": 10}
    kwargs.update(r["training"] or {})
    kwargs.update(r["stages"][stage] or {})
    kwargs["output_dir"] = str(out / f"stage-{stage}")
    kwargs["stage"] = stage
    # YAML 1.1 reads `3e-4` (no dot) as a string: a number-looking string for a float field is read as the number
    floats = {f.name for f in dataclasses.fields(IcmTrainingArguments) if "float" in str(f.type)}
    for key, value in list(kwargs.items()):
        if key in floats and isinstance(value, str):
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise RecipeError(f"recipe stages.{stage} / training: {key} must be a number, got {value!r}") from None
    try:
        return IcmTrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"recipe stages.{stage} / training: {err}") from err


def _evaluate(model, processor, eval_sets: dict, r: dict, log, tag: str, out: Path | None = None) -> dict:
    """Generate and score every evaluation clip; with ``out``, every answer is written to
    ``<out>/predictions-<tag>-<config>.jsonl`` as ``{"id": clip_id, "answer"}`` (what ``icm evaluate`` reads)."""
    from .evaluation import evaluate_generation

    results = {}
    for config, examples in eval_sets.items():
        started = time.perf_counter()
        scores = evaluate_generation(
            model,
            processor,
            examples,
            batch_size=int(r["evaluate"]["batch_size"]),
            max_new_tokens=int(r["evaluate"]["max_new_tokens"]),
            attribution_metrics=r["evaluate"]["attribution_metrics"],
            config_name=config,
        )
        results[config] = {"metrics": scores["metrics"], "predictions": scores["predictions"][:5]}
        if out is not None:
            rows = [{"id": e.get("clip_id"), "answer": a} for e, a in zip(examples, scores["predictions"])]
            (out / f"predictions-{tag}-{config}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        m = scores["metrics"]
        log(
            f"evaluate[{tag}] {config}: acc={m.get('acc', 0):.3f} f2={m.get('f2', 0):.3f} "
            f"map_avg={m.get('map_avg', 0):.3f} fnr={m.get('fnr', 0):.3f} ({time.perf_counter() - started:.1f}s); "
            f"e.g. {scores['predictions'][0]!r}"
        )
    return results


def _diagnose(model, processor, eval_sets: dict, r: dict, log, tag: str, before: dict | None = None) -> dict:
    """The scene-pathway diagnostics (``trainers.diagnostics``) on every evaluation clip, per config; a warning
    when the scene tokens have collapsed to one vector."""
    from .diagnostics import collapse_warning, scene_diagnostics

    results = {}
    for config, examples in eval_sets.items():
        found = scene_diagnostics(model, processor, examples, batch_size=int(r["evaluate"]["batch_size"]))
        if not found:
            continue
        results[config] = found
        routers = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in found.items() if k.startswith("router_weight/"))
        log(
            f"scene diagnostics[{tag}] {config}: spread={found['scene_spread']:.4f} "
            f"norm_ratio={found['scene_norm_ratio']:.2f} sensitivity={found.get('scene_sensitivity', 0.0):.4f} "
            f"router {routers}"
        )
        warning = collapse_warning(found, (before or {}).get(config))
        if warning:
            logger.warning(f"{config}: {warning}")
            log(f"WARNING {config}: {warning}")
    return results


def _probe(train_sets: dict, eval_sets: dict, scenes: list[str], log) -> dict:
    """Per config, a linear probe on the same scene features (``trainers.diagnostics.scene_probe``): the accuracy a
    model that carries the scene information to the answer can reach."""
    from .diagnostics import scene_probe

    results = {}
    for config, examples in eval_sets.items():
        found = scene_probe(train_sets.get(config, []), examples, scenes)
        if found:
            results[config] = found
            log(
                f"scene probe {config}: a linear probe on the scene features gets acc {found['probe_acc']:.3f} on "
                f"the {found['eval_clips']} evaluation clips (train {found['probe_train_acc']:.3f}, chance "
                f"{found['chance']:.3f})"
            )
    return results


def _event_probes(train_sets: dict, eval_sets: dict, scenes: list[str], pipeline_hash: str, model_dir: Path,
                  log) -> dict:  # fmt: skip
    """Per config, the scene probe of event-driven analysis (``inference.events.SceneEventProbe``: normal label or
    not, from the pooled scene features) fitted on the training clips, scored on the evaluation clips and saved with
    the model; a config whose training clips lack the normal label or every other label has none."""
    from inference.events import NORMAL_LABELS, SceneEventProbe, save_event_probes

    probes, report = [], {}
    for config, examples in train_sets.items():
        try:
            probe = SceneEventProbe.fit(examples, config, scenes, pipeline_hash=pipeline_hash)
        except ValueError as err:
            log(f"event probe {config}: not fitted ({err})")
            continue
        clips = {e.get("clip_id", i): e for i, e in enumerate(eval_sets.get(config, []))}
        right = [(probe.score(e["scene_features"], e.get("scene_masks")) >= 0.5) == (e["label"] != NORMAL_LABELS[config])
                 for e in clips.values()]  # fmt: skip
        report[config] = {**probe.trained_on, "eval_clips": len(right),
                          "eval_accuracy": round(sum(right) / len(right), 4) if right else None}  # fmt: skip
        probes.append(probe)
        log(f"event probe {config}: {probe.trained_on['clips']} training clips ({probe.trained_on['normal']} "
            f"{NORMAL_LABELS[config]}), train acc {probe.trained_on['train_accuracy']:.3f}, held-out acc "
            f"{report[config]['eval_accuracy']} on {len(right)} clips")  # fmt: skip
    if probes:
        save_event_probes(probes, model_dir)
    return report


def _data_and_features(r: dict, out: Path, log, timings: dict) -> dict:
    """Steps 1-2: the data folder and the scene features of every clip/image into the cache."""
    from processing.cache import FeatureCache

    started = time.perf_counter()
    data_dir = prepare_data(r, out, log)
    timings["data_s"] = time.perf_counter() - started
    started = time.perf_counter()
    pipeline = recipe_pipeline(r)
    cache = FeatureCache(Path(r["features"]["cache_dir"] or out / "cache"))
    _extract(r, data_dir, cache, pipeline, log)
    features = {
        "pipeline_hash": pipeline.config_hash(),
        "scene_dims": dict(pipeline.output_dims),
        "cache_dir": str(cache.root),
        "data_dir": str(data_dir),
    }
    del pipeline  # the extractors are done: training reads the cache
    timings["features_s"] = time.perf_counter() - started
    return features


def extract_features(recipe: str | os.PathLike | Mapping, output_dir: str | os.PathLike | None = None, log=None) -> dict:
    """Only steps 1-2 of :func:`run_recipe` (``icm extract --recipe``): the recipe's data and its scene features
    in its feature cache, which a later ``run_recipe`` of the same recipe reuses. Returns ``{"pipeline_hash",
    "scene_dims", "cache_dir", "data_dir", "timings"}``."""
    r = load_recipe(recipe)
    preflight(r)
    out = Path(output_dir or r["output_dir"] or Path("runs") / (r["name"] or "recipe"))
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    features = _data_and_features(r, out, log or logger.info, timings)
    return {**features, "timings": timings}



def single_threaded(recipe: dict) -> dict:
    """``recipe`` for a run in a worker process beside others (``icm compare --jobs``, the demo's two trainings):
    torch set to one thread now, and the recipe's ``threads`` set to 1 so that :func:`run_recipe` keeps it. Two runs
    of two threads each on a 2-core CPU spin against each other: a SmolLM2 run's scene stage took 351 s beside
    another instead of 32 s alone."""
    import torch

    torch.set_num_threads(1)
    return recipe if recipe.get("threads") in (None, 1) else {**recipe, "threads": 1}


def run_recipe(recipe: str | os.PathLike | Mapping, output_dir: str | os.PathLike | None = None, log=None) -> dict:
    """Run a recipe (see the module docstring). ``output_dir`` overrides the recipe's. ``log`` receives progress
    lines (default: the ``logging`` module).

    Returns ``{"name", "output_dir", "model_dir", "recipe" (resolved), "metrics": {"untrained": {config: {...}},
    "trained": {...}}, "stages": {stage: {"train_loss", "log_history", "runtime_s", ...}}, "dictionary": {...},
    "timings": {...}}`` and writes it to ``<output_dir>/results.json``."""
    import torch

    from processing.cache import FeatureCache

    from .data import omnisila_examples, scene_tuning_examples
    from .kmeans_init import initialize_iec_dictionary
    from .saving import save_icm
    from .scene_stats import fit_scene_standardization
    from .trainer import IcmTrainer

    r = load_recipe(recipe)
    preflight(r)
    log = log or logger.info
    out = Path(output_dir or r["output_dir"] or Path("runs") / (r["name"] or "recipe"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.resolved.json").write_text(json.dumps(r, indent=1, default=str))
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"name": r["name"], "output_dir": str(out), "recipe": r, "metrics": {}, "stages": {}}
    torch.manual_seed(int(r["seed"]))
    if r["threads"] is not None:
        torch.set_num_threads(int(r["threads"]))
    result["threads"] = torch.get_num_threads()  # what the run used (the recipe's, or the caller's when null)

    result["features"] = _data_and_features(r, out, log, timings)
    data_dir, pipeline_hash = Path(result["features"]["data_dir"]), result["features"]["pipeline_hash"]
    scene_dims = result["features"]["scene_dims"]
    cache = FeatureCache(result["features"]["cache_dir"])

    num_frames = int(r["features"]["num_frames"])
    train_sets, eval_sets = {}, {}
    for config in r["data"]["configs"]:
        for split, key, target, tasks in (
            (r["data"]["train_split"], "max_train_clips", train_sets, r["data"]["train_tasks"]),
            (r["data"]["eval_split"], "max_eval_clips", eval_sets, ["combined"]),
        ):
            records = clip_records(r, data_dir, config, split, key)
            grid = None
            if _windowed(records):
                from processing.grid import GridClips

                grid = GridClips(cache, pipeline_hash, num_frames=num_frames)
            target[config] = omnisila_examples(
                data_dir, config, split, cache, pipeline_hash, num_frames, tasks=tasks,
                clip_ids=[rec.id for rec in records], grid=grid,
            )  # fmt: skip
    train_examples = [e for ex in train_sets.values() for e in ex]
    scene_examples = []
    if r["ablation"]["scene_tuning"]:
        scene_examples = list(
            scene_tuning_examples(
                data_dir / "scene_tuning",
                cache,
                pipeline_hash,
                list(r["ablation"]["scenes"]),
                r["data"]["train_split"],
                num_frames,
                max_per_scene=r["data"]["max_scene_items"],
            )
        )
    log(
        f"data: {len(train_examples)} Omni-SILA training examples, {len(scene_examples)} scene-tuning examples, "
        f"{sum(len(v) for v in eval_sets.values())} evaluation clips"
    )

    from datasets_scripts.mini_set import mini_set_corpus

    corpus = mini_set_corpus(data_variant(data_dir)) if r["model"]["preset"] == "tiny" else []
    corpus += sorted({e["answer"] for e in scene_examples} | {e["answer"] for e in train_examples})
    model, processor = _build_model(r, scene_dims, corpus)

    # IcmConfig.scene_feature_norm = "standardize": the training clips' feature statistics, before any measurement
    result["scene_statistics"] = fit_scene_standardization(model, train_examples)
    if "skipped" not in result["scene_statistics"]:
        log(f"scene feature statistics from the training clips: {result['scene_statistics']} items per scene")
    result["diagnostics"] = {"untrained": _diagnose(model, processor, eval_sets, r, log, "untrained")}
    if model.config.use_scene_tokens:
        result["diagnostics"]["scene_probe"] = _probe(train_sets, eval_sets, model.config.active_scenes, log)
    if r["evaluate"]["before_training"]:
        started = time.perf_counter()
        result["metrics"]["untrained"] = _evaluate(model, processor, eval_sets, r, log, "untrained", out)
        timings["evaluate_untrained_s"] = time.perf_counter() - started

    stage_plan = []
    if r["ablation"]["scene_tuning"]:
        stage_plan.append(("scene", scene_examples))
    stage_plan.append(("omnisila", train_examples))
    for stage, examples in stage_plan:
        if stage == "omnisila":
            started = time.perf_counter()
            args = _training_args(r, stage, out)
            result["dictionary"] = initialize_iec_dictionary(
                model, train_examples, backend=args.kmeans_backend, seed=int(r["seed"]), max_iter=args.kmeans_max_iter
            )
            timings["kmeans_s"] = time.perf_counter() - started
            log(f"IEC dictionary: {result['dictionary']}")
        args = _training_args(r, stage, out)
        started = time.perf_counter()
        trainer = IcmTrainer(model=model, args=args, processor=processor, train_dataset=examples)
        train_output = trainer.train()
        model = trainer.model
        elapsed = time.perf_counter() - started
        timings[f"stage_{stage}_s"] = elapsed
        history = trainer.state.log_history
        result["stages"][stage] = {
            "examples": len(examples),
            "steps": trainer.state.global_step,
            "train_loss": float(train_output.training_loss),
            "first_logged": next((h for h in history if "lm_loss" in h), None),
            "last_logged": next((h for h in reversed(history) if "lm_loss" in h), None),
            "log_history": history,
            "runtime_s": elapsed,
        }
        log(
            f"stage {stage}: {len(examples)} examples, {trainer.state.global_step} steps, train_loss "
            f"{train_output.training_loss:.3f} ({elapsed:.1f}s)"
        )

    result["diagnostics"]["trained"] = _diagnose(
        model, processor, eval_sets, r, log, "trained", before=result["diagnostics"]["untrained"]
    )
    started = time.perf_counter()
    result["metrics"]["trained"] = _evaluate(model, processor, eval_sets, r, log, "trained", out)
    timings["evaluate_trained_s"] = time.perf_counter() - started

    model_dir = Path(r["save"]["dir"] or out / "model")
    save_icm(model, model_dir, merge_lora=bool(r["save"]["merge_lora"]), processor=processor)
    result["model_dir"] = str(model_dir)
    if r["save"]["event_probe"] and model.config.use_scene_tokens:
        result["event_probe"] = _event_probes(train_sets, eval_sets, list(model.config.active_scenes), pipeline_hash,
                                              model_dir, log)  # fmt: skip
    result["timings"] = timings
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    log(f"saved the model to {model_dir}; results in {out / 'results.json'}")
    return result


__all__ = ["RecipeError", "SCHEMA", "clip_records", "data_variant", "extract_features", "load_recipe", "preflight",
           "prepare_data", "recipe_pipeline", "run_recipe", "single_threaded"]  # fmt: skip
