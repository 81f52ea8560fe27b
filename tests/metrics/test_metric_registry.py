"""Registry behaviour and a contract test over every registered metric."""

import math

import pytest
import torch
import torchvision

from bench.metrics import (
    BACKBONE_FILES,
    DEFAULT_METRICS,
    MASKED_SUFFIX,
    Metric,
    MetricInfo,
    build_metrics,
    list_metrics,
    register_metric,
)
from bench.metrics import base as metrics_base

# the identity metric needs the optional `faces` extra and real faces (not the random batches used here);
# its own tests are in tests/bench/test_faces.py
NAMES = [info.name for info in list_metrics() if info.name != "identity"]


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """Random weights in torchvision's format (features only), so that every metric can run."""
    folder = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None).features
    vgg = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    paths = {}
    for net, features in (("alex", alex), ("vgg", vgg)):
        paths[net] = folder / BACKBONE_FILES[net]
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, paths[net])
    return paths


@pytest.fixture(scope="module")
def metrics(lpips_files, real_perceptual_extra):
    built = build_metrics(NAMES, device="cpu", lpips_weights=lpips_files)
    return {m.info.name: m for m in built}


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = (x + 0.5 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    mask = torch.ones(n, 1, size, size)
    mask[..., : size // 4, :] = 0  # a band of invalid pixels, like a translated image's border
    return x, y, mask


def test_defaults_are_registered():
    assert set(DEFAULT_METRICS) <= set(NAMES)
    assert {"mse", "psnr", "ssim", "lpips-alex", "lpips-vgg"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_metric_contract(name, metrics):
    metric = metrics[name]
    info = metric.info
    assert isinstance(metric, Metric) and metric.available and metric.reason == ""
    assert info.name == name and isinstance(info.higher_is_better, bool) and info.description
    low, high = info.value_range
    assert low < high

    x, y, mask = _batch()
    batched = metric(x, y)
    assert batched.shape == (4,) and batched.dtype == torch.float32
    assert ((batched >= low) & (batched <= high)).all()
    singles = torch.cat([metric(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)

    # Masked variant, on fewer images to keep LPIPS-vgg cheap on CPU.
    masked = metric(x[:2], y[:2], mask[:2])
    assert masked.shape == (2,) and masked.dtype == torch.float32 and torch.isfinite(masked).all()
    singles = torch.cat([metric(x[i : i + 1], y[i : i + 1], mask[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(masked, singles, rtol=1e-4, atol=1e-6)

    # Direction: a perfect reconstruction beats a noisy one.
    perfect = metric(x[:1], x[:1]).item()
    noisy = batched[0].item()
    assert perfect > noisy if info.higher_is_better else perfect < noisy


def test_build_defaults_in_order(lpips_files):
    built = build_metrics(None, device="cpu", lpips_weights=lpips_files)
    assert [m.info.name for m in built] == list(DEFAULT_METRICS)


def test_unavailable_metrics_are_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    built = {m.info.name: m for m in build_metrics(None, device="cpu")}
    assert built["psnr"].available
    for name in ("lpips-alex", "lpips-vgg"):
        assert not built[name].available and str(tmp_path) in built[name].reason
        x, y, _ = _batch(n=1)
        with pytest.raises(RuntimeError, match=f"{name}.*unavailable"):
            built[name](x, y)


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(ValueError, match=r"unknown metric 'psnrr'.*mse.*Did you mean 'psnr'") as info:
        build_metrics(["psnrr"], device="cpu")
    assert all(name in str(info.value) for name in NAMES)
    with pytest.raises(ValueError, match="pass a mask"):
        build_metrics(["mse" + MASKED_SUFFIX], device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"names": ["mse", "mse"]}, "repeated"), ({"names": "mse"}, "sequence"),
     ({"names": ["mse"], "lpips_weights": {"vgg16": "x.pth"}}, "unknown LPIPS net")],
)
def test_bad_build_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_metrics(device="cpu", **kwargs)


def test_register_metric_checks(monkeypatch):
    monkeypatch.setattr(metrics_base, "_REGISTRY", dict(metrics_base._REGISTRY))
    info = MetricInfo(name="dummy", higher_is_better=False, value_range=(0.0, math.inf), description="d")

    class Dummy(Metric):
        def __init__(self, options=None):
            self.info = info

        def _compute(self, pred, target, mask):
            return (pred - target).abs().mean(dim=(1, 2, 3))

    register_metric("dummy", info=info)(Dummy)
    assert "dummy" in [i.name for i in list_metrics()]
    [built] = build_metrics(["dummy"], device="cpu")
    assert isinstance(built, Dummy)
    with pytest.raises(ValueError, match="already registered"):
        register_metric("dummy", info=info)(Dummy)
    with pytest.raises(ValueError, match="info names 'dummy'"):
        register_metric("other", info=info)(Dummy)
    with pytest.raises(ValueError, match="no MetricInfo"):
        register_metric("bare")(lambda options: Dummy())
    with pytest.raises(ValueError, match="not a Metric subclass"):
        register_metric("dummy2", info=MetricInfo("dummy2", False, (0.0, 1.0), "d"))(dict)


def test_metric_info_validation():
    with pytest.raises(ValueError, match="low > high"):
        MetricInfo("x", True, (1.0, 0.0), "d")
    with pytest.raises(ValueError, match="invalid metric name"):
        MetricInfo("x" + MASKED_SUFFIX, True, (0.0, 1.0), "d")
