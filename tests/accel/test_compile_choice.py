"""``--compile auto`` (the default): which methods a run compiles, what it records, and the eager fallback.

The choice is per method, from the run's size (``bench.accel.compile_pays``), made before the method's batch
probe; a compilation that fails (no Triton, no C compiler) must not end the run: the generator runs eager and
the method's settings say so. On the CPU the compiled path runs with the ``aot_eager`` backend.
"""

import json
import types

import pytest
import torch

from bench import compiling
from bench.accel import COMPILE_MIN_PIXEL_STEPS, Accel, compile_pays
from bench.config import RunConfig, make_config
from bench.runner import choose_compile, compile_failed, run

CUDA = torch.device("cuda")  # a device object only: nothing runs on it here


def test_compile_pays_from_the_run_size_on_cuda_only():
    # the 256 px protocol: W's 550 units x 1000 steps (3.6e10 pixel-steps) compile, IDinvert's x 100 do not
    assert compile_pays(CUDA, 550, 1000, 256)
    assert not compile_pays(CUDA, 550, 100, 256)
    assert not compile_pays(torch.device("cpu"), 550, 5000, 1024)
    assert not compile_pays(CUDA, 550, 0, 1024)  # a feed-forward method has nothing to compile
    # the threshold, exactly: 2e10 pixel-steps is 19,073 image-steps at 1024 px
    assert COMPILE_MIN_PIXEL_STEPS == 2e10
    assert compile_pays(CUDA, 1, 19_074, 1024) and not compile_pays(CUDA, 1, 19_073, 1024)


class _Generator(compiling.Compilable):
    resolution = 256


def _prep(compile_option, **accels):
    return types.SimpleNamespace(config=RunConfig(compile=compile_option), device=CUDA, generator=_Generator(),
                                 perceptual=None, accels=dict(accels))


def _method(steps):
    return types.SimpleNamespace(params=types.SimpleNamespace(steps=steps))


def test_auto_compiles_the_long_methods_and_records_it():
    base = Accel("bf16", channels_last=True)
    prep, said = _prep("auto", w=base, idinvert=base), []
    choose_compile(prep, "w", _method(1000), 550, said.append)
    assert prep.generator.compiled and prep.accels["w"].label == "bf16, channels-last, compiled"
    choose_compile(prep, "idinvert", _method(100), 550, said.append)
    assert not prep.generator.compiled and prep.accels["idinvert"].label == "bf16, channels-last"
    assert len(said) == 1 and said[0].startswith("w: compiled (--compile auto: 550 images x 1000 steps")


@pytest.mark.parametrize("option", [True, False])
def test_an_explicit_choice_is_kept_whatever_the_size(option):
    prep = _prep(option, w=Accel("bf16", True, option))
    choose_compile(prep, "w", _method(5 if option else 10_000), 550 if option else 5000, lambda m: None)
    assert prep.generator.compiled is option and prep.accels["w"].compile is option


def test_no_second_attempt_after_a_failed_compilation():
    prep = _prep("auto", w=Accel("bf16", True))
    prep.generator.compile_failure = "BackendCompilerFailed: no Triton"
    choose_compile(prep, "w", _method(1000), 550, lambda m: None)
    assert not prep.generator.compiled and not prep.accels["w"].compile


def test_the_perceptual_distance_compiles_with_the_generator_and_its_failure_counts():
    prep = _prep("auto", w=Accel("bf16", True), idinvert=Accel("bf16", True))
    prep.perceptual = _Generator()  # any Compilable distance
    choose_compile(prep, "w", _method(1000), 550, lambda m: None)
    assert prep.generator.compiled and prep.perceptual.compiled
    prep.perceptual.compile_failure, said = "BackendCompilerFailed: no Triton", []
    assert compile_failed(prep, "w", said.append)
    assert not prep.generator.compiled and not prep.perceptual.compiled and not prep.accels["w"].compile
    assert said == ["w: runs eager, torch.compile failed: BackendCompilerFailed: no Triton"]
    choose_compile(prep, "idinvert", _method(10_000), 550, lambda m: None)  # no second attempt
    assert not prep.generator.compiled and not prep.accels["idinvert"].compile


def test_compile_is_auto_by_default_and_checked_in_config_files(tmp_path):
    assert RunConfig().compile == "auto" and make_config({"compile": None}).compile == "auto"
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"compile": "sometimes"}))
    with pytest.raises(ValueError, match="compile must be true, false or 'auto'"):
        make_config({}, bad)


def _broken_backend(gm, example_inputs):
    raise RuntimeError("no Triton on this machine")


def _cfg(gen, run_dir, **kw):
    return RunConfig(**({"methods": "im2s", "transforms": ("rotate:20",), "generator": str(gen),
                         "data": "synthetic:2", "n": 2, "steps": 3, "perceptual": "none", "device": "cpu",
                         "batch_size": 2, "max_samples": 0, "save_latents": False, "run_dir": str(run_dir)} | kw))


def _settings(run_dir):
    return json.loads((run_dir / "config.json").read_text())["method_settings"]["im2s"]["precision"]


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_a_failed_compilation_falls_back_to_eager_and_says_so(tiny_generator_path, tmp_path, monkeypatch):
    import pandas as pd

    ref_dir, run_dir, said = tmp_path / "eager", tmp_path / "fallback", []
    run(_cfg(tiny_generator_path, ref_dir, compile=False), progress=False, log=lambda m: None)
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": _broken_backend})
    with pytest.warns(UserWarning, match="torch.compile failed, the generator runs eager"):
        run(_cfg(tiny_generator_path, run_dir, compile=True), progress=False, log=said.append)
    assert any("im2s: runs eager, torch.compile failed" in m and "no Triton" in m for m in said), said
    assert _settings(run_dir) == "fp32"  # not "compiled": it did not run compiled
    ref, out = (pd.read_csv(d / "results.csv").sort_values(["item", "transform", "metric"]) for d in (ref_dir, run_dir))
    assert out["value"].tolist() == ref["value"].tolist()  # the eager run's values, exactly


