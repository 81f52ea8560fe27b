"""`--precision auto`: each method at the fastest precision at which it held the GPU parity test (CPU tests).

The policy lives on the presets (``gpu_precisions``) and is applied by ``bench.accel.resolve_accel``; the GPU
parity test (``test_parity.py``) expects to pass exactly where the policy would run a method, so the two
cannot drift apart.
"""

import dataclasses

import pytest
import torch

from bench.accel import Accel, describe_accels, resolve_accel
from methods import get_preset, list_presets
from methods.base import Preset, register_preset
from methods.wplus import WPlusOptimization

CUDA = torch.device("cuda")  # a device object only: nothing runs on it here
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", ["im2s", "pnorm", "fwplus8", "fwplus16", "idinvert", "w"])
def test_auto_runs_methods_that_held_parity_in_bf16_on_cuda(name):
    assert resolve_accel("auto", CUDA, tested=get_preset(name).gpu_precisions) == Accel("bf16", channels_last=True)


@pytest.mark.parametrize("name", ["psp"])
def test_auto_keeps_float32_where_no_reduced_precision_held(name):
    """pSp (one encoder pass) was never tested at a reduced precision: it stays float32."""
    assert get_preset(name).gpu_precisions == ()
    assert resolve_accel("auto", CUDA, tested=get_preset(name).gpu_precisions) == Accel("fp32", channels_last=True)


def test_auto_is_float32_on_the_cpu_and_a_named_precision_is_kept():
    assert resolve_accel("auto", CPU, tested=("tf32", "bf16")) == Accel("fp32")
    assert resolve_accel("tf32", CUDA, tested=()).precision == "tf32"  # the user's explicit choice stands
    assert resolve_accel("auto", CUDA, compile=True, tested=("tf32",)) == Accel("tf32", True, True)
    assert resolve_accel("auto", CUDA, tested=("bf16", "tf32")).precision == "bf16"  # the fastest, in any order
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_accel("bf16", CPU)


def test_every_preset_names_only_reduced_precisions():
    for preset in list_presets():
        assert set(preset.gpu_precisions) <= {"tf32", "bf16"}, preset.name
    bad = Preset("bad-precision-test", WPlusOptimization, {}, "W+", "test", gpu_precisions=("fp16",))
    with pytest.raises(ValueError, match="gpu_precisions"):
        register_preset(bad)
    assert "bad-precision-test" not in {p.name for p in list_presets()}


def test_describe_accels_names_each_method_only_where_they_differ():
    bf16, fp32 = Accel("bf16", True), Accel("fp32", True)
    assert describe_accels({"im2s": bf16, "fwplus16": bf16}) == "bf16, channels-last"
    assert describe_accels({"im2s": bf16, "w": fp32}) == "im2s: bf16, channels-last; w: fp32, channels-last"
    assert dataclasses.replace(bf16, compile=True).label == "bf16, channels-last, compiled"


def test_the_label_names_the_fused_layers_where_they_run(monkeypatch):
    from bench.generators import fused_styled

    monkeypatch.setattr(fused_styled, "ENABLED", True)
    assert Accel("bf16", True).label == "bf16, channels-last, fused styled convolutions (BENCH_FUSED_STYLED=1)"
    assert Accel("tf32", True).label == "tf32, channels-last"  # the kernels run under bf16 only


@pytest.mark.gpu
def test_a_run_at_auto_inverts_each_method_at_its_own_precision(tmp_path, monkeypatch):
    """`bench run --precision auto` on CUDA: Im2S under bf16 autocast, a method whose preset lists no reduced
    precision (here W with its record emptied) in float32 with TF32 off, and the run's versions.json says so."""
    import json

    from bench.config import RunConfig
    from bench.runner import run
    from methods import base
    from methods.projector import WProjector

    seen = {}

    def spy(cls):
        original = cls.invert

        def invert(self, *args, **kwargs):
            seen[self.name] = (torch.is_autocast_enabled("cuda"), torch.backends.cudnn.allow_tf32)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "invert", invert)

    spy(WPlusOptimization)
    spy(WProjector)
    monkeypatch.setitem(base._PRESETS, "w", dataclasses.replace(get_preset("w"), gpu_precisions=()))
    out = run(RunConfig(methods="im2s,w", transforms=("rotate:20",), n=2, steps=3, device="cuda", batch_size=2,
                        precision="auto", run_dir=str(tmp_path / "run"), save_latents=False),
              progress=False, log=lambda m: None)
    assert seen == {"im2s": (True, True), "w": (False, False)}
    fast_path = json.loads((out / "versions.json").read_text())["fast_path"]
    assert fast_path == "im2s: bf16, channels-last; w: fp32, channels-last"
