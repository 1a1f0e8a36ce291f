"""The web app of ICM (``icm serve``, and the Hub Space ``icm push --space`` writes): upload or pick a video, see the
timeline picture, the segments with their confidences, the scene weights and the attribution.

A thin layer over the library's analysis API (:func:`inference.analysis.analyze_video`), built with Gradio 6
(``pip install 'omnisila-icm[app]'``). What it guards:

* **uploads**: size (``max_upload_mb``, enforced by the server before a file is stored), type (video extensions in
  the browser, then a real decode on the server), length (``max_duration_s``) and run time (``max_run_s``: the
  analysis stops there and shows the windows done so far);
* **bad input** (a non-video, a zero-byte or truncated file, a video too long): a message naming the file; the
  app keeps running;
* **several users**: one analysis at a time on the one model (a queue; the others see their place in it);
* **files**: it serves only its own examples folder and the files it writes (``allowed_paths``); it binds
  127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SEGMENT_HEADERS = ["start (s)", "end (s)", "sentiment", "confidence", "top scene", "attribution"]
SCENE_HEADERS = ["segment", "face", "action", "object", "background"]
INSTALL_HINT = "pip install 'omnisila-icm[app]'"


class RunTimeLimit(Exception):
    """Raised from the progress callback when an analysis reaches ``max_run_s``."""


def _gradio():
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(f"the web app needs gradio (>= 6), which is not installed. Install it with: {INSTALL_HINT}") from err
    return gr


def list_examples(examples_dir: str | os.PathLike | None) -> list[Path]:
    """The video files directly inside ``examples_dir`` (sorted by name)."""
    if not examples_dir:
        return []
    folder = Path(examples_dir)
    if not folder.is_dir():
        raise ValueError(f"examples folder {folder}: not a directory")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def segment_rows(document: dict[str, Any]) -> list[list[Any]]:
    """The segments table: one row per merged segment."""
    rows = []
    for s in document.get("segments", []):
        weights = s.get("scene_weights") or {}
        top = max(weights, key=weights.get) if weights else "-"
        rows.append([round(s["start"], 2), round(s["end"], 2), s["sentiment"], round(s["confidence"], 3), top,
                     s.get("attribution", "")])  # fmt: skip
    return rows


def scene_rows(document: dict[str, Any]) -> list[list[Any]]:
    """The scene-weights table: the router's weight of each scene, per segment."""
    rows = []
    for s in document.get("segments", []):
        weights = s.get("scene_weights") or {}
        rows.append([f"{s['sentiment']} {s['start']:.1f}-{s['end']:.1f}s"]
                    + [round(weights[c], 3) if c in weights else None for c in SCENE_HEADERS[1:]])  # fmt: skip
    return rows


def attribution_text(document: dict[str, Any]) -> str:
    segments = document.get("segments", [])
    if not segments:
        return "No segment located."
    return "\n".join(f"- **{s['sentiment']}** ({s['start']:.1f}-{s['end']:.1f} s, confidence {s['confidence']:.2f}): "
                     f"{s.get('attribution') or '(no attribution)'}" for s in segments)  # fmt: skip


