"""Start-up: ``bench --help``, ``bench ls`` and option errors import neither torch nor the models.

The light paths read ``bench.registry_snapshot`` (methods, aliases, metrics) and probe metric files without
torch; the tests below check that the snapshot equals the live registries and that the probes give the same
availability as building the metrics, so the fast answers cannot drift from the real ones.
"""

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "kornia", "lpips", "pandas", "matplotlib", "methods", "transforms")
TORCH = ("torch", "kornia", "lpips", "torchvision")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _invoke_fresh(args: list[str]) -> tuple[int, str, set[str]]:
    """Run ``bench ARGS`` through click in a fresh interpreter: exit code, output, modules loaded."""
    code = ("import sys\nfrom click.testing import CliRunner\nfrom bench.cli import main\n"
            f"r = CliRunner().invoke(main, {args!r})\n"
            "print(r.exit_code); print(' '.join(sorted(sys.modules))); print(r.output)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    code_line, modules, output = out.split("\n", 2)
    return int(code_line), output, set(modules.split())


def test_importing_the_cli_loads_no_heavy_module():
    loaded = _loaded_after("import bench.cli")
    assert not [m for m in HEAVY if m in loaded]


def test_importing_bench_loads_no_heavy_module():
    loaded = _loaded_after("import bench; bench.RunConfig(); bench.default_generator; bench.run")
    assert not [m for m in HEAVY if m in loaded]


def test_importing_the_leaf_packages_loads_no_torch():
    loaded = _loaded_after("import methods, transforms; transforms.GRAMMAR; transforms.parse_transforms('rotate:5')")
    assert not [m for m in TORCH if m in loaded]


def test_lazy_package_names_are_the_real_ones():
    import methods
    import methods.base
    import transforms
    import transforms.geometric

    assert methods.build_method is methods.base.build_method
    assert transforms.apply_transform is transforms.geometric.apply_transform
    assert set(methods.__all__) <= set(dir(methods)) and set(transforms.__all__) <= set(dir(transforms))
    with pytest.raises(AttributeError):
        transforms.nosuch  # noqa: B018


def test_help_and_option_errors_answer_without_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom bench.cli import main\n"
            "r = CliRunner()\nassert r.invoke(main, ['--help']).exit_code == 0\n"
            "assert r.invoke(main, ['run', '--bogus']).exit_code == 2\n"
            "assert r.invoke(main, ['ls', 'config']).exit_code == 0\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("what, expect", [("methods", "fwplus16"), ("transforms", "rotate:DEG"),
                                          ("protocols", "bdinvert-table1"), ("metrics", "lpips-alex")])
def test_ls_answers_without_torch(what, expect):
    code, output, loaded = _invoke_fresh(["ls", what])
    assert code == 0 and expect in output
    assert not [m for m in TORCH if m in loaded], f"bench ls {what} imported torch"


@pytest.mark.parametrize("args, message", [
    (["run", "--methods", "im2,w"], "unknown method 'im2'. Did you mean 'im2s'?"),
    (["run", "--methods", "nosuch", "--dry-run"], "unknown method 'nosuch'"),
    (["run", "--transform", "rotate:abc"], "bad transform spec 'rotate:abc'"),
    (["run", "--protocol", "bdinvert-tabel1"], "did you mean 'bdinvert-table1'?"),
    (["run", "--data", "set:somewhere", "--transform", "rotate:5"], "cannot apply to --data set:somewhere"),
    (["make-set", "out", "--transform", "scale:0"], "bad transform spec 'scale:0'"),
    (["speed", "--methods", "fwplus9"], "unknown method 'fwplus9'"),
    (["speed", "--steps", "5"], "expected LO,HI"),
    (["run", "--metric", "psnx"], "unknown metric 'psnx'"),
    (["run", "--methods", "im2s", "--param", "im2s.lr=abc"], "parameter lr='abc' must be a finite number"),
    (["run", "--methods", "im2s", "--param", "im2s.stepz=3"], "Did you mean 'steps'?"),
    (["run", "--methods", "w", "--param", "fwplus.lr=1"], "not among this run's methods"),
])
def test_option_errors_answer_without_torch(args, message):
    code, output, loaded = _invoke_fresh(args)
    assert code == 1 and message in output
    assert not [m for m in TORCH if m in loaded], f"bench {' '.join(args)} imported torch"


