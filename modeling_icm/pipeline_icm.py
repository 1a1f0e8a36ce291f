"""The ``video-sentiment-analysis`` pipeline of ICM (Omni-SILA): a video path (or a list of paths) -> the merged
segments ``{start, end, sentiment, confidence, attribution, scene_weights}``.

```python
from transformers import pipeline

analyser = pipeline("video-sentiment-analysis", model="org/icm-7b", trust_remote_code=True)
analyser("video.mp4")                                  # {"video", "duration", "num_windows", "segments"}
analyser(["a.mp4", "b.mp4"], batch_size=4)             # windows of both videos batched together
analyser("video.mp4", window=10.0, overlap=5.0, config_name="explicit", return_windows=True)
```

It ships flat with the remote code (the model folder's ``config.json`` names it in ``custom_pipelines``). It is a
``ChunkPipeline``: ``preprocess`` plans the sliding windows of a video, samples them from one frame grid, decodes
each frame once (``processing.video.iter_window_clips``) and extracts its scene features once
(``inference.analysis.SharedSceneFeatures``), ``_forward`` answers a batch of windows (``inference.analysis``), and
``postprocess`` merges the windows' segments into the timeline. Decoding and the scene extractors come from the
omnisila-icm package, imported lazily: without them the error says which extra to install.
"""

from __future__ import annotations

from typing import Any

from transformers.pipelines.base import ChunkPipeline

TASK = "video-sentiment-analysis"
INSTALL_HINT = "pip install 'omnisila-icm[scene]'"


def _analysis_modules():
    try:
        import inference.analysis as analysis
        import processing.video as video
    except ImportError as err:
        raise ImportError(
            f"the {TASK} pipeline decodes videos and runs the scene extractors of omnisila-icm, which are not "
            f"installed ({err}). Install them with: {INSTALL_HINT}"
        ) from err
    return analysis, video


class VideoSentimentAnalysisPipeline(ChunkPipeline):
    """Identify, locate and attribute visual sentiments in videos (sliding windows, merged segments).

    Call arguments (all optional): ``window`` (s, default 10), ``overlap`` (s, default half a window),
    ``config_name`` (``"implicit"`` or ``"explicit"``), ``max_new_tokens`` (96), ``gap`` (merge same-sentiment
    segments at most this far apart, s), ``return_windows`` (also return each window's result).
    """

    _load_processor = True
    _load_tokenizer = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"the {TASK} pipeline needs the model's IcmProcessor (processor_config.json)")
        if self.tokenizer is None:
            self.tokenizer = self.processor.tokenizer

    def _sanitize_parameters(self, window=None, overlap=None, config_name=None, max_new_tokens=None, gap=None,
                             return_windows=None, **kwargs):  # fmt: skip
        if kwargs:
            raise TypeError(f"the {TASK} pipeline got unknown argument(s) {sorted(kwargs)}; it takes window, overlap, "
                            "config_name, max_new_tokens, gap, return_windows (and batch_size)")  # fmt: skip
        preprocess = {k: v for k, v in (("window", window), ("overlap", overlap)) if v is not None}
        forward = {k: v for k, v in (("config_name", config_name), ("max_new_tokens", max_new_tokens)) if v is not None}
        post = {k: v for k, v in (("gap", gap), ("return_windows", return_windows)) if v is not None}
        return preprocess, forward, post

    def preprocess(self, video, window: float = 10.0, overlap: float | None = None):
        analysis, video_mod = _analysis_modules()
        path = str(video)
        info = video_mod.probe_video(path)
        overlap = window / 2 if overlap is None else overlap
        windows = analysis.plan_windows(info.duration, window, overlap)
        clips = video_mod.iter_window_clips(
            path,
            windows,
            num_frames=self.processor.num_frames,
            max_side=self.processor.max_side,
            grid_fps=analysis.analysis_grid_fps(window, self.processor.num_frames),
        )
        frame_windows = (
            analysis.FrameWindow(clip.frames, clip.timestamps, clip.start, clip.end, index, frame_keys=clip.indices)
            for index, clip in enumerate(clips)
        )
        if self.processor.num_scene_tokens:  # scene features once per distinct frame, as analyze_video does
            frame_windows = analysis.SharedSceneFeatures(self.processor.scene_pipeline)(frame_windows)
        for index, frame_window in enumerate(frame_windows):
            yield {
                "window": frame_window,
                "video": {"path": path, "duration": info.duration, "num_windows": len(windows)},
                "is_last": index == len(windows) - 1,
            }

    def _forward(self, model_inputs, config_name: str = "implicit", max_new_tokens: int = 96):
        analysis, _ = _analysis_modules()
        batched = isinstance(model_inputs["window"], list)
        windows = model_inputs["window"] if batched else [model_inputs["window"]]
        videos = model_inputs["video"] if batched else [model_inputs["video"]]
        results = analysis.analyze_frames_batch(  # one generate call for the whole batch
            self.model, self.processor, windows, config_name=config_name, max_new_tokens=max_new_tokens,
            duration=[v["duration"] for v in videos],
        )  # fmt: skip
        results = [r.to_dict() for r in results]
        if batched:  # a list per key: the pipeline's iterator unbatches them window by window
            return {"result": results, "video": videos, "is_last": list(model_inputs["is_last"])}
        return {"result": results[0], "video": videos[0], "is_last": model_inputs["is_last"]}

    def postprocess(self, model_outputs, gap: float = 0.0, return_windows: bool = False) -> dict[str, Any]:
        analysis, _ = _analysis_modules()
        windows = [analysis.WindowResult.from_dict(out["result"]) for out in model_outputs]
        video = model_outputs[0]["video"]
        output = {
            "video": video["path"],
            "duration": video["duration"],
            "num_windows": len(windows),
            "segments": analysis.merge_windows(windows, gap=gap),
        }
        if return_windows:
            output["windows"] = [analysis.window_summary(w) for w in windows]
        return output


__all__ = ["TASK", "VideoSentimentAnalysisPipeline"]