def test_a_compiled_run_records_it_and_resumes_eager(tiny_generator_path, tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    run_dir = tmp_path / "run"
    run(_cfg(tiny_generator_path, run_dir, compile=True), progress=False, log=lambda m: None)
    assert _settings(run_dir) == "fp32, compiled"
    # compiling changes how fast, not what: a resume with another choice is no different configuration
    run(_cfg(tiny_generator_path, run_dir, compile=False), progress=False, log=lambda m: None)
    assert _settings(run_dir) == "fp32"


def test_a_compiled_run_compiles_the_perceptual_distance_too(tiny_generator_path, tmp_path, monkeypatch):
    """Through the runner: with --compile the world's perceptual distance runs its step through a graph too."""
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    keys = []
    real = compiling.Compilable.run_compiled

    def record(self, key, fn, *args, **kwargs):
        if self.compiled and torch.is_grad_enabled():
            keys.append((type(self).__name__, key))
        return real(self, key, fn, *args, **kwargs)

    monkeypatch.setattr(compiling.Compilable, "run_compiled", record)
    run(_cfg(tiny_generator_path, tmp_path / "run", compile=True, perceptual="world"), progress=False,
        log=lambda m: None)
    # the tiny generator's 32 px images are resized to the net's 64 px inside the distance's graph
    assert ("StyleGAN2Generator", "blocks") in keys and ("WorldPerceptual", "distance from 32x32") in keys, set(keys)
    assert _settings(tmp_path / "run") == "fp32, compiled"


def test_a_compilation_that_fails_inside_a_batch_reruns_it_eager(tiny_generator):
    """The backward graph compiles at the first backward pass, inside the method: the batch runs again eager."""
    from torch._dynamo.exc import BackendCompilerFailed

    from bench.batch import invert_adaptive
    from methods.base import Inversion

    class CompilesBadly:
        name, calls = "im2s", []

        def invert(self, targets, generator, seeds, perceptual):
            self.calls.append(generator.compiled)
            if generator.compiled:
                raise BackendCompilerFailed(_broken_backend, RuntimeError("no C compiler"), None)
            n = targets.shape[0]
            return Inversion("im2s", {"wp": torch.zeros(n, 1)}, targets, torch.zeros(n), (None,) * n, {})

    tiny_generator.compiled = True
    prep = types.SimpleNamespace(batch_sizes={}, accels={"im2s": Accel()}, device=torch.device("cpu"),
                                 generator=tiny_generator, perceptual="none")
    method = CompilesBadly()
    try:
        with pytest.warns(UserWarning, match="no C compiler"):
            out = invert_adaptive(method, torch.zeros(3, 3, 8, 8), prep, [0, 1, 2])
    finally:
        compiled, why = tiny_generator.compiled, tiny_generator.__dict__.pop("compile_failure", None)
        tiny_generator.compiled = False
    assert method.calls == [True, False] and not compiled and "no C compiler" in why
    assert out[0].images.shape[0] == 3


def test_a_generator_that_cannot_compile_is_recorded_as_eager():
    prep = _prep(True, w=Accel("bf16", True, True))
    prep.generator = types.SimpleNamespace(resolution=256)  # as the StyleGAN v1 generator: no compiled path
    choose_compile(prep, "w", _method(1000), 550, lambda m: None)
    assert not prep.accels["w"].compile


def test_inductor_without_a_cxx_compiler_falls_back_to_eager():
    """The real failure of a machine without a C++ compiler (Inductor's CPU code generation), not a stand-in."""
    import torch._inductor.config as inductor_config

    from bench.speed import build_timing_setup

    torch._dynamo.reset()
    gen, _, _ = build_timing_setup("tiny", torch.device("cpu"))
    ws = gen.w_avg[None, None].repeat(2, gen.num_ws, 1).requires_grad_(True)
    ref = gen.synthesis(ws).detach()
    Accel(compile=True).prepare(gen)
    # the config's own patch: monkeypatch's undo deletes a config entry it did not see in the module's
    # __dict__, which hides it from every later compilation in the process
    patched = inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",)})
    try:
        with patched, pytest.warns(UserWarning, match="InvalidCxxCompiler"):
            img = gen.synthesis(ws)
        assert not gen.compiled and gen.compile_failure.startswith("InvalidCxxCompiler")
    finally:
        Accel().prepare(gen)
        torch._dynamo.reset()
    assert torch.equal(img.detach(), ref)


def test_compiling_keeps_inductors_convolutions_channels_last(monkeypatch):
    """The first compilation sets Inductor's forced layout optimisation (compiling.INDUCTOR_CONFIG): with a
    dynamic batch its heuristic turns it off, and cuDNN converted every backward convolution to NHWC and back."""
    from torch._inductor import config as inductor

    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    net = compiling.Compilable()
    net.compiled = True
    x = torch.ones(2, 3, requires_grad=True)
    with inductor.patch(force_layout_optimization=False):  # not monkeypatch: see the test above
        assert net.run_compiled("double", lambda t: t * 2, x).sum().item() == 12.0
        assert inductor.force_layout_optimization is True
