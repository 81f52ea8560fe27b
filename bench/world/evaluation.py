"""Fitting and measuring the embedded world: edit directions, their effects, KID, sample grids, export.

- Edit directions (InterFaceGAN-style): for each attribute, a linear model from w (the mapping output) to
  the attribute net's score over generator samples; the unit normal of its level sets is the direction.
  Continuous attributes use ridge regression, binary ones logistic regression; fit quality (held-out R²
  or accuracy) is stored with the directions.
- Effects: moving w by ±k·sigma along a direction (sigma = std of w's projection on it) changes the
  predicted attribute by a measured amount while the others drift by a measured amount.
- KID on the attribute net's pooled features (polynomial kernel, unbiased, subsets of 1000).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.world import procfaces
from bench.world.networks import AttributeNet

ATTRS = procfaces.ATTRIBUTES


@torch.no_grad()
def attribute_scores(net: AttributeNet, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Predicted labelled attributes in [0, 1], (N, len(ATTRIBUTES))."""
    outs = [torch.sigmoid(net(images[i : i + batch]))[:, : len(ATTRS)] for i in range(0, len(images), batch)]
    return torch.cat(outs)


@torch.no_grad()
def pooled_features(net: AttributeNet, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Global-average-pooled last-stage features (N, C) for KID."""
    return torch.cat([net.features(images[i : i + batch])[-1].mean(dim=(2, 3)) for i in range(0, len(images), batch)])


def kid(feat_a: torch.Tensor, feat_b: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance-style MMD² with the cubic polynomial kernel; (mean, std) over subsets.

    Features are first divided by the RMS per-dimension magnitude of ``feat_b`` (the reference set): KID's
    kernel ``(x.y/d + 1)^3`` assumes features of order one, as Inception's pooled features are.
    """
    a, b = feat_a.double().cpu(), feat_b.double().cpu()
    # scale both sets by the RMS feature magnitude of b, so the cubic kernel sees O(1) dot products
    scale = b.square().sum(1).mean().div(b.shape[1]).sqrt().clamp_min(1e-12)
    a, b = a / scale, b / scale
    m = min(subset_size, len(a), len(b))
    if m < 50:
        raise ValueError(f"KID needs at least 50 samples per set, got {len(a)} and {len(b)}")
    gen = torch.Generator().manual_seed(seed)
    d = a.shape[1]
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=gen)[:m]]
        y = b[torch.randperm(len(b), generator=gen)[:m]]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        vals.append(float(off - 2 * kxy.mean()))
    t = torch.tensor(vals)
    return float(t.mean()), float(t.std())


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-2) -> torch.Tensor:
    xc = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    a = xc.T @ xc + lam * torch.eye(xc.shape[1], dtype=x.dtype)
    return torch.linalg.solve(a, xc.T @ y)


def _logistic(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> torch.Tensor:
    coef = torch.zeros(x.shape[1] + 1, dtype=x.dtype, requires_grad=True)
    xc = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    opt = torch.optim.LBFGS([coef], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(xc @ coef, y) + 1e-4 * coef[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return coef.detach()


def fit_directions(ws: torch.Tensor, scores: torch.Tensor, train_frac: float = 0.8) -> dict:
    """Fit one unit direction per attribute from w samples (N, w_dim) and scores (N, A).

    Returns:
        ``{"vectors": (A, w_dim) float32, "quality": {name: {...}}, "sigma": {name: float}}``.
    """
    x = ws.double().cpu()
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xs = (x - mu) / sd
    n_train = int(len(x) * train_frac)
    vectors, quality, sigma = [], {}, {}
    for a, name in enumerate(ATTRS):
        y = scores[:, a].double().cpu()
        if name in procfaces.BINARY:
            coef = _logistic(xs[:n_train], (y[:n_train] > 0.5).double())
            pred = (torch.cat([xs[n_train:], torch.ones(len(x) - n_train, 1, dtype=x.dtype)], 1) @ coef) > 0
            quality[name] = {"held_out_accuracy": float((pred == (y[n_train:] > 0.5)).double().mean())}
        else:
            coef = _ridge(xs[:n_train], y[:n_train])
            pred = torch.cat([xs[n_train:], torch.ones(len(x) - n_train, 1, dtype=x.dtype)], 1) @ coef
            resid = (pred - y[n_train:]).square().mean()
            quality[name] = {"held_out_r2": float(1 - resid / y[n_train:].var())}
        direction = coef[:-1] / sd  # back from standardised to raw w coordinates
        direction = direction / direction.norm()
        vectors.append(direction.float())
        sigma[name] = float(((x - mu) @ direction).std())
    return {"vectors": torch.stack(vectors), "quality": quality, "sigma": sigma}


@torch.no_grad()
def direction_effects(generator, net: AttributeNet, directions: dict, n: int = 1000,
                      ks: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0), seed: int = 123) -> dict:
    """Mean predicted change of each attribute when w moves by k*sigma along each direction."""
    dev = generator.w_avg.device
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    w = generator.mapping(z)
    base = attribute_scores(net, _render(generator, w))
    out = {}
    for a, name in enumerate(ATTRS):
        vec = directions["vectors"][a].to(dev)
        rows = {}
        for k in ks:
            moved = attribute_scores(net, _render(generator, w + k * directions["sigma"][name] * vec))
            delta = moved - base
            others = torch.cat([delta[:, :a], delta[:, a + 1 :]], 1)
            rows[str(k)] = {"target_delta": round(float(delta[:, a].mean()), 4),
                            "others_mean_abs_delta": round(float(others.abs().mean()), 4),
                            "others_max_mean_abs_delta": round(float(others.abs().mean(0).max()), 4)}
        out[name] = rows
    return out


def _render(generator, w: torch.Tensor, batch: int = 500) -> torch.Tensor:
    parts = [generator.synthesis(w[i : i + batch, None].expand(-1, generator.num_ws, -1)).clamp(-1, 1)
             for i in range(0, len(w), batch)]
    return torch.cat(parts)


@torch.no_grad()
def sample_images(generator, n: int, seed: int, psi: float = 1.0) -> torch.Tensor:
    """N generator samples (clamped), seeded."""
    dev = generator.w_avg.device
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    return _render(generator, generator.mapping(z, psi))


def save_grid_png(left: torch.Tensor, right: torch.Tensor, path: Path, cols: int = 8) -> None:
    """Two image grids side by side (e.g. generator samples | renderer faces) as one PNG."""
    from PIL import Image

    def grid(x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
        n, c, h, w = x.shape
        rows = n // cols
        return x[: rows * cols].view(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)

    a, b = grid(left), grid(right)
    gap = torch.full((a.shape[0], 8, 3), 255, dtype=torch.uint8)
    Image.fromarray(torch.cat([a, gap, b], 1).numpy()).save(path)


def write_json(path: Path, data: dict) -> None:
    """Indented JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n")
