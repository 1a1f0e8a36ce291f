"""IEC dictionary initialisation (paper §3.3): "we initialize this dictionary by using K-means clustering on all the
embeddings of samples in the training set", done before Omni-SILA tuning.

The embeddings are the model's ``dictionary_embeddings`` (the SBM output y_moe of every valid frame) of every
training clip, computed from the cached scene features only (no video, no LLM). Two K-means back-ends:

* ``"torch"`` — the batched torch K-means of ``modeling_icm.kmeans`` (k-means++ on a subsample, chunked Lloyd);
* ``"sklearn"`` — ``sklearn.cluster.KMeans`` (k-means++, one init, Lloyd).

``bench/bench_kmeans.py`` times both at 100K embeddings side by side; the default (:data:`DEFAULT_KMEANS_BACKEND`)
is the one it showed faster on the project machine: 100K x 256 embeddings, K = 512, <= 20 Lloyd iterations, 2
threads (a loaded 2-core machine, both measured in one run): torch 42.7 s, scikit-learn 391.8 s (9.2x slower; most of
it in its greedy k-means++ seeding over all points). scikit-learn reached a 1.9x lower inertia in that budget (torch
seeds k-means++ on a 20K subsample), so ``kmeans_backend="sklearn"`` remains available when seeding quality matters
more than time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inference.loading import icm_base_model

DEFAULT_KMEANS_BACKEND = "torch"


def sklearn_kmeans(embeddings: torch.Tensor, k: int, seed: int = 0, max_iter: int = 50) -> torch.Tensor:
    """K-means centres with scikit-learn (same signature as ``modeling_icm.kmeans.kmeans``)."""
    from sklearn.cluster import KMeans

    x = embeddings.detach().float().cpu().numpy()
    n = x.shape[0]
    if n <= k:  # as the torch version: repeat the points so that exactly k centres come back
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator)
        reps = torch.cat([order] * (k // n + 1))[:k]
        return torch.from_numpy(x)[reps].clone()
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed, algorithm="lloyd")
    km.fit(x)
    return torch.from_numpy(km.cluster_centers_).float()


def kmeans_function(backend: str):
    if backend == "torch":
        from modeling_icm.kmeans import kmeans

        return kmeans
    if backend == "sklearn":
        return sklearn_kmeans
    raise ValueError(f"kmeans backend must be 'torch' or 'sklearn', got {backend!r}")


@torch.no_grad()
def collect_dictionary_embeddings(
    model, examples: Sequence[dict[str, Any]], batch_size: int = 16, max_embeddings: int | None = None
) -> torch.Tensor:
    """``[N, d]`` y_moe embeddings of the valid frames of every example's cached scene features."""
    from modeling_icm.scene_contract import collate_scene_features

    base = icm_base_model(model)
    was_training = base.training
    base.eval()
    device = next(base.parameters()).device
    chunks = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
            feats, masks = collate_scene_features([(e["scene_features"], e.get("scene_masks")) for e in chunk])
            feats = {s: v.to(device) for s, v in feats.items()}
            masks = {s: v.to(device) for s, v in masks.items()}
            chunks.append(base.dictionary_embeddings(feats, masks).cpu())
    finally:
        base.train(was_training)
    if not chunks:
        raise ValueError("no training examples to compute the IEC dictionary embeddings from")
    embeddings = torch.cat(chunks)
    if max_embeddings is not None and embeddings.shape[0] > max_embeddings:
        generator = torch.Generator().manual_seed(0)
        embeddings = embeddings[torch.randperm(embeddings.shape[0], generator=generator)[:max_embeddings]]
    return embeddings


def initialize_iec_dictionary(
    model,
    examples: Sequence[dict[str, Any]],
    backend: str = DEFAULT_KMEANS_BACKEND,
    seed: int = 0,
    max_iter: int = 50,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Fill the IEC dictionary of ``model`` with the K-means centres of the training set's embeddings (§3.3).

    Returns ``{"num_embeddings", "k", "backend"}``. A model without IEC (ablation "w/o IEC") is left alone
    (``{"skipped": "use_iec=False"}``), and so is the backbone alone (``{"skipped": "use_scene_tokens=False"}``)."""
    base = icm_base_model(model)
    if base.iec is None:
        return {"skipped": "use_iec=False" if base.config.use_scene_tokens else "use_scene_tokens=False"}
    embeddings = collect_dictionary_embeddings(base, examples, batch_size=batch_size)
    if embeddings.shape[0] == 0:
        raise ValueError("the training examples have no valid frame (every scene mask is empty): cannot run K-means")
    base.iec.initialize_dictionary_from_embeddings(
        embeddings, seed=seed, max_iter=max_iter, kmeans_fn=kmeans_function(backend)
    )
    return {"num_embeddings": int(embeddings.shape[0]), "k": int(base.iec.dictionary.shape[0]), "backend": backend}


__all__ = [
    "DEFAULT_KMEANS_BACKEND",
    "collect_dictionary_embeddings",
    "initialize_iec_dictionary",
    "kmeans_function",
    "sklearn_kmeans",
]
