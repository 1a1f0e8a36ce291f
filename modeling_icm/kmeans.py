"""Batched K-means in torch, for the IEC dictionary (paper §3.3: the dictionary is initialised "by using K-means
clustering on all the embeddings of samples in the training set").

k-means++ seeding on a subsample, then Lloyd iterations with distances computed in chunks (memory flat in N), all
in torch so it runs on the model's device. Deterministic for a given seed.
"""

from __future__ import annotations

import torch


def _sq_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    # ||x - c||^2 = ||x||^2 - 2 x·c + ||c||^2, clamped against rounding below zero
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(1)[None]).clamp_(min=0)


def _assign(x: torch.Tensor, centres: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        d = _sq_distances(x[start : start + chunk], centres)
        dists[start : start + chunk], labels[start : start + chunk] = d.min(1)
    return labels, dists


def kmeans(
    embeddings: torch.Tensor,
    k: int,
    seed: int = 0,
    max_iter: int = 50,
    tol: float = 1e-4,
    chunk_size: int = 8192,
    init_sample: int = 20000,
) -> torch.Tensor:
    """K-means centres ``[k, d]`` of ``embeddings`` ``[N, d]``.

    When N < k the embeddings are repeated (with their order permuted) so that exactly k centres come back.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [N, d], got shape {tuple(embeddings.shape)}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    x = embeddings.detach().float()
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one embedding")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if n <= k:
        order = torch.randperm(n, generator=gen)
        reps = torch.cat([order] * (k // n + 1))[:k]
        return x[reps.to(x.device)].clone()
    # k-means++ seeding on a subsample
    sample_idx = torch.randperm(n, generator=gen)[: min(n, init_sample)].to(x.device)
    sample = x[sample_idx]
    centres = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(sample.shape[0], (1,), generator=gen))
    centres[0] = sample[first]
    closest = _sq_distances(sample, centres[:1]).squeeze(1)
    for i in range(1, k):
        total = closest.sum()
        if float(total) <= 0:
            idx = int(torch.randint(sample.shape[0], (1,), generator=gen))
        else:
            probs = (closest / total).cpu()
            idx = int(torch.multinomial(probs, 1, generator=gen))
        centres[i] = sample[idx]
        closest = torch.minimum(closest, _sq_distances(sample, centres[i : i + 1]).squeeze(1))
    # Lloyd iterations on all points
    prev_inertia = None
    for _ in range(max_iter):
        labels, dists = _assign(x, centres, chunk_size)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        empty = counts == 0
        new_centres = sums / counts.clamp(min=1).unsqueeze(1)
        if bool(empty.any()):  # re-seed empty clusters at the points farthest from their centres
            far = torch.topk(dists, int(empty.sum())).indices
            new_centres[empty] = x[far]
        centres = new_centres
        inertia = float(dists.sum())
        if prev_inertia is not None and abs(prev_inertia - inertia) <= tol * max(prev_inertia, 1e-12):
            break
        prev_inertia = inertia
    return centres
