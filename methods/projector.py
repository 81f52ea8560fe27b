"""The StyleGAN2 projector in W (Karras et al., CVPR 2020, "Analyzing and improving...", §5).

One w per image (shared by all layers), initialised to the mean latent; Adam with lr 0.1, linear ramp-up over
the first 5% of steps and cosine ramp-down over the last 25%; Gaussian noise added to w during the first
75% of steps with std ``w_std * 0.05 * (1 - t/0.75)^2``; 1000 steps; loss = perceptual distance
(LPIPS-VGG in the original). Deviation, stated: the benchmark keeps the noise maps constant, so the
projector's noise-map optimisation and its noise regulariser are not used. Without a perceptual network
the loss falls back to pixel MSE and ``Inversion.info`` says so.
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
from methods.optim import failure_reasons, perceptual_note, run_adam, stylegan_lr, target_loss


def w_statistics(generator: GeneratorLike, samples: int, seed: int = 0) -> float:
    """RMS distance of mapped samples from ``w_avg`` (the projector's ``w_std``)."""
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = generator.mapping(z.to(generator.w_avg.device))
    return float(((w - generator.w_avg).square().sum() / samples).sqrt())


class WProjector(Method):
    """Optimise one w per image, broadcast to all layers."""

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters (defaults: the StyleGAN2 projector)."""

        steps: int = 1000
        lr: float = 0.1
        rampup: float = 0.05
        rampdown: float = 0.25
        noise_factor: float = 0.05
        noise_ramp: float = 0.75
        mse_weight: float = 0.0
        perceptual_weight: float = 1.0
        w_std_samples: int = 10_000

    def _latent_noise(self, seeds: Sequence[int], w_dim: int, steps: int) -> torch.Tensor:
        """(steps_with_noise, N, w_dim) standard normal noise, drawn per image from its own seed."""
        k = int(steps * self.params.noise_ramp)
        return torch.stack([torch.randn(k, w_dim, generator=torch.Generator().manual_seed(int(s)))
                            for s in seeds], dim=1)

    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | None = None) -> Inversion:
        """Invert targets (N, 3, R, R) in [-1, 1]; latent noise is drawn from each image's seed."""
        check_targets(targets, generator.resolution)
        if len(seeds) != targets.shape[0]:
            raise ValueError(f"need one seed per image: {len(seeds)} seeds for {targets.shape[0]} images")
        p = self.params
        mse_w, perc_w = (p.mse_weight, p.perceptual_weight) if perceptual is not None else (1.0, 0.0)
        w_std = w_statistics(generator, p.w_std_samples)
        noise = self._latent_noise(seeds, generator.w_dim, p.steps).to(generator.w_avg.device)
        w = generator.w_avg.detach().clone()[None].repeat(targets.shape[0], 1).requires_grad_(True)
        recon = target_loss(targets, perceptual, mse_w, perc_w)

        def loss_fn(step: int) -> torch.Tensor:
            t = step / max(p.steps, 1)
            strength = w_std * p.noise_factor * max(0.0, 1.0 - t / p.noise_ramp) ** 2
            w_noisy = w + noise[step] * strength if step < noise.shape[0] else w
            pred = generator.synthesis(w_noisy[:, None].expand(-1, generator.num_ws, -1))
            return recon(pred)

        result = run_adam([w], loss_fn, steps=p.steps, betas=(0.9, 0.999),
                          lr=lambda s: stylegan_lr(s, p.steps, p.lr, p.rampup, p.rampdown))
        wp = w.detach()[:, None].repeat(1, generator.num_ws, 1)
        note = perceptual_note(perceptual, perc_w) if perceptual is not None else \
            "none: no perceptual network available; loss fell back to pixel MSE"
        info = {**asdict(p), "perceptual": note, "w_std": w_std}
        return self._finish({"wp": wp}, result.loss, failure_reasons(result.diverged), info, generator)


register_preset(Preset(
    name="w", cls=WProjector, params={}, latent_space="W",
    description="StyleGAN2 projector in W: Adam lr 0.1 with ramps, latent noise, 1000 steps (noise maps fixed)",
    reference="Karras et al. Analyzing and Improving the Image Quality of StyleGAN. CVPR 2020",
    # held on the mean (H200, 2026-12-04, benchmarks/RESULTS.md): its float32 run moves images by up to 0.14 dB
    # when the targets move by 1e-6 (three draws), so it is judged as F/W+ is; TF32 -0.005 +- 0.010 dB PSNR,
    # bf16 +0.008 +- 0.020 dB over 8 faces. Strict float32 at 1024 px ran at batch 1 (cuDNN's FFT workspaces)
    gpu_precisions=("tf32", "bf16")))
