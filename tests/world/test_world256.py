"""The 256 px world: the 64 px world generator, frozen, plus detail blocks (bench.world.world256)."""

import pytest
import torch
import torch.nn.functional as F

from bench.world import world256
from bench.world.defaults import default_generator


@pytest.fixture(scope="module")
def base():
    return default_generator()


def _ws(g, n=2, seed=0):
    z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed))
    return g.mapping(z)[:, None].repeat(1, g.num_ws, 1)


def test_untrained_composition_is_the_upsampled_base_image(base):
    g = world256.compose(base)
    assert g.resolution == 256 and g.config.channels[4] == base.config.channels[4]
    ws = _ws(g)
    with torch.no_grad():
        hi, lo = g.synthesis(ws), base.synthesis(ws[:, : base.num_ws])
    # zero-initialised RGB outputs of the new blocks: the image is the base image through the skip path's
    # two upsampling filters, exactly
    assert torch.equal(hi, g.to_rgbs[5].upsample(g.to_rgbs[4].upsample(lo)))
    assert (F.avg_pool2d(hi, 4) - lo).abs().mean() < 0.05  # that filter blurs; the 4x4 mean stays close
    assert torch.equal(g.state_dict()["convs.0.conv.weight"], base.state_dict()["convs.0.conv.weight"])


def test_detail_keys_are_the_new_blocks_only(base):
    g = world256.compose(base)
    keys = world256.detail_keys(g.state_dict(), base)
    assert keys and all(k.startswith(("convs.8.", "convs.9.", "convs.10.", "convs.11.", "to_rgbs.4.", "to_rgbs.5."))
                        for k in keys)
    with pytest.raises(ValueError, match="detail weights lack"):
        world256.compose(base, {keys[0]: g.state_dict()[keys[0]]})


def test_base_code_at_4x4_reproduces_the_synthesis(base):
    g = world256.compose(base)
    ws = _ws(g, seed=1)
    with torch.no_grad():
        f = g.features(ws, 4)
        assert f.shape == (2, base.config.channels[4], 4, 4) and g.first_ws_index(4) == 1
        assert (g.synthesis_from(f, ws, 4) - g.synthesis(ws)).abs().max() < 1e-5
        # the 4x4 base code varies per image (it is conv1's output, not the constant input)
        assert (f[0] - f[1]).abs().mean() > 1e-3
    c = base.config.channels[4]
    assert c * 16 / (3 * 256 * 256) < 0.05  # the paper's 16x16-at-1024 proportion: 4.2 %; here 2.1 %


def test_load_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(world256.zoo, "asset_path", lambda name: None)
    with pytest.raises(ValueError, match="generator256_sr"):
        world256.load()


def test_load_refuses_detail_trained_on_another_base(tmp_path, base, monkeypatch):
    g = world256.compose(base)
    monkeypatch.setattr(world256.zoo, "asset_path", lambda name: None)  # save() records no base digest
    path = world256.save(g, base, tmp_path, {})
    monkeypatch.setattr(world256.zoo, "asset_path",
                        lambda name: path if name == world256.ASSET else _base_path())
    with pytest.raises(ValueError, match="retrain the detail blocks"):
        world256.load()


def _base_path():
    from bench.world import zoo

    return zoo.ASSET_DIR / zoo.manifest()["assets"]["generator"]["file"]
