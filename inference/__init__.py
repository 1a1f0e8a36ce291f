"""Inference with a trained ICM — the application layer over the model, the extractors and the metrics.

* ``inference.loading`` — ``load_model``: ``(model, processor)`` from a model folder (merged or LoRA adapter) or a
  Hub id, with :mod:`inference.trust` deciding whether a folder's own code may run;
* ``inference.generation`` — ``greedy_generate``, the one batched generation every caller uses (training-time
  evaluation, the Video-LLM baselines, lmms-eval, window analysis), and ``generate_answers`` for ICM clips;
* ``inference.analysis`` — ``analyze_video`` / ``analyze_frames``: windows -> answers -> merged timeline;
* ``inference.events`` — event-driven window selection; ``inference.live`` / ``inference.alerts`` — watching a
  stream and raising alerts; ``inference.lmms_eval_model`` — the lmms-eval model ``icm``.

Importing this package imports nothing heavy; import the module you need.
"""