class Analyser:
    """The app's state: one loaded model, its settings and limits, and the folder it writes its outputs into."""

    def __init__(self, model_ref: str | os.PathLike, *, config_name: str = "implicit", window: float = 10.0,
                 overlap: float | None = None, batch_size: int = 4, max_new_tokens: int = 96,
                 max_duration_s: float = 600.0, max_run_s: float = 600.0, examples_dir: str | os.PathLike | None = None,
                 device: str = "cpu", model=None, processor=None, trust_remote_code: bool = False,
                 base_model: str | os.PathLike | None = None):  # fmt: skip
        from inference.loading import load_model

        if model is None or processor is None:
            model, processor = load_model(model_ref, device=device, trust_remote_code=trust_remote_code,
                                          base_model=base_model)  # fmt: skip
        self.model, self.processor = model, processor
        self.model_ref = str(model_ref)
        self.config_name = config_name
        self.window, self.overlap = float(window), overlap
        self.batch_size, self.max_new_tokens = int(batch_size), int(max_new_tokens)
        self.max_duration_s, self.max_run_s = float(max_duration_s), float(max_run_s)
        self.examples = list_examples(examples_dir)
        self.examples_dir = Path(examples_dir).resolve() if examples_dir else None
        self.out_dir = Path(tempfile.mkdtemp(prefix="icm-app-"))  # outputs, and the uploads under launch_app
        self.uploads_dir = self.out_dir / "uploads"

    def close(self) -> None:
        """Remove the app's temporary folder: its outputs and the uploads (called when the server stops)."""
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def public_message(self, message: str) -> str:
        """``message`` without the server's folders: every path is cut to its file name (an error shown to a
        visitor must not map the server's disk)."""
        return _PATH_RE.sub(lambda m: m.group("name"), str(message))

    def resolve(self, upload: str | None, example: str | None) -> tuple[Path, str]:
        """The video to analyse and the name to show: the upload, else the picked example (by name, from the
        examples folder only)."""
        if upload:
            path = Path(upload)
            return path, path.name
        if example:
            chosen = [p for p in self.examples if p.name == example]
            if not chosen:
                raise ValueError(f"example {example!r} is not in the examples folder")
            return chosen[0], chosen[0].name
        raise ValueError("upload a video or pick an example first")

    def check(self, path: Path, name: str):
        """Type, emptiness, decodability and length of the input; ``ValueError`` naming it."""
        from processing.video import VideoDecodeError, probe_video

        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{name}: not a video file (expected one of {', '.join(VIDEO_EXTENSIONS)})")
        if not path.is_file() or path.stat().st_size == 0:
            raise ValueError(f"{name}: the file is empty (0 bytes)")
        try:
            info = probe_video(path)
        except VideoDecodeError as err:
            raise ValueError(f"{name}: cannot decode it as a video ({err.reason})") from err
        if info.duration > self.max_duration_s:
            raise ValueError(f"{name}: {info.duration:.0f} s long; this app analyses videos up to "
                             f"{self.max_duration_s:.0f} s")  # fmt: skip
        return info

    def analyse(self, path: Path, name: str, progress=None) -> tuple[dict[str, Any], str]:
        """The analysis document of one video and a status line. Raises ``ValueError`` naming bad input."""
        from inference.analysis import merge_windows
        from processing.video import VideoDecodeError

        from inference.timeline import timeline_chart

        info = self.check(path, name)
        started = time.perf_counter()
        windows: list[dict] = []

        def on_update(event: dict) -> None:
            windows.extend(event["windows"])
            if progress is not None:
                progress((event["windows_done"], event["num_windows"]), desc=f"analysing {name}", unit="windows")
            if time.perf_counter() - started > self.max_run_s:
                raise RunTimeLimit

        from inference.analysis import analyze_video

        status = ""
        try:
            document = analyze_video(
                path, self.model, self.processor, model_name=self.model_ref, config_name=self.config_name,
                window=self.window, overlap=self.overlap, batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens, progress=False, on_update=on_update,
            )  # fmt: skip
        except RunTimeLimit:
            from inference.analysis import WindowResult

            done = [WindowResult.from_dict(w) for w in windows]
            document = {"video": name, "duration": info.duration, "config": self.config_name, "complete": False,
                        "windows_done": len(done), "segments": merge_windows(done), "windows": windows,
                        "scenes": list(self.model.config.active_scenes)}  # fmt: skip
            status = f" — stopped at the {self.max_run_s:.0f} s limit after {len(done)} window(s)"
        except VideoDecodeError as err:  # e.g. a file truncated after its header: decoding fails mid-way
            raise ValueError(f"{name}: cannot decode it as a video ({err.reason})") from err
        document["video"] = name
        stem = f"{Path(name).stem}-{int(time.time() * 1000)}"
        document["timeline"] = str(timeline_chart(document, self.out_dir / f"{stem}.timeline.png"))
        from inference.analysis import write_json_atomic

        document["json"] = str(write_json_atomic(self.out_dir / f"{stem}.analysis.json", document))
        elapsed = time.perf_counter() - started
        status = (f"**{name}**: {len(document['segments'])} segment(s) from {len(document['windows'])} window(s) "
                  f"in {elapsed:.1f} s{status}")  # fmt: skip
        return document, status

    def run(self, upload, example, progress=None):
        """The Gradio handler: outputs (status, timeline, segments, scene weights, attribution, JSON file)."""
        try:
            path, name = self.resolve(upload, example)
            document, status = self.analyse(path, name, progress)
        except ValueError as err:
            return f"⚠️ {self.public_message(err)}", None, [], [], "", None
        except Exception as err:  # noqa: BLE001 - the visitor gets one line without server details; the log has it
            print(f"icm serve: analysis failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            return f"⚠️ the analysis failed ({type(err).__name__}); see the server's log", None, [], [], "", None
        return (status, document["timeline"], segment_rows(document), scene_rows(document),
                attribution_text(document), document["json"])  # fmt: skip


#: An absolute path (POSIX or Windows) in a message; ``name`` is its last part.
_PATH_RE = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^\s'\"/\\:]+)*[/\\](?P<name>[^\s'\"/\\:]+)")


