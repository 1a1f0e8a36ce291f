"""Scene-pathway diagnostics: does the clip reach the answer through the scene tokens?

ICM's scene tokens ``Projector(Norm(y_moe + y_iec))`` can train into one constant vector for every clip — a soft
prompt — while the loss still falls (the LLM learns the answer language and the label prior from it). Nothing in the
loss shows that; these measures do:

* ``scene_spread`` — relative spread of the scene tokens across clips: ``‖std over clips‖ / ‖mean over clips‖``
  (norms over all tokens and channels). Near 0: every clip gets the same tokens.
* ``scene_norm_ratio`` — mean L2 norm of a scene token over the mean L2 norm of the prompt's text-token embeddings
  (how loud the scene tokens are in the LLM's input).
* ``router_weight/<scene>`` — mean gating probability P_j of each expert over the frames where some scene is
  present (Eq. 1).
* ``iec_attention_shares`` — where IEC's self-sampling (Eq. 3) looks: its attention's share on the clip's y_moe
  and on each scene expert's outputs (the router does not weight those).
* ``scene_sensitivity`` — how much the answer depends on the clip's own scenes: the total-variation distance
  between the LLM's next-token distributions along the clip's teacher-forced reference answer with the clip's own
  scene features and with another clip's (the batch rolled by one), averaged over the answer tokens. 0: the scene
  tokens do not change the answer; 1: they decide it entirely.

:func:`scene_diagnostics` measures them on examples (``trainers.data``); the trainer logs them at every logging step
on its current batch (:func:`batch_scene_diagnostics`), the recipe runner writes them into ``results.json`` before
and after training, and warns when the spread collapses (:data:`COLLAPSE_SPREAD`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inference.events import pooled_scene_features
from inference.loading import icm_base_model

#: A trained model whose scene tokens spread less than this across clips has (nearly) one scene vector for every
#: clip: a warning says so. (Fresh initialisation gives 0.3-0.6; the collapsed runs this was written for, 1e-4-0.03.)
COLLAPSE_SPREAD = 0.05


def relative_spread(tokens: torch.Tensor) -> float:
    """``‖std over dim 0‖ / ‖mean over dim 0‖`` of ``tokens [clips, ...]`` (0 for fewer than two clips)."""
    tokens = tokens.detach().float().reshape(tokens.shape[0], -1)
    if tokens.shape[0] < 2:
        return 0.0
    mean_norm = tokens.mean(0).norm()
    return float(tokens.std(0).norm() / mean_norm.clamp(min=1e-12))


def _text_embedding_norm(base, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> float:
    placeholders = torch.tensor(base.placeholder_token_ids, device=input_ids.device)
    text = ~torch.isin(input_ids, placeholders)
    if attention_mask is not None:
        text &= attention_mask.bool()
    rows = base.get_input_embeddings()(input_ids[text])
    return float(rows.float().norm(dim=-1).mean()) if rows.numel() else 0.0


def _answer_distributions(model, batch: dict[str, Any], scene_features, scene_masks) -> torch.Tensor:
    """Next-token probabilities at the positions that predict the teacher-forced answer ``[n_answer_tokens, V]``."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "scene_features", "scene_masks")}
    logits = model(**inputs, scene_features=scene_features, scene_masks=scene_masks, use_cache=False).logits
    predicts_answer = batch["labels"][:, 1:] != -100
    return torch.softmax(logits[:, :-1][predicts_answer].float(), dim=-1)


def scene_sensitivity(model, batch: dict[str, Any]) -> float | None:
    """Mean total-variation distance between the answer distributions (every position of the teacher-forced answers
    in ``batch['labels']``) with each clip's own scene features and with the next clip's (the batch rolled by one).
    None for a batch of one clip or without labels."""
    feats, masks = batch.get("scene_features"), batch.get("scene_masks")
    if feats is None or batch.get("labels") is None or next(iter(feats.values())).shape[0] < 2:
        return None
    rolled_feats = {s: v.roll(1, dims=0) for s, v in feats.items()}
    rolled_masks = None if masks is None else {s: v.roll(1, dims=0) for s, v in masks.items()}
    own = _answer_distributions(model, batch, feats, masks)
    swapped = _answer_distributions(model, batch, rolled_feats, rolled_masks)
    return float(0.5 * (own - swapped).abs().sum(-1).mean())


