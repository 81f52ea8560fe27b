"""Tests for P-norm+ (methods.pnorm) and the ``pnorm`` preset: statistics, whitening, penalty, shipped stats."""

import numpy as np
import pytest
import torch

from methods import build_method, get_preset
from methods.pnorm import PNormStats, compute_pnorm_stats, pnorm_stats_for
from tests.conftest import BlurPerceptual, make_tiny_generator

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


N_STATS = 20_000


@pytest.fixture(scope="module")
def gen_and_stats():
    """A private tiny generator (stats get attached to it) and its P-norm+ statistics from 20k samples."""
    gen = make_tiny_generator(seed=3)
    stats = compute_pnorm_stats(gen, samples=N_STATS, batch=5_000, seed=1)
    gen.pnorm_stats = stats
    return gen, stats


def lrelu5_np(w: np.ndarray) -> np.ndarray:
    return np.where(w >= 0, w, 5.0 * w)


def whitened_fresh_samples(gen, stats: PNormStats, n: int, seed: int) -> np.ndarray:
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return stats.whiten(gen.mapping(z)).double().numpy()


def assert_whitened(v: np.ndarray, cov_tol: float, mean_tol: float) -> None:
    cov = np.cov(v, rowvar=False)
    dev = np.abs(cov - np.eye(cov.shape[0]))
    assert dev.max() < cov_tol, f"max |cov - I| = {dev.max():.4f} (diagonal {np.abs(np.diag(cov) - 1).max():.4f})"
    assert np.abs(v.mean(0)).max() < mean_tol, f"max |mean| = {np.abs(v.mean(0)).max():.4f}"