def build_app(analyser: Analyser):
    """The Gradio ``Blocks`` of the app (not launched)."""
    gr = _gradio()

    with gr.Blocks(title="ICM — Omni-SILA video sentiment analysis") as app:
        gr.Markdown(
            "# ICM — identify, locate and attribute visual sentiments in a video\n"
            f"Model: `{analyser.model_ref}` · {analyser.config_name} sentiments · windows of {analyser.window:g} s. "
            "Upload a video (or pick an example) and press **Analyse**."
        )
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="video", file_types=list(VIDEO_EXTENSIONS), type="filepath", elem_id="upload")
                example = gr.Dropdown(choices=[p.name for p in analyser.examples], value=None, label="or pick an example",
                                      elem_id="example", visible=bool(analyser.examples))  # fmt: skip
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                timeline = gr.Image(label="timeline", type="filepath", interactive=False, elem_id="timeline")
        segments = gr.Dataframe(headers=SEGMENT_HEADERS, label="segments", interactive=False, elem_id="segments",
                                value=[], wrap=True)  # fmt: skip
        scenes = gr.Dataframe(headers=SCENE_HEADERS, label="scene weights (router P per segment)", interactive=False,
                              elem_id="scene_weights", value=[])  # fmt: skip
        attribution = gr.Markdown("", label="attribution", elem_id="attribution")
        download = gr.File(label="analysis JSON", interactive=False, elem_id="json")

        def handler(upload_path, example_name, progress=gr.Progress()):  # noqa: B008 - how Gradio injects progress
            return analyser.run(upload_path, example_name, progress)

        button.click(handler, inputs=[upload, example], outputs=[status, timeline, segments, scenes, attribution, download],
                     concurrency_limit=1, api_name="analyse")  # fmt: skip
    return app


def launch_app(model_ref: str | os.PathLike, *, host: str = "127.0.0.1", port: int | None = None,
               max_upload_mb: float = 200.0, queue_size: int = 16, block: bool = True, analyser: Analyser | None = None,
               **settings):  # fmt: skip
    """Load the model, build the app and serve it. Returns ``(app, url)`` (with ``block=False``, the server runs in
    a background thread; ``app.close()`` stops it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no call home (and none is reachable here)
    analyser = analyser or Analyser(model_ref, **settings)
    # uploads go into the app's own temporary folder (removed when the server stops), not Gradio's shared one,
    # unless the user chose a folder with GRADIO_TEMP_DIR
    previous_temp = os.environ.get("GRADIO_TEMP_DIR")
    if previous_temp is None:
        os.environ["GRADIO_TEMP_DIR"] = str(analyser.uploads_dir)

    def cleanup() -> None:
        analyser.close()
        if previous_temp is None and os.environ.get("GRADIO_TEMP_DIR") == str(analyser.uploads_dir):
            del os.environ["GRADIO_TEMP_DIR"]

    atexit.register(cleanup)
    app = build_app(analyser)
    app.queue(max_size=int(queue_size), default_concurrency_limit=1)
    allowed = [str(analyser.out_dir)] + ([str(analyser.examples_dir)] if analyser.examples_dir else [])
    close = app.close

    def close_and_clean(*args, **kwargs):
        try:
            return close(*args, **kwargs)
        finally:
            cleanup()

    app.close = close_and_clean
    try:
        _, url, _ = app.launch(
            server_name=host, server_port=port, max_file_size=f"{max_upload_mb:g}mb", allowed_paths=allowed,
            prevent_thread_lock=not block, quiet=True, footer_links=["gradio"], ssr_mode=False,
        )  # fmt: skip
    except BaseException:
        cleanup()
        raise
    if block:  # the server has stopped (Ctrl-C): its temporary files go with it
        cleanup()
    return app, url


__all__ = ["Analyser", "build_app", "launch_app", "list_examples", "scene_rows", "segment_rows"]
