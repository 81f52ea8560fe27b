"""Shared pieces of optimisation-based inversion: per-image losses, the Adam loop, learning-rate ramps.

Every loss here is computed per image and the optimiser minimises their sum, so the gradient that image i
receives does not depend on the other images in the batch; with Adam (element-wise) a batch of N gives
the same result as N runs of one image.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from methods.base import PerceptualLike, full_precision


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image over C, H, W: (N,)."""
    return (x - y).square().flatten(1).mean(1)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, perceptual: PerceptualLike | None,
                        mse_weight: float, perceptual_weight: float) -> torch.Tensor:
    """``mse_weight * MSE + perceptual_weight * d(pred, target)`` per image (N,); d is skipped if None."""
    loss = mse_weight * mse_per_image(pred, target) if mse_weight else pred.new_zeros(pred.shape[0])
    if perceptual is not None and perceptual_weight:
        loss = loss + perceptual_weight * perceptual(pred, target)
    return loss


def target_loss(targets: torch.Tensor, perceptual: PerceptualLike | None, mse_weight: float,
                perceptual_weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`reconstruction_loss` against fixed ``targets``, as ``pred -> (N,)`` in float32.

    A perceptual network that offers ``against(targets) -> (pred -> (N,))`` computes the targets' features
    once, instead of at every optimisation step (a third of the perceptual network's cost per step).
    """
    against = None
    if perceptual is not None and perceptual_weight:
        against = getattr(perceptual, "against", None) or (lambda y: (lambda pred: perceptual(pred, y)))
    distances: dict[bool, Callable[[torch.Tensor], torch.Tensor]] = {}  # per autocast state: the target
    # features of a bf16 step are bf16, those of the final full-precision evaluation float32

    def loss(pred: torch.Tensor) -> torch.Tensor:
        pred = pred.float()  # under bf16 autocast the generator's output is bf16; the loss is float32
        out = mse_weight * mse_per_image(pred, targets) if mse_weight else pred.new_zeros(pred.shape[0])
        if against is not None:
            key = torch.is_autocast_enabled(pred.device.type)
            if key not in distances:
                distances[key] = against(targets)
            out = out + perceptual_weight * distances[key](pred).float()
        return out

    return loss


def perceptual_note(perceptual: PerceptualLike | None, weight: float) -> str:
    """Human text saying which perceptual network the loss used."""
    if not weight:
        return "none (weight 0)"
    if perceptual is None:
        return "none: no perceptual network available (the perceptual term was dropped)"
    return perceptual.name


def mean_latent_wp(generator, n: int) -> torch.Tensor:
    """A fresh W+ code (n, num_ws, w_dim) filled with the generator's mean latent, ready to optimise."""
    return generator.w_avg.detach().clone()[None, None].repeat(n, generator.num_ws, 1).requires_grad_(True)


def stylegan_lr(step: int, total: int, base: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """StyleGAN2 projector schedule: linear ramp-up over ``rampup``, cosine ramp-down over ``rampdown``."""
    t = step / max(total, 1)
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return base * ramp


_STEP_OBSERVER: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "step_observer", default=None)


@contextlib.contextmanager
def observe_steps(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Call ``callback(done, total)`` after every optimisation step of :func:`run_adam` inside the block.

    For progress display: the callback gets step counts only, so it adds no host synchronisation.
    """
    token = _STEP_OBSERVER.set(callback)
    try:
        yield
    finally:
        _STEP_OBSERVER.reset(token)


@dataclass
class OptimResult:
    """Final per-image loss (N,) and which images diverged."""

    loss: torch.Tensor
    diverged: torch.Tensor  # (N,) bool


def run_adam(variables: Sequence[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], *, steps: int,
             lr: float | Callable[[int], float], betas: tuple[float, float] = (0.9, 0.999),
             eps: float = 1e-8, after_step: Callable[[int], None] | None = None) -> OptimResult:
    """Minimise ``sum(loss_fn(step))`` over ``variables`` (leaf tensors, batch first) with Adam.

    The returned loss is that of the final variables, ``loss_fn(steps)`` evaluated once more after the last
    step in float32 without autocast (``methods.base.full_precision``), whatever precision the steps ran at.
    Images whose loss becomes non-finite are recorded as diverged; their terms are excluded from the sum
    from then on (their own variables stay as they were), so they cannot poison the batch. There is no
    host synchronisation inside the loop.

    Args:
        variables: tensors with ``requires_grad``; dimension 0 is the image index.
        loss_fn: ``step -> (N,)`` per-image loss.
        steps: number of Adam steps.
        lr: constant learning rate, or ``step -> lr``.
        betas: Adam betas.
        eps: Adam epsilon.
        after_step: called after each step (e.g. to re-project variables), inside ``no_grad``.

    Returns:
        The per-image loss of the final variables and the divergence flags.
    """
    opt = torch.optim.Adam(list(variables), lr=lr(0) if callable(lr) else lr, betas=betas, eps=eps)
    n = variables[0].shape[0]
    diverged = torch.zeros(n, dtype=torch.bool, device=variables[0].device)
    observer = _STEP_OBSERVER.get()
    for step in range(steps):
        if callable(lr):
            for group in opt.param_groups:
                group["lr"] = lr(step)
        per_image = loss_fn(step)
        diverged |= ~torch.isfinite(per_image)
        safe = torch.where(diverged, torch.zeros_like(per_image), per_image)
        opt.zero_grad(set_to_none=True)
        safe.sum().backward()
        with torch.no_grad():
            for v in variables:  # keep diverged images' variables from moving on NaN gradients
                if v.grad is not None:
                    v.grad.masked_fill_(diverged.view(-1, *[1] * (v.ndim - 1)), 0.0)
        opt.step()
        if after_step is not None:
            with torch.no_grad():
                after_step(step)
        if observer is not None:
            observer(step + 1, steps)
    for v in variables:  # frozen while the final loss is measured (no autograd bookkeeping at all)
        v.requires_grad_(False)
    try:
        with torch.no_grad(), full_precision(variables[0].device):
            last = loss_fn(steps).detach().float()
    finally:
        for v in variables:
            v.requires_grad_(True)
    return OptimResult(loss=last, diverged=diverged | ~torch.isfinite(last))


def failure_reasons(diverged: torch.Tensor) -> tuple[str | None, ...]:
    """Per-image failure text from divergence flags."""
    return tuple("optimisation diverged (non-finite loss)" if d else None for d in diverged.tolist())
