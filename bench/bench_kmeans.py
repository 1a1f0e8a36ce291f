"""K-means for the IEC dictionary (paper §3.3): scikit-learn vs our batched torch K-means at 100K embeddings.

Both cluster the same ``N × d`` float32 embeddings (a Gaussian mixture, so the clusters are real) into ``K`` centres
with k-means++ seeding and at most ``--max-iter`` Lloyd iterations, on the same threads, side by side in one run.
Prints seconds, the final inertia of each (quality check) and the ratio sklearn / torch. The faster one is the
default of ``trainers.kmeans_init.DEFAULT_KMEANS_BACKEND``.

    python bench/bench_kmeans.py                       # N=100000, d=256, K=512
    python bench/bench_kmeans.py --d 1024 --k 512      # the paper's expert width and our default K
"""

from __future__ import annotations

import argparse
import time

import torch


def mixture(n: int, d: int, clusters: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=generator) * 4
    labels = torch.randint(clusters, (n,), generator=generator)
    return centres[labels] + torch.randn(n, d, generator=generator)


def inertia(x: torch.Tensor, centres: torch.Tensor, chunk: int = 8192) -> float:
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        total += float(torch.cdist(x[start : start + chunk], centres).min(1).values.pow(2).sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None

    from modeling_icm.kmeans import kmeans
    from trainers.kmeans_init import sklearn_kmeans

    x = mixture(ns.n, ns.d, ns.k, ns.seed)
    print(f"K-means of {ns.n} x {ns.d} embeddings into K={ns.k} centres, <= {ns.max_iter} Lloyd iterations, "
          f"{ns.threads} threads")
    results = {}
    for name, fn in (("torch", kmeans), ("sklearn", sklearn_kmeans)):
        started = time.perf_counter()
        if name == "sklearn" and threadpool_limits is not None:
            with threadpool_limits(limits=ns.threads):
                centres = fn(x, ns.k, seed=ns.seed, max_iter=ns.max_iter)
        else:
            centres = fn(x, ns.k, seed=ns.seed, max_iter=ns.max_iter)
        seconds = time.perf_counter() - started
        results[name] = (seconds, inertia(x, centres))
        print(f"  {name:8s} {seconds:8.2f} s   inertia {results[name][1]:.4g}")
    ratio = results["sklearn"][0] / results["torch"][0]
    print(f"sklearn / torch time: {ratio:.2f}x  -> faster: {'torch' if ratio > 1 else 'sklearn'}")
    print(f"inertia torch / sklearn: {results['torch'][1] / results['sklearn'][1]:.3f}")


if __name__ == "__main__":
    main()
