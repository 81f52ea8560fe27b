"""make-set and --data take counts literally; options that cannot apply are refused (issue #18)."""

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import RunConfig, resolve
from bench.dataspec import DataOptionError, check_data_options, stated_count
from bench.makeset import count_origin


@pytest.mark.parametrize(("spec", "expected"), [
    ("procfaces:100", (True, 100)), ("synthetic:8", (True, 8)), ("folder:/d:50", (True, 50)),
    ("celebahq:/d,split=test.txt:20", (True, 20)), ("set:/sets/rot20", (True, None)),
    ("folder:/d", (False, None)), (None, (False, None)), ("lsun:/db", (False, None)),
])
def test_stated_count(spec, expected):
    assert stated_count(spec) == expected


@pytest.mark.parametrize(("data", "n", "expected"), [
    ("procfaces:100", None, 100),  # the spec's count, not the quick profile's 8
    ("procfaces:100", 5, 5),  # --n literally
    ("folder:/d:50", None, 50),
    ("folder:/d", None, 8),  # no count anywhere: the profile's default
    (None, None, 8),
    ("set:/s", None, None),  # a made set is run whole
])
def test_resolve_takes_counts_literally(data, n, expected):
    assert resolve(RunConfig(data=data, n=n, profile="quick"), device_type="cpu").n == expected


@pytest.mark.parametrize(("options", "named"), [
    ({"transforms": ("rotate:10",)}, "--transform"),
    ({"protocol": "bdinvert-table1"}, "--protocol"),
    ({"fill": "zeros"}, "--fill"),
    ({"transforms": ("rotate:10",), "fill": "zeros"}, "--transform/--fill"),
])
def test_options_that_cannot_apply_to_a_made_set_are_refused(options, named):
    config = RunConfig(data="set:/sets/rot20", **options)
    with pytest.raises(DataOptionError, match=f"^{named} cannot apply to --data set:/sets/rot20: a made set"):
        check_data_options(config, RunConfig())
    with pytest.raises(ValueError, match="cannot apply"):
        resolve(config, device_type="cpu")
    check_data_options(RunConfig(data="procfaces:4", **options), RunConfig())  # fine elsewhere


def test_run_refuses_a_transform_on_a_made_set():
    result = CliRunner().invoke(main, ["run", "--data", "set:/nowhere", "--transform", "rotate:10", "--dry-run",
                                       "--device", "cpu"])
    assert result.exit_code == 1 and "--transform cannot apply to --data set:/nowhere" in result.output


def test_count_origin_says_why():
    assert count_origin(RunConfig(n=3)) == "--n 3"
    assert count_origin(RunConfig(data="procfaces:100")) == "--data procfaces:100"
    assert count_origin(RunConfig(data="folder:/d")) == "every readable image of --data folder:/d"
    assert "default 8 held-out faces; pass --n N or --data procfaces:N" in count_origin(RunConfig())


def test_make_set_writes_the_count_the_spec_names(tmp_path):
    out = tmp_path / "set"
    result = CliRunner().invoke(main, ["make-set", str(out), "--data", "procfaces:10", "--transform", "rotate:10",
                                       "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "items: 10 (--data procfaces:10)" in result.output
    assert "writing 10 items x 2 transforms = 20 images" in result.output
    assert "wrote 20 images" in result.output
    stored = pd.read_csv(out / "transforms.csv")
    assert len(stored) == 20 and set(stored["label"]) == {"identity", "rotate:10"}


def test_make_set_refuses_to_write_nothing(tmp_path):
    result = CliRunner().invoke(main, ["make-set", str(tmp_path / "s"), "--data", "procfaces:2", "--no-identity",
                                       "--device", "cpu"])
    assert result.exit_code == 1 and "no transform to apply" in result.output
