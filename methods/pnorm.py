"""P-norm+ (Zhu, Abdal, Qin, Femiani, Wonka, arXiv 2012.09036): a whitened W+ penalty.

P space: ``p = LeakyReLU(slope 5)(w)`` undoes the mapping network's last leaky ReLU. Statistics: mean and
PCA of p over ``samples`` mapped z (no truncation), computed in float64 (reference/methods.md §2: a
covariance from few samples or in float32 leaves near-null eigenvalues badly wrong). The penalty is
``mean(v^2)`` with ``v = (p - mu) V / sqrt(lambda)`` per ws row, over all rows and dimensions, per image.

A generator may carry precomputed statistics as ``generator.pnorm_stats`` (the benchmark attaches the
shipped ones); otherwise they are computed on first use and kept on the generator object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.base import GeneratorLike


@dataclass(frozen=True)
class PNormStats:
    """Mean (w_dim,), eigenvectors as columns (w_dim, w_dim) and eigenvalues (w_dim,) of p = lrelu5(w)."""

    mean: torch.Tensor
    eigvecs: torch.Tensor
    eigvals: torch.Tensor
    samples: int

    def whiten(self, w: torch.Tensor) -> torch.Tensor:
        """``(lrelu5(w) - mean) @ V / sqrt(lambda)`` over the last dimension."""
        p = F.leaky_relu(w, negative_slope=5.0)
        v = (p - self.mean.to(w)) @ self.eigvecs.to(w)
        return v / self.eigvals.to(w).sqrt()

    def penalty(self, wp: torch.Tensor) -> torch.Tensor:
        """Per-image P-norm+ penalty ``mean(v^2)`` over rows and dimensions: (N,)."""
        return self.whiten(wp).square().flatten(1).mean(1)

    def to(self, device: torch.device | str) -> PNormStats:
        """Copy on ``device``."""
        return PNormStats(self.mean.to(device), self.eigvecs.to(device), self.eigvals.to(device), self.samples)


@torch.no_grad()
def compute_pnorm_stats(generator: GeneratorLike, samples: int = 1_000_000, batch: int = 50_000,
                        seed: int = 1) -> PNormStats:
    """Mean and PCA of lrelu5(mapping(z)) over ``samples`` seeded z, accumulated in float64."""
    dev = generator.w_avg.device
    gen = torch.Generator().manual_seed(seed)
    d = generator.w_dim
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    outer = torch.zeros(d, d, dtype=torch.float64, device=dev)
    done = 0
    while done < samples:
        k = min(batch, samples - done)
        z = torch.randn(k, generator.z_dim, generator=gen).to(dev)
        p = F.leaky_relu(generator.mapping(z), negative_slope=5.0).double()
        total += p.sum(0)
        outer += p.T @ p
        done += k
    mean = total / samples
    cov = (outer - samples * torch.outer(mean, mean)) / (samples - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    return PNormStats(mean.float(), eigvecs.float(), eigvals.clamp_min(1e-12).float(), samples)


def pnorm_stats_for(generator: GeneratorLike) -> PNormStats:
    """The generator's attached statistics, computing (and attaching) them on first use."""
    stats = getattr(generator, "pnorm_stats", None)
    if stats is None:
        stats = compute_pnorm_stats(generator)
        try:
            generator.pnorm_stats = stats
        except AttributeError:  # a frozen fake; recompute next time
            pass
    return stats.to(generator.w_avg.device)
