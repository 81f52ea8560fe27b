"""W+ optimisation: Image2StyleGAN (Abdal et al., ICCV 2019), and the same loop with a P-norm+ penalty.

``pnorm`` is the P-norm+ baseline of BDInvert's Table 1, here with II2S's published recipe (Zhu et al.
2020: lr 0.01, 1300 steps, MSE + perceptual + 0.001 * P-norm+; reference/methods.md §2).

Every ws row is a free 512-d (w_dim) vector, all initialised to the generator's mean latent; Adam minimises
``mse_weight * MSE + perceptual_weight * d_perceptual`` per image (reference/methods.md §3). Noise is held
constant. The paper uses 5,000 Adam steps at lr 0.01; the perceptual term is whatever perceptual distance
the benchmark hands in (its name is recorded in ``Inversion.info``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from methods.base import (
    GeneratorLike,
    Inversion,
    Method,
    PerceptualLike,
    Preset,
    check_targets,
    register_preset,
)
from methods.optim import failure_reasons, mean_latent_wp, perceptual_note, run_adam, target_loss
from methods.pnorm import pnorm_stats_for


class WPlusOptimization(Method):
    """Optimise a W+ code (N, num_ws, w_dim) from the mean latent."""

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters (defaults: Image2StyleGAN)."""

        steps: int = 5000
        lr: float = 0.01
        mse_weight: float = 1.0
        perceptual_weight: float = 1.0
        pnorm_weight: float = 0.0
        betas: tuple[float, float] = (0.9, 0.999)

    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | None = None) -> Inversion:
        """Invert targets (N, 3, R, R) in [-1, 1]; deterministic (seeds are not needed)."""
        check_targets(targets, generator.resolution)
        p = self.params
        wp = mean_latent_wp(generator, targets.shape[0])

        stats = pnorm_stats_for(generator) if p.pnorm_weight else None

        recon = target_loss(targets, perceptual, p.mse_weight, p.perceptual_weight)

        def loss_fn(step: int) -> torch.Tensor:
            loss = recon(generator.synthesis(wp))
            return loss + p.pnorm_weight * stats.penalty(wp) if stats is not None else loss

        result = run_adam([wp], loss_fn, steps=p.steps, lr=p.lr, betas=p.betas)
        info = {**asdict(p), "perceptual": perceptual_note(perceptual, p.perceptual_weight)}
        return self._finish({"wp": wp}, result.loss, failure_reasons(result.diverged), info, generator)


register_preset(Preset(
    name="im2s", cls=WPlusOptimization, params={}, latent_space="W+",
    description="Image2StyleGAN: W+ from the mean latent, Adam lr 0.01, MSE + perceptual, 5000 steps",
    reference="Abdal, Qin, Wonka. Image2StyleGAN. ICCV 2019",
    gpu_precisions=("tf32", "bf16")))  # both held the GPU parity test
register_preset(Preset(
    name="pnorm", cls=WPlusOptimization, params={"steps": 1300, "pnorm_weight": 0.001}, latent_space="W+",
    description="P-norm+ baseline: W+ from the mean latent, Adam lr 0.01, MSE + perceptual + 0.001 P-norm+, "
                "1300 steps (II2S recipe)",
    reference="Zhu, Abdal, Qin, Femiani, Wonka. Improved StyleGAN Embedding: Where are the Good Latents? 2020",
    gpu_precisions=("tf32", "bf16")))
