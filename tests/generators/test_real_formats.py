"""Real checkpoint formats against the official implementations' own outputs (recorded in the fixtures).

The fixtures in ``fixtures/`` were built with the official code by ``scripts/make_generator_fixtures.py``
(random weights, float32); each ``NAME.expected.safetensors`` holds the official outputs for fixed codes and
the constant noise. These tests need only the project.
"""

from __future__ import annotations

import collections
import json
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bench.generators.checkpoints import CheckpointError, load_generator
from bench.generators.verify import measure

FIXTURES = Path(__file__).parent / "fixtures"
TOL_IMAGE = 1e-4  # issue #14: images within 1e-4 max abs in float32
TOL_MAPPING = 1e-5
CHECKPOINTS = sorted(p for p in FIXTURES.iterdir() if not p.name.endswith(".safetensors"))


def expected(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The official outputs recorded beside ``path`` and their metadata."""
    exp = path.with_name(path.stem + ".expected.safetensors")
    with safe_open(str(exp), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, {k: json.loads(v) for k, v in fh.metadata().items()}


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.name for p in CHECKPOINTS])
def test_matches_official_outputs(path):
    t, meta = expected(path)
    gen = load_generator(path)
    d = measure(gen, t, meta["split_res"])
    assert d["mapping"] < TOL_MAPPING and d["w_trunc"] < TOL_MAPPING, d
    for key in ("img_z", "img_ws", "img_trunc", "img_split", "features"):
        assert d[key] < TOL_IMAGE, (key, d)
    assert d["max_abs_image"] > 0.3  # the comparison is not between near-zero images
    assert torch.allclose(gen.w_avg, t["w_avg"].reshape(-1)[: gen.w_dim])
    assert gen.family in ("stylegan2", "stylegan1") and str(gen.resolution) in gen.description


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.name for p in CHECKPOINTS])
def test_constant_noise_and_batch_independence(path):
    gen = load_generator(path)
    t, _ = expected(path)
    ws = t["ws"]
    with torch.no_grad():
        a, b = gen.synthesis(ws), gen.synthesis(ws)
        single = torch.cat([gen.synthesis(ws[i : i + 1]) for i in range(ws.shape[0])])
    assert torch.equal(a, b)
    assert (a - single).abs().max() < TOL_IMAGE


def test_conv_clamp_is_applied():
    """The 0.5 clamp of this fixture changes the image: without it the official output is not reproduced."""
    path = FIXTURES / "nvidia_map2_zdim_clamp05_p2.pkl"
    gen = load_generator(path)
    t, _ = expected(path)
    assert gen.config.conv_clamp == 0.5 and gen.z_dim == 48 and gen.w_dim == 32
    for m in gen.modules():
        if hasattr(m, "clamp"):
            m.clamp = None
    with torch.no_grad():
        assert (gen.synthesis(t["ws"]) - t["img_ws"]).abs().max() > 1e-2


def test_fp16_resolutions_reported():
    gen = load_generator(FIXTURES / "nvidia_map8_fp16_clamp.pkl")
    assert "fp16 resolutions in the original: 16, 32" in gen.description
    assert "conv_clamp 256 (applied)" in gen.description


def test_pkl_renamed_pt_gets_pkl_reader(tmp_path):
    renamed = tmp_path / "snapshot.pt"
    renamed.write_bytes((FIXTURES / "nvidia_map8_fp16_clamp.pkl").read_bytes())
    gen = load_generator(renamed)
    assert "NVIDIA StyleGAN2-ADA .pkl" in gen.description


# ------------------------------------------------------------------------------------- hostile pickles
def _fake_persistence(monkeypatch) -> types.FunctionType:
    """A stand-in ``torch_utils.persistence._reconstruct_persistent_obj`` that pickle can name when dumping."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: only its name is written
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return _reconstruct_persistent_obj


class _Persistent:
    def __init__(self, fn, meta):
        self.fn, self.meta = fn, meta

    def __reduce__(self):
        return (self.fn, (self.meta,))


def _repickle(obj, fn):
    """Re-pickle a safely loaded snapshot through the stand-in (PersistentObject -> persistence record)."""
    from bench.generators.safe_unpickle import PersistentObject

    if isinstance(obj, PersistentObject):
        state = {k: _repickle(v, fn) for k, v in obj.state.items()}
        return _Persistent(fn, {"type": "class", "version": 6, "module_src": "", "class_name": obj.class_name,
                                "state": state})
    if isinstance(obj, dict):
        kind = collections.OrderedDict if isinstance(obj, collections.OrderedDict) else dict
        return kind((k, _repickle(v, fn)) for k, v in obj.items())
    return obj


def test_conditional_model_refused(tmp_path, monkeypatch):
    from bench.generators.safe_unpickle import safe_load

    snap = safe_load(FIXTURES / "nvidia_map2_zdim_clamp05_p2.pkl")
    snap["G_ema"].state["c_dim"] = 10
    fn = _fake_persistence(monkeypatch)
    (tmp_path / "cond.pkl").write_bytes(pickle.dumps(_repickle(snap, fn)))
    with pytest.raises(CheckpointError, match=r"cond\.pkl: NVIDIA StyleGAN2-ADA \.pkl: conditional"):
        load_generator(tmp_path / "cond.pkl")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pkl", ".pt", ".pth"])
def test_hostile_pickle_refused_without_running(tmp_path, suffix):
    marker = tmp_path / "ran"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker), "g_ema": _Evil(marker)}))
    with pytest.raises(CheckpointError, match=rf"evil\{suffix}: NVIDIA .pkl refers to (posix|os)\.system"):
        load_generator(path)
    assert not marker.exists()


def test_hostile_persistent_state_refused(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    fn = _fake_persistence(monkeypatch)
    meta = {"type": "class", "version": 6, "module_src": "import os", "class_name": "Generator",
            "state": {"_modules": {"mapping": _Evil(marker)}}}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Persistent(fn, meta)}))
    with pytest.raises(CheckpointError, match=r"evil\.pkl.*system"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_truncated_pickle_named(tmp_path):
    data = (FIXTURES / "nvidia_map8_fp16_clamp.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: not a readable NVIDIA \.pkl"):
        load_generator(tmp_path / "cut.pkl")