def test_stats_match_numpy_float64_pca(gen_and_stats):
    """Mean, spectrum and inverse covariance agree with numpy's float64 covariance of the same samples."""
    gen, stats = gen_and_stats
    g = torch.Generator().manual_seed(1)  # the same z draws as compute_pnorm_stats(seed=1, batch=5000)
    with torch.no_grad():
        w = torch.cat([gen.mapping(torch.randn(5_000, gen.z_dim, generator=g)) for _ in range(N_STATS // 5_000)])
    p = lrelu5_np(w.double().numpy())
    cov = np.cov(p, rowvar=False)
    assert stats.samples == N_STATS
    np.testing.assert_allclose(stats.mean.numpy(), p.mean(0), atol=1e-5 * np.abs(p).max())
    np.testing.assert_allclose(stats.eigvals.double().numpy(), np.linalg.eigvalsh(cov),
                               rtol=1e-4, atol=1e-6 * np.linalg.eigvalsh(cov).max())
    # V diag(1/lambda) V^T is the quadratic form P-norm+ uses; it is invariant to eigenvector signs
    v, lam = stats.eigvecs.double().numpy(), stats.eigvals.double().numpy()
    inv = np.linalg.inv(cov)
    np.testing.assert_allclose((v / lam) @ v.T, inv, atol=1e-3 * np.abs(inv).max())


def test_whitening_fresh_samples_gives_identity_covariance(gen_and_stats):
    """Statistics from 20k samples whiten 20k *other* samples: cov ~ I and mean ~ 0.

    Tolerances: each entry of a covariance of n unit-variance samples has standard error ~1/sqrt(n)
    (off-diagonal) and ~sqrt(2/n) (diagonal), 0.007 / 0.010 for n = 20k, and both the statistics and the
    check carry such an error; the maximum over 32x32 entries of these (slightly heavy-tailed) variables
    measured 0.03-0.05 over three seeds, so 0.1 leaves a factor two. Mean: standard error
    sqrt(2/n) = 0.01 per dimension; max over 32 measured ~0.025; tolerance 0.06.
    """
    gen, stats = gen_and_stats
    assert_whitened(whitened_fresh_samples(gen, stats, N_STATS, seed=2), cov_tol=0.1, mean_tol=0.06)


def test_whitening_with_another_generators_stats_fails(gen_and_stats):
    """Control: the check above can fail (statistics of a different generator do not whiten these samples)."""
    gen, _ = gen_and_stats
    other = compute_pnorm_stats(make_tiny_generator(seed=4), samples=5_000, batch=5_000, seed=1)
    with pytest.raises(AssertionError):
        assert_whitened(whitened_fresh_samples(gen, other, 5_000, seed=2), cov_tol=0.1, mean_tol=0.06)


def penalty_np(wp: np.ndarray, stats: PNormStats) -> np.ndarray:
    """Direct float64 P-norm+: mean over rows and dims of ((lrelu5(w) - mu) V / sqrt(lambda))^2, per image."""
    mu, v, lam = (t.double().numpy() for t in (stats.mean, stats.eigvecs, stats.eigvals))
    white = (lrelu5_np(wp.astype(np.float64)) - mu) @ v / np.sqrt(lam)
    return (white**2).mean(axis=(1, 2))


def test_penalty_is_per_image_mean_of_squares(gen_and_stats):
    gen, stats = gen_and_stats
    g = torch.Generator().manual_seed(9)
    wp = gen.w_avg + 0.7 * torch.randn(3, gen.num_ws, gen.w_dim, generator=g)  # both signs: lrelu5 matters
    got = stats.penalty(wp)
    assert got.shape == (3,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), penalty_np(wp.numpy(), stats), rtol=1e-4)
    singles = torch.cat([stats.penalty(wp[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(singles, got, rtol=1e-6, atol=0)


def test_pnorm_stats_for_uses_attached_stats(gen_and_stats):
    gen, stats = gen_and_stats
    got = pnorm_stats_for(gen)
    assert got.samples == N_STATS and torch.equal(got.eigvals, stats.eigvals)


def test_pnorm_preset_metadata_and_run(gen_and_stats):
    """The preset defaults to 1300 steps and weight 0.001, records them, and adds 0.001 * P-norm+ to the loss."""
    preset = get_preset("pnorm")
    assert preset.default_steps == 1300 and preset.latent_space == "W+"
    assert build_method("pnorm").params.pnorm_weight == 0.001
    gen, stats = gen_and_stats
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x = gen(z).clamp(-1, 1)
    perceptual = BlurPerceptual()
    inv = build_method("pnorm", {"steps": 2}).invert(x, gen, seeds=[1, 2], perceptual=perceptual)
    assert inv.info["pnorm_weight"] == 0.001 and inv.info["steps"] == 2
    assert inv.failed == (None, None) and torch.isfinite(inv.loss).all()
    # no step: the reported loss (that of the returned code) is the objective at the start (every row at the
    # mean latent)
    one = build_method("pnorm", {"steps": 0}).invert(x, gen, seeds=[1, 2], perceptual=perceptual)
    wp0 = gen.w_avg.expand(2, gen.num_ws, -1)
    with torch.no_grad():
        pred = gen.synthesis(wp0)
    recon = (pred - x).square().flatten(1).mean(1) + perceptual(pred, x)
    expected = recon.double().numpy() + 0.001 * penalty_np(wp0.numpy(), stats)
    np.testing.assert_allclose(one.loss.double().numpy(), expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------- shipped statistics


def test_shipped_stats_load_and_whiten_world_samples():
    """The shipped statistics (1M samples) whiten 20k fresh samples of the shipped generator.

    Same tolerances as above; the statistics' own error is negligible at 1M samples, and their smallest
    eigenvalue is ~2e-6 of a largest ~11, so this also checks that the near-null directions survived
    float32 storage. Measured: max |cov - I| ~0.035, max |mean| ~0.025.
    """
    from safetensors import safe_open

    from bench.runner import attach_pnorm_stats
    from bench.world import zoo
    from bench.world.defaults import default_generator

    path = zoo.asset_path("pnorm_stats")
    assert path is not None, "pnorm_stats.safetensors is not shipped"
    with safe_open(str(path), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    assert shapes == {"mean": (256,), "eigvecs": (256, 256), "eigvals": (256,)}
    gen = default_generator()
    attach_pnorm_stats(gen, use_world=True)
    stats = gen.pnorm_stats
    assert (stats.eigvals > 0).all() and (stats.eigvals[1:] >= stats.eigvals[:-1]).all()
    torch.testing.assert_close(stats.eigvecs.T @ stats.eigvecs, torch.eye(256), atol=1e-4, rtol=0)
    assert_whitened(whitened_fresh_samples(gen, stats, 20_000, seed=31337), cov_tol=0.1, mean_tol=0.06)