def clip_router_weights(router_probs: torch.Tensor) -> list[list[float] | None]:
    """Per clip, the router's mean weight per expert over the clip's valid frames (``router_probs``
    ``[B, frames, experts]``; a frame without scene items has all-zero weights); None for a clip without one."""
    out: list[list[float] | None] = []
    for probs in router_probs.float():
        valid = probs.sum(-1) > 0
        out.append(probs[valid].mean(0).tolist() if bool(valid.any()) else None)
    return out


@torch.no_grad()
def iec_self_sampling_weights(model, scene_features, scene_masks=None) -> tuple[torch.Tensor, torch.Tensor]:
    """IEC's self-sampling attention (Eq. 3) on a batch: ``(weights [B, heads, frames, memory], values [B, heads,
    memory, head_dim])``, recomputed from the module's own projections on the inputs it receives in
    :meth:`encode_scenes` (its memory: the clip's y_moe frames, then each frame's scene expert outputs in
    ``config.active_scenes`` order, :meth:`SceneBalancedMoE.forward`)."""
    base = icm_base_model(model)
    if getattr(base, "iec", None) is None:
        raise ValueError("the model has no IEC (iec=False): there is no self-sampling attention to measure")
    attention = base.iec.self_sampling
    captured: dict[str, tuple] = {}
    hook = attention.register_forward_pre_hook(lambda m, args: captured.setdefault("args", args))
    try:
        base.encode_scenes(scene_features, scene_masks)
    finally:
        hook.remove()
    query, memory, mask = captured["args"]
    b, n_q, _ = query.shape
    heads, dim = attention.num_heads, attention.head_dim
    q = attention.q_proj(query).view(b, n_q, heads, dim).transpose(1, 2)
    k = attention.k_proj(memory).view(b, memory.shape[1], heads, dim).transpose(1, 2)
    v = attention.v_proj(memory).view(b, memory.shape[1], heads, dim).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / dim**0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v.dtype), v


@torch.no_grad()
def iec_attention_shares(model, scene_features, scene_masks=None) -> torch.Tensor:
    """Per clip, the share of IEC's self-sampling attention (averaged over heads and query frames) on the clip's own
    y_moe and on each scene expert's outputs: ``[B, 1 + experts]``, columns y_moe then ``config.active_scenes``; each
    row sums to 1. Which scene IEC reads on a clip, where the router weights another (docs/study-set.md)."""
    weights, _ = iec_self_sampling_weights(model, scene_features, scene_masks)
    weights = weights.float().mean(dim=(1, 2))  # [B, memory]
    b, frames = weights.shape[0], next(iter(scene_features.values())).shape[1]
    experts = (weights.shape[1] - frames) // frames
    own = weights[:, :frames].sum(-1, keepdim=True)
    per_expert = weights[:, frames:].reshape(b, frames, experts).sum(1)
    return torch.cat([own, per_expert], dim=-1)


@torch.no_grad()
def batch_scene_diagnostics(
    model, batch: dict[str, Any], scene_names: Sequence[str], keep_tokens: list | None = None,
    keep_router: list | None = None,
) -> dict:
    """The diagnostics of one processor batch (``scene_features`` required; ``labels`` for the sensitivity). The
    model is put in eval mode for the measurement (no dropout) and back. ``keep_tokens``: a list the batch's scene
    tokens are appended to."""
    base = icm_base_model(model)
    if base.sbm is None or batch.get("scene_features") is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        encoding = base.encode_scenes(batch["scene_features"], batch.get("scene_masks"))
        tokens = encoding.scene_tokens.float()
        if keep_tokens is not None:
            keep_tokens.append(tokens)
        out: dict[str, float] = {
            "scene_spread": relative_spread(tokens),
            "scene_token_norm": float(tokens.norm(dim=-1).mean()),
        }
        text_norm = _text_embedding_norm(base, batch["input_ids"], batch.get("attention_mask"))
        out["text_embedding_norm"] = text_norm
        out["scene_norm_ratio"] = out["scene_token_norm"] / text_norm if text_norm > 0 else float("nan")
        if encoding.router_probs is not None:
            if keep_router is not None:
                keep_router.extend(clip_router_weights(encoding.router_probs))
            probs = encoding.router_probs.float()
            valid = probs.sum(-1) > 0
            if bool(valid.any()):
                for scene, value in zip(scene_names, probs[valid].mean(0).tolist()):
                    out[f"router_weight/{scene}"] = value
        sensitivity = scene_sensitivity(model, batch)
        if sensitivity is not None:
            out["scene_sensitivity"] = sensitivity
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def scene_diagnostics(model, processor, examples: Sequence[dict[str, Any]], batch_size: int = 8) -> dict:
    """:func:`batch_scene_diagnostics` over ``examples`` (every clip at once for the spread; the sensitivity and the
    router weights averaged over batches of ``batch_size``). Empty for a model without scene tokens."""
    from .collator import IcmDataCollator

    base = icm_base_model(model)
    if base.sbm is None or not examples:
        return {}
    device = next(base.parameters()).device
    collator = IcmDataCollator(processor, with_answers=True)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    all_tokens: list = []
    routers: list = []
    step = max(2, int(batch_size))
    for start in range(0, len(examples), step):
        chunk = list(examples[start : start + step])
        batch = collator(chunk).to(device)
        found = batch_scene_diagnostics(
            model, batch, base.config.active_scenes, keep_tokens=all_tokens, keep_router=routers
        )
        for key, value in found.items():
            sums[key] = sums.get(key, 0.0) + value * len(chunk)
            counts[key] = counts.get(key, 0) + len(chunk)
    out = {key: sums[key] / counts[key] for key in sums}
    out["scene_spread"] = relative_spread(torch.cat(all_tokens))
    out["clips"] = len(examples)
    by_label = router_weights_by_label(examples, routers, base.config.active_scenes)
    if by_label:
        out["router_weights_by_label"] = by_label
    return out


