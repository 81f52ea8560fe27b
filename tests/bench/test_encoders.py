"""Tests for the F/W+ base-code encoders: architecture, input resize, shift equivariance, files, shipped quality."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.encoders import encoder_format, load_encoder
from bench.encoders.basecode import save_encoder
from methods.fwplus import BaseCodeEncoder, encoder_input

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def smooth_images(n: int, side: int, seed: int) -> torch.Tensor:
    """(n, 3, side, side) smooth random images in [-1, 1] (noise at 1/4 resolution, bilinearly upsampled)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, side // 4, side // 4, generator=g) * 2 - 1
    return F.interpolate(x, size=side, mode="bilinear", align_corners=False)


def random_eval_encoder(out_channels: int, seed: int = 0) -> BaseCodeEncoder:
    """A random-init encoder in eval mode whose BatchNorms are non-trivial per-channel affine maps."""
    torch.manual_seed(seed)
    enc = BaseCodeEncoder(out_channels)
    g = torch.Generator().manual_seed(seed + 1)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return enc.eval().requires_grad_(False)


@pytest.mark.parametrize("s", [8, 16])
def test_encoder_output_shape(s):
    enc = random_eval_encoder(24)
    assert enc.stride == 8
    f = enc(smooth_images(2, 8 * s, seed=s))
    assert f.shape == (2, 24, s, s) and f.dtype == torch.float32 and torch.isfinite(f).all()


@pytest.mark.parametrize(("res", "s"), [(64, 8), (64, 16), (32, 16), (128, 16)])
def test_encoder_input_resizes_to_8s_like_pil_bicubic(res, s):
    """encoder_input gives 8s x 8s; values match PIL's bicubic resize of the float image (independent code)."""
    x = smooth_images(2, res, seed=3)
    y = encoder_input(x, s)
    assert y.shape == (2, 3, 8 * s, 8 * s)
    if res == 8 * s:
        assert y is x  # already at the encoder's side: untouched
        return
    for i in range(2):
        ref = np.stack([np.asarray(Image.fromarray(x[i, c].numpy()).resize((8 * s, 8 * s), Image.BICUBIC))
                        for c in range(3)])
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5)


def _shift(x: torch.Tensor, px: int) -> torch.Tensor:
    """Move content by px down and right; the uncovered border is zero (not a roll, so borders differ)."""
    side = x.shape[-1]
    return F.pad(x, (px, 0, px, 0), value=0.0)[..., :side, :side]


@pytest.mark.parametrize("k", [1, 2])
def test_encoder_translation_equivariance(k):
    """Shifting the input by k*8 px shifts f by k cells, away from the borders.

    Equivariance is a property of the architecture (padded 3x3 convs, 2x2 pools aligned to the 8 px cell
    grid, eval-mode BatchNorm = a per-channel affine map), not of the weights, so a random-init encoder
    with random BN statistics tests it as well as the trained one. The receptive field reaches about 5
    cells: with a 3-cell margin the border still leaks in a little (measured: 2-3% relative L2, tolerance
    6%); with a 5-cell margin the match is exact. A 4 px shift (half a cell) gives ~30%, the control
    showing that the tolerance discriminates.
    """
    s = 16
    enc = random_eval_encoder(32, seed=7)
    x = smooth_images(2, 8 * s, seed=11)
    f = enc(x)

    def rel_err(fs: torch.Tensor, margin: int) -> float:
        a = fs[..., margin + k : s - margin, margin + k : s - margin]
        b = f[..., margin : s - margin - k, margin : s - margin - k]
        return float((a - b).norm() / b.norm())

    shifted = enc(_shift(x, 8 * k))
    assert rel_err(shifted, margin=3) < 0.06
    assert rel_err(shifted, margin=5) < 1e-5
    half_cell = enc(_shift(x, 4 * k))
    assert rel_err(half_cell, margin=3) > 0.15


def test_save_load_round_trip(tmp_path):
    enc = random_eval_encoder(16, seed=2)
    path = tmp_path / "enc.safetensors"
    save_encoder(enc, path, base_res=8, extra={"steps": 5})
    assert encoder_format(path) == "bench-basecode-encoder"
    loaded = load_encoder(path)
    assert loaded.base_res == 8 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = smooth_images(2, 64, seed=4)
    ref = enc(x)
    # weights are stored in float16: relative error of order 1e-3
    assert float((loaded(x) - ref).norm() / ref.norm()) < 5e-3


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such encoder file"):
        load_encoder(tmp_path / "missing.safetensors")
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"garbage\.safetensors.*not a readable safetensors"):
        load_encoder(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="unknown encoder format 'something-else'"):
        load_encoder(other)


# ------------------------------------------------------------------------------------ shipped world encoders


@pytest.fixture(scope="module")
def world_generator():
    from bench.world.defaults import default_generator

    gen = default_generator()
    if "RANDOM" in gen.description:
        pytest.fail("the shipped world generator is missing (bench/world/assets)")
    return gen


def truncated_samples(gen, n: int, seed: int, psi: float = 0.7, rows: int = 8):
    """ws (n, num_ws, w_dim) and images, truncated on rows 0..7 as the encoder training samples are."""
    z = torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = gen.mapping(z)[:, None].repeat(1, gen.num_ws, 1)
        ws[:, :rows] = gen.w_avg + psi * (ws[:, :rows] - gen.w_avg)
        return ws, gen.synthesis(ws).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of [-1, 1] images mapped to [0, 1], peak 1."""
    mse = ((a - b) / 2).square().flatten(1).mean(1).double()
    return 10 * torch.log10(1 / mse)


@pytest.mark.parametrize("s", [8, 16])
def test_shipped_encoder_beats_mean_latent(world_generator, s):
    """synthesis_from(E(G(w)), ws, s) reconstructs fresh samples far better than the mean latent's image.

    Measured on the GPU over 500 samples: ~34 dB (s=8) / ~32 dB (s=16) vs ~17 dB for the mean latent.
    We ask for a 10 dB gain in the mean over 8 fresh samples (a seed never used in training), and for
    every single sample to gain at least 5 dB.
    """
    from bench.world import zoo

    gen = world_generator
    enc = load_encoder(zoo.asset_path(f"fwplus{s}_encoder"))
    assert enc.base_res == s
    ws, x = truncated_samples(gen, 8, seed=2024 + s)
    with torch.no_grad():
        f = enc(encoder_input(x, s))
        assert f.shape == (8, *gen.feature_shape(s))
        rec = gen.synthesis_from(f, ws, s).clamp(-1, 1)
        mean_img = gen.synthesis(gen.w_avg.expand(8, gen.num_ws, -1)).clamp(-1, 1)
    gain = psnr(rec, x) - psnr(mean_img, x)
    assert gain.mean() > 10, f"PSNR gain {gain.tolist()}"
    assert gain.min() > 5, f"PSNR gain {gain.tolist()}"
