"""LPIPS loading from torchvision-format files. The weights here are random: only the loader is tested."""

import math
import types
from pathlib import Path

import lpips
import pytest
import torch
import torch.nn.functional as F
import torchvision

from bench.metrics import (
    BACKBONE_FILES,
    LPIPSDistance,
    LPIPSMetric,
    PerceptualDistance,
    build_metrics,
    find_backbone_weights,
    load_lpips,
)


def _alexnet_state():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).state_dict()


def _vgg_features_state():
    # A features-only copy, as torchvision's vgg16.features names it (classifier not needed).
    torch.manual_seed(1)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    return {f"features.{k}": v for k, v in features.state_dict().items()}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds torchvision-format files (full alexnet, vgg16 features)."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    states = {"alex": _alexnet_state(), "vgg": _vgg_features_state()}
    for net, state in states.items():
        torch.save(state, ckpt / BACKBONE_FILES[net])
    return home, states


@pytest.fixture(scope="module")
def alex_metric(torch_home):
    """One loaded LPIPS-alex metric shared by the tests that only use it."""
    home, _ = torch_home
    return LPIPSMetric("alex", home / "hub" / "checkpoints" / BACKBONE_FILES["alex"])


@pytest.fixture()
def cached(torch_home, monkeypatch):
    home, states = torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    return states


def _images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)
    return x, y