def router_weights_by_label(
    examples: Sequence[dict[str, Any]], clip_weights: Sequence[list[float] | None], scene_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{label: {scene: mean router weight}}`` over the clips of each label (clips without scene items left out):
    which expert each label's clips use."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for example, weights in zip(examples, clip_weights):
        label = example.get("label")
        if label is None or weights is None:
            continue
        total = sums.setdefault(label, [0.0] * len(weights))
        sums[label] = [a + b for a, b in zip(total, weights)]
        counts[label] = counts.get(label, 0) + 1
    return {
        label: {scene: value / counts[label] for scene, value in zip(scene_names, total)}
        for label, total in sums.items()
    }


def fit_linear_probe(x_train, y_train):
    """The probe every scene measurement uses: a logistic regression on standardised inputs (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, list(y_train))


def scene_probe(
    train_examples: Sequence[dict[str, Any]], eval_examples: Sequence[dict[str, Any]], scenes: Sequence[str]
) -> dict | None:
    """How much of the label the scene features carry: a logistic regression (scikit-learn, standardised inputs) on
    :func:`pooled_scene_features` of the training clips, its accuracy on the evaluation clips. The reference a
    scene-only model should reach. One row per clip (examples of several tasks on one clip count once); None when
    scikit-learn is missing or the training clips have fewer than two labels."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return None

    def rows(examples):
        seen = {}
        for example in examples:
            key = example.get("clip_id", id(example))
            if key not in seen and example.get("label") is not None:
                seen[key] = example
        return [pooled_scene_features(e, scenes).numpy() for e in seen.values()], [e["label"] for e in seen.values()]

    x_train, y_train = rows(train_examples)
    x_eval, y_eval = rows(eval_examples)
    if len(set(y_train)) < 2 or not y_eval:
        return None
    probe = fit_linear_probe(x_train, y_train)
    return {
        "probe_acc": float(probe.score(x_eval, y_eval)),
        "probe_train_acc": float(probe.score(x_train, y_train)),
        "train_clips": len(y_train),
        "eval_clips": len(y_eval),
        "chance": 1.0 / len(set(y_train) | set(y_eval)),
    }


def collapse_warning(diagnostics: dict, before: dict | None = None) -> str | None:
    """A warning line when the scene tokens have (nearly) collapsed to one vector, else None."""
    spread = diagnostics.get("scene_spread")
    if spread is None or spread >= COLLAPSE_SPREAD:
        return None
    was = f" (at initialisation {before['scene_spread']:.3f})" if before and "scene_spread" in before else ""
    return (
        f"the scene tokens spread {spread:.4f} across clips{was}, below {COLLAPSE_SPREAD}: nearly one scene vector for "
        "every clip, so the scene information hardly reaches the answer"
    )


__all__ = [
    "COLLAPSE_SPREAD",
    "batch_scene_diagnostics",
    "collapse_warning",
    "fit_linear_probe",
    "iec_attention_shares",
    "iec_self_sampling_weights",
    "clip_router_weights",
    "relative_spread",
    "router_weights_by_label",
    "scene_diagnostics",
    "scene_probe",
    "scene_sensitivity",
]
