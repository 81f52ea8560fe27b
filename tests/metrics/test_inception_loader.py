"""The FID Inception-v3 loader: where it looks, strict loading, and parity with pytorch-fid on random weights.

The real weights are a download that is not available here, so the loader is NOT verified against them:
only its architecture and loading are checked against pytorch-fid's own module (skipped without pytorch-fid).
"""

import pytest
import torch

from bench.metrics import inception


def _random_state(seed=0):
    torch.manual_seed(seed)
    model = inception.FIDInception()
    state = {}
    for k, v in model.net.state_dict().items():
        if v.is_floating_point():
            v = torch.randn_like(v) * 0.1 if "running_var" not in k else torch.rand_like(v) + 0.5
        state[k] = v
    return state


def test_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    net, reason = inception.load_fid_inception("cpu")
    assert net is None and inception.INCEPTION_FILES[0] in reason and str(tmp_path) in reason


def test_found_in_the_hub_cache_and_loaded_strictly(tmp_path, monkeypatch):
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    state = _random_state()
    torch.save(state, ckpt / inception.INCEPTION_FILES[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    net, reason = inception.load_fid_inception("cpu")
    assert reason == "" and net.name == "inception-v3" and net.dim == 2048
    assert net.features(torch.zeros(2, 3, 64, 64)).shape == (2, 2048)
    bad = dict(state)
    bad.pop("Mixed_7c.branch_pool.conv.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="(?s)bad.pth.*Mixed_7c.branch_pool"):
        inception.load_inception_file(tmp_path / "bad.pth")


def test_matches_pytorch_fid_on_random_weights(monkeypatch):
    pfid = pytest.importorskip("pytorch_fid.inception")
    state = _random_state(1)
    monkeypatch.setattr(pfid, "load_state_dict_from_url", lambda *a, **k: state)
    reference = pfid.InceptionV3([3]).eval()
    ours = inception.FIDInception()
    ours.net.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = reference((x + 1) / 2)[0].flatten(1)  # pytorch-fid takes [0, 1]
        got = ours(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
