"""Pixel metrics (MSE, PSNR, SSIM) against closed forms and scikit-image."""

import math

import numpy as np
import pytest
import scipy.ndimage
import skimage.metrics
import torch

from bench.metrics import PSNR_MSE_FLOOR, MSEMetric, PSNRMetric, SSIMMetric
from bench.metrics.pixel import erode, ssim_weights

PSNR_TOL_DB = 1e-4
# kornia filters in float32, scikit-image in float64; measured |diff| <= 7e-7 (the full, uncropped map
# mean differs by up to 0.06 at 32 px), so 1e-5 leaves room and still tells the two apart.
SSIM_TOL = 1e-5


def _images(n=3, size=32, noise=0.2, seed=0):
    """Smooth structured images plus a noisy copy, float32 in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = (x + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    y = (x + noise * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return x.contiguous(), y.contiguous()


def _hwc01(t):
    return ((t.double().numpy() + 1) / 2).transpose(1, 2, 0)


def test_mse_matches_numpy_closed_form():
    x, y = _images()
    expected = np.mean(((x.double().numpy() + 1) / 2 - (y.double().numpy() + 1) / 2) ** 2, axis=(1, 2, 3))
    got = MSEMetric()(x, y)
    assert got.dtype == torch.float32 and got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("noise", [0.01, 0.2, 1.0])
def test_psnr_matches_skimage_and_closed_form(noise):
    x, y = _images(noise=noise, seed=1)
    got = PSNRMetric()(x, y).double().numpy()
    for i in range(x.shape[0]):
        a, b = _hwc01(x[i]), _hwc01(y[i])
        ref = skimage.metrics.peak_signal_noise_ratio(a, b, data_range=1)
        closed = 10 * math.log10(1 / np.mean((a - b) ** 2))
        assert abs(got[i] - ref) < PSNR_TOL_DB
        assert abs(got[i] - closed) < PSNR_TOL_DB


def test_psnr_floor_for_identical_images():
    x, _ = _images(n=2)
    got = PSNRMetric()(x, x)
    expected = 10 * math.log10(1 / PSNR_MSE_FLOOR)
    assert expected == pytest.approx(100.0)
    torch.testing.assert_close(got, torch.full((2,), 100.0))
    assert PSNRMetric.info.value_range == (0.0, 100.0)


@pytest.mark.parametrize(("size", "noise"), [(32, 0.2), (64, 0.05), (48, 1.0)])
def test_ssim_matches_skimage(size, noise):
    x, y = _images(size=size, noise=noise, seed=size)
    got = SSIMMetric()(x, y).double().numpy()
    for i in range(x.shape[0]):
        ref = skimage.metrics.structural_similarity(
            _hwc01(x[i]), _hwc01(y[i]), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1, channel_axis=2)
        assert abs(got[i] - ref) < SSIM_TOL


def test_ssim_identical_is_one_and_direction():
    x, y = _images(noise=0.3)
    torch.testing.assert_close(SSIMMetric()(x, x), torch.ones(3), atol=1e-6, rtol=0)
    assert (SSIMMetric()(x, y) < 0.99).all()


def test_erode_matches_scipy_binary_erosion():
    g = np.random.default_rng(3)
    mask = (g.random((2, 1, 40, 40)) > 0.05).astype(np.float32)
    mask[0, 0, 10:30, 5:25] = 1
    got = erode(torch.from_numpy(mask), 5).numpy()
    for i in range(2):
        ref = scipy.ndimage.binary_erosion(mask[i, 0].astype(bool), structure=np.ones((11, 11), bool),
                                           border_value=0)
        np.testing.assert_array_equal(got[i, 0].astype(bool), ref)


@pytest.mark.parametrize("metric", [MSEMetric(), PSNRMetric(), SSIMMetric()], ids=["mse", "psnr", "ssim"])
def test_full_mask_equals_unmasked(metric):
    x, y = _images()
    full = torch.ones(3, 1, 32, 32)
    torch.testing.assert_close(metric(x, y, full), metric(x, y), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(metric(x, y, full.bool()), metric(x, y), rtol=1e-6, atol=1e-7)


def _half_garbage(size=40):
    """pred == target on the left half, unrelated on the right half; mask = left half."""
    x, _ = _images(n=2, size=size, seed=5)
    garbage, _ = _images(n=2, size=size, seed=6)
    pred = x.clone()
    pred[..., size // 2:] = garbage[..., size // 2:]
    mask = torch.zeros(2, 1, size, size)
    mask[..., : size // 2] = 1
    return pred, x, mask


def test_masked_half_image():
    pred, target, mask = _half_garbage()
    torch.testing.assert_close(MSEMetric()(pred, target, mask), torch.zeros(2))
    torch.testing.assert_close(PSNRMetric()(pred, target, mask), torch.full((2,), 100.0))
    torch.testing.assert_close(SSIMMetric()(pred, target, mask), torch.ones(2), atol=1e-6, rtol=0)
    # Unmasked, the garbage half must show; this is what makes the masked checks able to fail.
    assert (MSEMetric()(pred, target) > 1e-2).all()
    assert (SSIMMetric()(pred, target) < 0.8).all()


def test_ssim_erosion_excludes_straddling_windows():
    pred, target, mask = _half_garbage()
    import kornia

    ssim_map = kornia.metrics.ssim((pred + 1) / 2, (target + 1) / 2, 11, max_val=1.0, eps=0.0)
    un_eroded = (ssim_map * mask).sum(dim=(1, 2, 3)) / (3 * mask.sum(dim=(1, 2, 3)))
    assert (un_eroded < 0.99).all()  # windows crossing into the garbage half pull the mean down


def test_empty_mask_gives_nan_for_that_image_only():
    x, y = _images(n=2)
    mask = torch.ones(2, 1, 32, 32)
    mask[0] = 0
    for metric in (MSEMetric(), PSNRMetric(), SSIMMetric()):
        got = metric(x, y, mask)
        assert math.isnan(got[0].item()) and math.isfinite(got[1].item())


def test_ssim_thin_mask_falls_back_to_uneroded():
    x, y = _images(n=1, noise=0.3)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:14, :] = 1  # 4 px high: erosion by 5 px empties it
    torch.testing.assert_close(ssim_weights(mask), mask)
    import kornia

    ssim_map = kornia.metrics.ssim((x + 1) / 2, (y + 1) / 2, 11, max_val=1.0, eps=0.0)
    expected = ssim_map[..., 10:14, :].mean()
    torch.testing.assert_close(SSIMMetric()(x, y, mask)[0], expected, rtol=1e-5, atol=1e-6)


def test_tiny_rounding_overshoot_is_accepted():
    x, y = _images(n=1)
    x[0, 0, 0, 0] = 1.0005
    assert torch.isfinite(MSEMetric()(x, y)).all()


@pytest.mark.parametrize(
    ("pred", "match"),
    [
        (torch.zeros(2, 3, 32, 32, dtype=torch.float64), "float32"),
        (torch.zeros(2, 1, 32, 32), "shape"),
        (torch.zeros(2, 3, 32, 24), "H == W"),
        (torch.full((2, 3, 32, 32), 2.0), r"\[-1, 1\]"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (torch.zeros(1, 3, 32, 32), "differ"),
    ],
)
def test_bad_images_raise_clear_errors(pred, match):
    target = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=match) as info:
        MSEMetric()(pred, target)
    assert "shape" in str(info.value)


@pytest.mark.parametrize(
    ("mask", "match"),
    [(torch.ones(2, 3, 32, 32), "shape"), (torch.full((2, 1, 32, 32), 0.5), r"\{0, 1\}"),
     (np.ones((2, 1, 32, 32)), "torch.Tensor")],
)
def test_bad_masks_raise_clear_errors(mask, match):
    x, y = _images(n=2)
    with pytest.raises(ValueError, match=match):
        SSIMMetric()(x, y, mask)