def test_file_names_are_torchvisions():
    urls = {"alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url,
            "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url}
    for net, url in urls.items():
        assert url.rsplit("/", 1)[1] == BACKBONE_FILES[net]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_missing_weights_make_metric_unavailable(net, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / BACKBONE_FILES[net]
    assert find_backbone_weights(net) is None
    module, reason = load_lpips(net)
    assert module is None and str(expected) in reason and "lpips_weights" in reason
    metric = LPIPSMetric(net)
    assert not metric.available and str(expected) in metric.reason
    x, y = _images(n=1, size=32)
    with pytest.raises(RuntimeError, match=BACKBONE_FILES[net]):
        metric(x, y)
    [built] = build_metrics([f"lpips-{net}"], device="cpu")
    assert not built.available and str(expected) in built.reason


def test_loads_alexnet_from_hub_cache(cached):
    metric = LPIPSMetric("alex")
    assert metric.available and metric.reason == ""
    assert metric.weights_path.name == BACKBONE_FILES["alex"]
    net = metric.module.net
    # The saved tensors, not random ones, are in the backbone (first and last conv).
    torch.testing.assert_close(net.slice1[0].weight, cached["alex"]["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(net.slice5._modules["10"].weight, cached["alex"]["features.10.weight"], rtol=0, atol=0)
    lin = torch.load(Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu",
                     weights_only=True)
    torch.testing.assert_close(metric.module.lins[4].model[-1].weight, lin["lin4.model.1.weight"])
    assert not any(p.requires_grad for p in metric.module.parameters()) and not metric.module.training
    x, y = _images()
    d = metric(x, y)
    assert d.shape == (2,) and d.dtype == torch.float32 and torch.isfinite(d).all() and (d > 0).all()
    torch.testing.assert_close(metric(x, x), torch.zeros(2), rtol=0, atol=0)


def _official_lpips(net, state, monkeypatch):
    """lpips's own construction path, with torchvision's constructor handing it our weights."""

    def alexnet(**_):
        model = torchvision.models.alexnet(weights=None)
        model.load_state_dict(state)
        return model

    def vgg16(**_):
        model = torchvision.models.vgg16(weights=None)
        model.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
        return model

    fake_tv = types.SimpleNamespace(alexnet=alexnet, vgg16=vgg16)
    monkeypatch.setattr(lpips.pretrained_networks, "tv", fake_tv)
    return lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False).eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_lpips_own_loading_path(net, cached, monkeypatch):
    metric = LPIPSMetric(net)
    reference = _official_lpips(net, cached[net], monkeypatch)
    x, y = _images(n=2 if net == "alex" else 1, size=48, seed=2)  # VGG at 256 px is slow on CPU
    up = {"size": (256, 256), "mode": "bilinear", "align_corners": False, "antialias": True}
    with torch.no_grad():
        expected = reference(F.interpolate(x, **up), F.interpolate(y, **up)).reshape(-1)
    torch.testing.assert_close(metric(x, y), expected, rtol=1e-5, atol=1e-6)


def test_masked_lpips(alex_metric):
    metric = alex_metric
    x, y = _images(n=3, size=64, seed=3)
    mask = torch.ones(3, 1, 64, 64)
    torch.testing.assert_close(metric(x, y, mask), metric(x, y), rtol=1e-5, atol=1e-7)
    mask[0] = 0
    mask[1, ..., 32:] = 0
    pred = y.clone()
    pred[1, ..., :32] = x[1, ..., :32]  # identical on the valid (left) half of image 1
    got = metric(pred, x, mask)
    assert math.isnan(got[0].item())
    assert 0 < got[1].item() < metric(pred, x)[1].item()
    assert math.isfinite(got[2].item())


def test_explicit_path_and_build_metrics(torch_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: the explicit path must be used
    path = tmp_path / "my_alexnet.pth"
    torch.save(torch_home[1]["alex"], path)
    [metric] = build_metrics(["lpips-alex"], device="cpu", lpips_weights={"alex": str(path)})
    assert metric.available and metric.weights_path == path
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        find_backbone_weights("alex", tmp_path / "nowhere.pth")


def test_wrong_shape_names_file_and_key(tmp_path):
    state = dict(_alexnet_state())
    state["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad\.pth.*'features\.3\.weight'.*\(192, 64, 3, 3\)"):
        load_lpips("alex", path)
    del state["features.3.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad\.pth.*missing.*'features\.3\.weight'"):
        load_lpips("alex", path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pth.*cannot be read"):
        load_lpips("alex", path)


def test_lpips_distance_is_differentiable(alex_metric):
    dist = LPIPSDistance(alex_metric.module, "alex")
    assert isinstance(dist, PerceptualDistance) and dist.name == "lpips-alex"
    x, y = _images(size=32, seed=4)
    x.requires_grad_(True)
    d = dist(x, y)
    assert d.shape == (2,)
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.testing.assert_close(d.detach(), alex_metric(x.detach(), y))
    with pytest.raises(ValueError, match="same shape"):
        dist(x, y[:1])


@pytest.fixture(scope="module")
def vgg_distance(torch_home):
    home, _ = torch_home
    return LPIPSDistance(LPIPSMetric("vgg", home / "hub" / "checkpoints" / BACKBONE_FILES["vgg"]).module, "vgg")


def _against_and_call(dist, x, y):
    """(value, gradient) of against(y)(x) and of dist(x, y)."""
    out = []
    for fn in (dist.against(y), lambda a: dist(a, y)):
        xg = x.clone().requires_grad_(True)
        d = fn(xg)
        d.sum().backward()
        out.append((d.detach(), xg.grad))
    return out


@pytest.mark.parametrize("size", [256, 64])
def test_against_caches_the_target_and_gives_lpips_own_values(vgg_distance, size):
    """The optimisation loops' form (the target's features computed once) against the lpips package's
    own forward (``LPIPS.forward`` through ``dist(x, y)``): the same values and gradients, bit for bit."""
    x, y = _images(size=size, seed=5)
    (d_against, g_against), (d_call, g_call) = _against_and_call(vgg_distance, x, y)
    assert d_against.shape == (2,) and (d_against > 0).all()
    assert torch.equal(d_against, d_call) and torch.equal(g_against, g_call)
    with pytest.raises(ValueError, match="same shape"):
        vgg_distance.against(y)(x[:1])


def test_against_compiled_matches_eager_and_falls_back(alex_metric, monkeypatch):
    from bench import compiling

    dist = LPIPSDistance(alex_metric.module, "alex")
    x, y = _images(size=64, seed=6)
    (ref, ref_grad), _ = _against_and_call(dist, x, y)
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    dist.compiled = True
    (d, g), _ = _against_and_call(dist, x, y)
    # the 64 px images are resized to 256 inside the graph, as matrix products (bench.metrics.resize)
    assert "distance from 64x64" in dist.__dict__["_compiled_graphs"] and dist.compiled
    torch.testing.assert_close(d, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g, ref_grad, rtol=1e-5, atol=1e-8)

    def broken(gm, example_inputs):
        raise RuntimeError("no Triton here")

    torch._dynamo.reset()
    broken_dist = LPIPSDistance(alex_metric.module, "alex")
    broken_dist.compiled = True
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": broken})
    with pytest.warns(UserWarning, match="torch.compile failed, the perceptual network runs eager"):
        (d, _), _ = _against_and_call(broken_dist, x, y)
    assert not broken_dist.compiled and "no Triton here" in broken_dist.compile_failure
    assert torch.equal(d, ref)


def test_the_fast_path_lays_out_lpips_weights_channels_last(torch_home):
    from bench.accel import Accel

    home, _ = torch_home
    dist = LPIPSDistance(LPIPSMetric("alex", home / "hub" / "checkpoints" / BACKBONE_FILES["alex"]).module, "alex")
    conv = next(m for m in dist.module.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    Accel("fp32", channels_last=True).prepare(torch.nn.Identity(), dist)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