def test_registry_snapshot_equals_the_live_registries():
    from bench import registry_snapshot
    from bench.choices import REFRESH, live_registry, sources_digest

    recorded = {"methods": registry_snapshot.METHODS, "aliases": registry_snapshot.ALIASES,
                "metrics": registry_snapshot.METRICS}
    assert recorded == live_registry(), f"bench/registry_snapshot.py is stale: run {REFRESH}"
    assert registry_snapshot.SOURCES == sources_digest(), f"bench/registry_snapshot.py is stale: run {REFRESH}"


def test_a_stale_snapshot_is_not_trusted(monkeypatch):
    from bench import choices, registry_snapshot

    monkeypatch.setattr(registry_snapshot, "SOURCES", "made from other code")
    monkeypatch.setattr(registry_snapshot, "METHODS", {"im2s": registry_snapshot.METHODS["im2s"]})
    with pytest.warns(choices.StaleSnapshotWarning, match="refresh it with"):
        assert choices.snapshot() == choices.live_registry()
    with pytest.warns(choices.StaleSnapshotWarning):
        assert choices.expand_method_names("w,im2s") == ["w", "im2s"]  # known to the live registry only


def test_the_digest_changes_with_any_source_file(tmp_path):
    from bench.choices import sources_digest

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "a.py").write_text("x = 1\n")
    first = sources_digest(tmp_path)
    (tmp_path / "methods" / "a.py").write_text("x = 2\n")
    second = sources_digest(tmp_path)
    (tmp_path / "methods" / "b.py").write_text("")
    assert len({first, second, sources_digest(tmp_path)}) == 3


@pytest.mark.parametrize("names", ["nosuch", "im2", "fwplus", "fwplus,fwplus8,w", " w , im2s ", ",", "idinvert,psp"])
def test_fast_method_names_match_the_registry(names):
    from bench import choices
    from methods import expand_method_names

    try:
        expected = expand_method_names(names)
    except ValueError as err:
        with pytest.raises(ValueError) as got:
            choices.expand_method_names(names)
        assert str(got.value) == str(err)
    else:
        assert choices.expand_method_names(names) == expected


@pytest.mark.parametrize("torch_home", ["default", "empty"])
def test_metric_availability_without_torch_matches_building_them(torch_home, tmp_path, monkeypatch):
    from bench.choices import snapshot
    from bench.listing import metric_availability, torch_hub_dir
    from bench.metrics import build_metrics

    if torch_home == "empty":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch

    assert torch_hub_dir() == Path(torch.hub.get_dir())
    for name in snapshot()["metrics"]:
        built = build_metrics([name], device="cpu")[0]
        assert metric_availability(name) == (built.available, built.reason or ""), name


@pytest.mark.parametrize("names", [["nosuch"], ["psnx"], ["psnr@valid"], ["psnr", "ssim", "psnr"], ["mse", "psnr"]])
def test_fast_metric_names_match_the_registry(names):
    from bench import choices
    from bench.metrics.base import _REGISTRY, _unknown_name_error

    # the checks build_metrics makes before it builds anything, without building
    unknown = [n for n in names if n not in _REGISTRY]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown:
        expected = str(_unknown_name_error(unknown[0]))
    elif repeated:
        expected = f"metric names repeated: {', '.join(repeated)}"
    else:
        choices.check_metric_names(names)
        return
    with pytest.raises(ValueError) as got:
        choices.check_metric_names(names)
    assert str(got.value) == expected


@pytest.mark.parametrize("params", [
    {"im2s": {"lr": "abc"}}, {"im2s": {"stepz": 3}}, {"w": {"lr": 0}}, {"fwplus": {"betas": [0.9, 1.0]}},
    {"fwplus16": {"steps": 2.5}}, {"psp": {"steps": 1}}, {"im2s": {"lr": 0.02}}, {"fwplus": {"lr": 0.02}},
])
def test_fast_param_checks_match_the_real_ones(params):
    """The snapshot's --param checks give the same answer and message as bench.prepare.method_params."""
    from bench.choices import check_method_params
    from bench.config import RunConfig
    from bench.prepare import method_params

    methods = "im2s,w,fwplus"
    try:
        method_params(RunConfig(methods=methods, method_params=params))
        expected = None
    except ValueError as err:
        expected = str(err)
    try:
        check_method_params(methods, params)
        got = None
    except ValueError as err:
        got = str(err)
    assert got == expected
