"""Every user error of `bench run` / `bench report` / `bench check` is one line naming the option or file.

``catch_exceptions=False``: a traceback (any exception other than click's own) fails the test.
"""

import errno

import pandas as pd
import pytest
from click.testing import CliRunner

import bench.prepare
import bench.results
from bench.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def options(gen, run_dir, *extra):
    return ["run", "--generator", gen, "--data", "synthetic:2", "--n", "2", "--steps", "1", "--perceptual", "none",
            "--device", "cpu", "--batch-size", "2", "--run-dir", run_dir, "--quiet", *extra]


def one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("param", "fragments"), [
    ("nosuch.x=1", ["--param nosuch.x", "unknown method 'nosuch'"]),
    ("im2s.nosuch=1", ["method 'im2s' has no parameter 'nosuch'"]),
    ("im2s.stpes=5", ["Did you mean 'steps'"]),
    ("im2s.lr=abc", ["lr='abc' must be a finite number"]),
    ("im2s.steps=-5", ["steps=-5 must not be negative"]),
    ("im2s.steps=2.5", ["must be a whole number"]),
    ("im2s.lr=0", ["must be positive"]),
    ("psp.lr=0.1", ["--param psp.lr", "not among this run's methods (im2s)"]),
])
def test_bad_params_are_refused_before_any_model_loads(tiny_generator_path, tmp_path, monkeypatch, param,
                                                       fragments):
    def no_loading(*a, **k):
        raise AssertionError("the generator was loaded before --param was checked")

    monkeypatch.setattr(bench.prepare, "load_generator_file", no_loading)
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r", "--param", param)), *fragments)
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r", "--param", param, "--dry-run")), *fragments)
    assert not (tmp_path / "r").exists()


def test_an_alias_param_reaches_both_presets(tiny_generator_path, tmp_path):
    from bench.config import RunConfig

    config = RunConfig(methods="fwplus", method_params={"fwplus": {"lr": 0.5}, "fwplus8": {"lr": 0.2}})
    assert bench.prepare.method_params(config) == {"fwplus8": {"lr": 0.2}, "fwplus16": {"lr": 0.5}}


def test_a_binary_config_file_is_named(tiny_generator_path, tmp_path):
    (tmp_path / "run.toml").write_bytes(bytes(range(256)) * 4)
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r", "--config", tmp_path / "run.toml")),
                   str(tmp_path / "run.toml"), "not a text file")


@pytest.mark.parametrize("content", [b"not safetensors at all", b""])
def test_a_bad_pnorm_stats_file_is_named(tiny_generator_path, tmp_path, content):
    (tmp_path / "stats.safetensors").write_bytes(content)
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r", "--methods", "pnorm", "--pnorm-stats",
                                   tmp_path / "stats.safetensors")),
                   f"--pnorm-stats {tmp_path / 'stats.safetensors'}", "not a P-norm+ statistics file")


def test_an_encoder_for_another_resolution_is_named(tiny_generator_path, tmp_path):
    from bench.world import zoo

    path = zoo.asset_path("fwplus16_encoder")  # trained for the 64 px world, not the 32 px test generator
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r", "--methods", "fwplus16", "--encoder",
                                   f"fwplus16={path}")), f"--encoder fwplus16={path}", "does not fit")


def test_a_full_disk_while_saving_latents_is_a_message(tiny_generator_path, tmp_path, monkeypatch):
    real = bench.results.atomic_write_bytes

    def full(path, data, **kw):
        if "latents" in str(path):
            with bench.results.writing(path):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(bench.results, "atomic_write_bytes", full)
    one_line_error(invoke(*options(tiny_generator_path, tmp_path / "r")), "no space left", "latents",
                   "re-run the same command")
    monkeypatch.undo()
    assert invoke(*options(tiny_generator_path, tmp_path / "r")).exit_code == 0


def test_report_and_check_on_a_torn_or_doubled_results_file(tiny_generator_path, tmp_path):
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[2] / "benchmarks" / "ci" / "baseline.json"
    run_dir = tmp_path / "r"
    assert invoke(*options(tiny_generator_path, run_dir)).exit_code == 0
    path = run_dir / "results.csv"
    whole = path.read_text()
    path.write_text(whole[:-7])  # torn by a kill: `bench report` repairs it from the journal
    assert invoke("report", run_dir, "--no-html").exit_code == 0 and path.read_text() == whole
    # a results file with every row twice (as two writers without the lock made it), and no journal
    import shutil

    shutil.rmtree(run_dir / "journal")
    lines = whole.splitlines(keepends=True)
    path.write_text(lines[0] + "".join(lines[1:]) + "".join(lines[1:]))
    one_line_error(invoke("report", run_dir, "--no-html"), "rows appear twice", "refuses to count them twice")
    one_line_error(invoke("check", run_dir, "--baseline", baseline), "rows appear twice")
    assert len(pd.read_csv(path)) == 2 * (len(lines) - 1)
