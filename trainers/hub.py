"""Hub export (the library side of ``icm push``): the model repository (safetensors, remote code, processor, tokenizer, config with
``auto_map``, a model card generated with ``huggingface_hub.ModelCard``/``ModelCardData`` whose ``eval_results``
become the ``model-index``) and the web-app Space; then the upload of any exported folder — a model, a data set
(``datasets_scripts.export.export_dataset`` writes it) or the metric Space (``create_repo`` + ``upload_folder``). Writing a folder and uploading it are separate steps (``export_*`` then :func:`upload`).

Errors: :class:`HubExportError` (a ``ValueError``) for bad input — it names the file, folder or field;
:class:`HubUploadError` (an ``OSError``) when the Hub cannot be reached — the folder stays on disk.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class HubError(Exception):
    """Base of the Hub export errors."""


class HubExportError(HubError, ValueError):
    """Bad input to an export: the message names the file, folder or field."""


class HubUploadError(HubError, OSError):
    """The upload failed (network, authentication); the exported folder stays on disk."""


VIDEO_LLAVA_7B_ID = "LanguageBind/Video-LLaVA-7B-hf"
PIPELINE_TAG = "video-text-to-text"
LIBRARY_NAME = "transformers"
MODEL_TAGS = ("omni-sila", "icm", "video-sentiment", "temporal-localization", "video-llava", "custom_code")
#: Files a model repository must hold to load with AutoModel/AutoProcessor(trust_remote_code=True).
REQUIRED_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "configuration_icm.py",
    "modeling_icm.py",
    "processing_icm.py",
    "templates.py",
    "pipeline_icm.py",
    "processor_config.json",
    "tokenizer.json",
    "README.md",
)
CITATION = """@inproceedings{omnisila2025,
  title = {Omni-SILA: Towards Omni-scene Driven Visual Sentiment Identifying, Locating and Attributing in Videos},
  booktitle = {Proceedings of the ACM Web Conference 2025 (WWW '25)},
  year = {2025},
  doi = {10.1145/3696410.3714642}
}"""


def is_video_llava_7b(config) -> bool:
    """Whether an ICM config's backbone has the shape of Video-LLaVA-7B (then its weights can descend from it)."""
    text = config.backbone_config.text_config
    vision = config.backbone_config.vision_config
    return (text.hidden_size, text.num_hidden_layers, text.vocab_size, vision.hidden_size) == (4096, 32, 32064, 1024)


def read_evaluations(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    documents = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise HubExportError(f"evaluation results {path}: file not found (write it with `icm evaluate --out`)")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise HubExportError(f"evaluation results {path}: not JSON ({err.msg})") from err
        if not isinstance(document, Mapping) or not isinstance(document.get("metrics"), Mapping):
            raise HubExportError(f"evaluation results {path}: not an `icm evaluate` JSON (no 'metrics' object)")
        documents.append(dict(document))
    return documents


def eval_results(documents: Sequence[Mapping[str, Any]]):
    """``huggingface_hub.EvalResult`` rows (-> ``model-index``) of ``icm evaluate`` documents (NaN/null skipped)."""
    from huggingface_hub import EvalResult

    from evaluate_metrics.tables import METRIC_NAMES  # the names `icm evaluate` tables print

    rows = []
    for document in documents:
        dataset = dict(document.get("dataset") or {})
        config = document.get("config", dataset.get("config"))
        for key, name in METRIC_NAMES.items():
            value = document["metrics"].get(key)
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                continue
            rows.append(
                EvalResult(
                    task_type=PIPELINE_TAG,
                    task_name="Omni-SILA: identify, locate and attribute visual sentiments",
                    dataset_type=str(dataset.get("type", "omni-sila")),
                    dataset_name=str(dataset.get("name", f"Omni-SILA {config}")),
                    dataset_config=config,
                    dataset_split=dataset.get("split"),
                    metric_type=key,
                    metric_name=name,
                    metric_value=round(float(value), 6),
                )
            )
    return rows


def _card_body(repo_id: str, config, parts: Mapping[str, int], documents, base_model: str | None) -> str:
    from evaluate_metrics.tables import metrics_table

    backbone = config.backbone_config.text_config
    size = (
        f"a Video-LLaVA-7B-size backbone ({parts['backbone'] / 1e9:.2f}B parameters)"
        if is_video_llava_7b(config)
        else f"a small backbone ({parts['backbone'] / 1e6:.2f}M parameters, LLM hidden {backbone.hidden_size}, "
        f"{backbone.num_hidden_layers} layers) — a test/demo-size model, not the paper's 7B model"
    )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "ICM (Implicit-enhanced Causal MoE) for **Omni-SILA**: given a video, *identify* what visual sentiment it "
        "shows, *locate* when (seconds) and *attribute* why, from explicit (facial expression) and implicit (human "
        "action, object relations, visual background) scene information (Omni-SILA, WWW 2025).",
        "",
        f"This checkpoint is {size}, plus the ICM modules ({parts['icm_total'] / 1e6:.2f}M parameters): the "
        f"Scene-Balanced MoE with experts for {', '.join(config.active_scenes)} "
        f"(SBM {'on' if config.use_sbm else 'off'}), the Implicit-Enhanced Causal block "
        f"(IEC {'on' if config.use_iec else 'off'}, dictionary of {config.iec_dictionary_size} K-means centres) and the "
        f"scene projector; {config.num_frames} frames per clip.",
        "",
    ]
    note = getattr(config.backbone_config, "weights_note", None)
    if note:  # which backbone parts are real and which random (trainers.presets.SMOLLM2_WEIGHTS_NOTE)
        lines += [f"**Weights**: {note}.", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        "# the scene extractors run inside the processor: pip install 'omnisila-icm[scene]'",
        'from modeling_icm.templates import combined_instruction  # also shipped here as templates.py',
        'batch = processor(["video.mp4"], text=[combined_instruction("implicit")])',
        "out = model.generate(**batch, max_new_tokens=96, do_sample=False)",
        'print(processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "The `video-sentiment-analysis` pipeline ships with the remote code (long videos: sliding windows merged into "
        "segments with confidence, attribution and scene weights):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'analyser = pipeline("video-sentiment-analysis", model="{repo_id}", trust_remote_code=True)',
        'analyser("video.mp4")  # {"video", "duration", "num_windows", "segments": [{start, end, sentiment, ...}]}',
        "```",
        "",
        "Or with the command line of `omnisila-icm`: `icm analyze video.mp4 --model " + repo_id + "` (long videos: "
        "sliding windows, one JSON entry per located segment with confidence and scene weights, and a timeline).",
        "",
    ]
    if documents:
        lines += ["## Evaluation", ""]
        for document in documents:
            dataset = document.get("dataset") or {}
            lines += [f"**{dataset.get('name', document.get('config'))}** ({document.get('metrics', {}).get('num_examples', '?')} "
                      "examples)", "", metrics_table({"this model": document["metrics"]}), ""]  # fmt: skip
    from processing.relation import RANDOM_WEIGHTS_OBJECT_NOTE

    lines += [
        "## Limitations",
        "",
        "The answers are generated text, parsed back into a label, segments and an attribution; an unreadable answer "
        "counts as wrong. Scene features come from frozen extractors (MTCNN + a face CNN, HigherHRNet, RelTR, SAM + "
        "ViT); their failures (no face found, small objects) propagate. FNRs matter most for safety uses: check them "
        "per label before deploying.",
        "",
        RANDOM_WEIGHTS_OBJECT_NOTE,
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
    ]
    return "\n".join(lines)


def model_card(
    model,
    repo_id: str,
    *,
    documents: Sequence[Mapping[str, Any]] = (),
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    base_model: str | None = "auto",
):
    """The model card (``huggingface_hub.ModelCard``) of an ICM model."""
    from huggingface_hub import ModelCard, ModelCardData

    config = model.config
    if base_model == "auto":
        base_model = VIDEO_LLAVA_7B_ID if is_video_llava_7b(config) else None
    elif base_model in ("", "none", None):
        base_model = None
    data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        base_model=base_model,
        license=license,
        datasets=list(datasets) or None,
        language=["en"],
        tags=list(MODEL_TAGS),
        metrics=sorted({row.metric_type for row in eval_results(documents)}) or None,
        eval_results=eval_results(documents) or None,
    )
    body = _card_body(repo_id, config, model.num_parameters_by_part(), documents, base_model)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def export_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    eval_files: Sequence[str | os.PathLike] = (),
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    base_model: str | None = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """Write the Hub layout of a saved ICM model into ``out_dir`` and return it. ``trust_remote_code``: let the
    model folder run its own code (``inference.trust``; off, a folder whose code differs is refused)."""
    from inference.loading import load_model

    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve():
        raise HubExportError(f"output folder {out} is the model folder itself; choose another folder for the Hub layout")
    documents = read_evaluations(eval_files)
    model, processor = load_model(model_dir, trust_remote_code=trust_remote_code)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)  # safetensors + remote code + config.json with auto_map
    processor.save_pretrained(out)
    from inference.events import EVENT_PROBE_FILE

    if (Path(model_dir) / EVENT_PROBE_FILE).is_file():  # the scene probe of event-driven analysis travels along
        shutil.copy2(Path(model_dir) / EVENT_PROBE_FILE, out / EVENT_PROBE_FILE)
    card = model_card(model, repo_id, documents=documents, license=license, datasets=datasets, base_model=base_model)
    card.save(out / "README.md")
    missing = [name for name in REQUIRED_MODEL_FILES if not (out / name).is_file()]
    if missing:
        raise HubExportError(f"the Hub layout in {out} lacks {missing}")
    config = json.loads((out / "config.json").read_text())
    if "AutoModel" not in config.get("auto_map", {}):
        raise HubExportError(f"{out}/config.json has no auto_map.AutoModel: the model class was not registered for Auto")
    if "video-sentiment-analysis" not in config.get("custom_pipelines", {}):
        raise HubExportError(f"{out}/config.json has no custom_pipelines entry for video-sentiment-analysis")
    return out


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str,
    *,
    private: bool = False,
    token: str | None = None,
    space_sdk: str | None = None,
    api=None,
) -> str:
    """``create_repo`` + ``upload_folder``; returns the commit URL. Failures are one-line :class:`HubUploadError`."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    try:
        kwargs = {"space_sdk": space_sdk} if repo_type == "space" else {}
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **kwargs)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message="Upload with `icm push`"
        )
    except Exception as err:  # noqa: BLE001 - network/auth failures: one clear line, the folder stays on disk
        raise HubUploadError(
            f"cannot upload {folder} to the Hub {repo_type} {repo_id}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__} "
            "(the folder is written; retry with network access and `hf auth login`)"
        ) from err
    return str(getattr(info, "commit_url", info))


#: Top-level packages of this repository the app Space vendors (the Space installs no omnisila-icm wheel).
APP_SPACE_PACKAGES = ("modeling_icm", "processing", "evaluate_metrics", "inference", "trainers", "icm_cli")
_APP_SPACE_REQUIREMENTS = """\
torch>=2.4
torchvision>=0.19
transformers>=5.0
huggingface_hub>=0.30
gradio>=6,<7
av>=12
decord>=0.6
numpy>=1.24
pillow>=10
matplotlib>=3.7
tqdm>=4.60
safetensors>=0.4
accelerate>=1.0
"""
_APP_SPACE_APP = '''"""Hugging Face Space entry point: the ICM web app (written by `icm push --model ... --space`)."""

import os

from icm_cli.app import launch_app

MODEL = os.environ.get("ICM_MODEL", {model!r})
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")

if __name__ == "__main__":
    launch_app(
        MODEL,
        host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        examples_dir=EXAMPLES if os.path.isdir(EXAMPLES) else None,
        config_name=os.environ.get("ICM_CONFIG", {config_name!r}),
    )
'''


def export_app_space(
    model_ref: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    *,
    examples: Sequence[str | os.PathLike] = (),
    config_name: str = "implicit",
    license: str = "apache-2.0",
) -> Path:
    """Write the web app (``icm_cli.app``) as a Gradio Hub Space into ``out_dir`` and return it: ``app.py``, the
    Space card (``README.md`` front matter: ``sdk: gradio``, ``app_file: app.py``), ``requirements.txt``, the
    vendored packages of this repository, example videos, and the model — copied into ``model/`` when
    ``model_ref`` is a local folder (checked like any model folder), or loaded from the Hub when it is a Hub id."""
    from inference.loading import HUB_ID_RE, check_model_dir

    out = Path(out_dir)
    source = Path(model_ref)
    if source.exists():
        check_model_dir(source)
        if out.resolve() == source.resolve():
            raise HubExportError(f"output folder {out} is the model folder itself; choose another folder for the Space")
    elif not HUB_ID_RE.match(str(model_ref)):
        raise HubExportError(f"model {model_ref}: no such directory, and not a Hub id of the form org/name")
    try:
        import gradio

        sdk_version = gradio.__version__
    except ImportError:
        sdk_version = "6.0.0"
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for package in APP_SPACE_PACKAGES:
        shutil.copytree(root / package, out / package, ignore=ignore, dirs_exist_ok=True)
    model_in_space = str(model_ref)
    if source.exists():
        shutil.copytree(source, out / "model", ignore=ignore, dirs_exist_ok=True)
        model_in_space = "model"
    for video in examples:
        video = Path(video)
        if not video.is_file():
            raise HubExportError(f"example video {video}: file not found")
        (out / "examples").mkdir(exist_ok=True)
        shutil.copy2(video, out / "examples" / video.name)
    (out / "app.py").write_text(_APP_SPACE_APP.format(model=model_in_space, config_name=config_name), encoding="utf-8")
    (out / "requirements.txt").write_text(_APP_SPACE_REQUIREMENTS, encoding="utf-8")
    title = repo_id.split("/")[-1]
    card = (
        f"---\ntitle: {title}\nemoji: 🎬\ncolorFrom: indigo\ncolorTo: red\nsdk: gradio\nsdk_version: {sdk_version}\n"
        f"app_file: app.py\npinned: false\nlicense: {license}\ntags:\n"
        + "".join(f"- {t}\n" for t in MODEL_TAGS if t != "custom_code")
        + f"---\n\n# {title}\n\nThe ICM web app (Omni-SILA): upload a video and see the located visual sentiments on a "
        "timeline, with their confidences, the scene weights and the attribution. Model: "
        f"`{model_ref if not source.exists() else 'model/ (in this Space)'}`.\n\nRun it locally with "
        "`pip install -r requirements.txt && python app.py`.\n"
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


__all__ = [
    "APP_SPACE_PACKAGES",
    "HubError",
    "HubExportError",
    "HubUploadError",
    "REQUIRED_MODEL_FILES",
    "eval_results",
    "export_app_space",
    "export_model",
    "is_video_llava_7b",
    "model_card",
    "read_evaluations",
    "upload",
]
