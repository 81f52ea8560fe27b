"""Run configuration: precedence, config files, profiles, validation, and the resume check of a run dir."""

import dataclasses
import json

import pytest

from bench.config import PROFILES, RunConfig, check_types, load_config_file, make_config, method_overrides, resolve
from bench.results import RunStore
from bench.runner import check_names


def write(path, text):
    path.write_text(text)
    return path


# --- defaults < file < CLI ----------------------------------------------------------------------------


def test_defaults_without_file_or_cli():
    assert make_config({}) == RunConfig()
    # click passes None / () for options not given: they must not override anything
    assert make_config({"seed": None, "transforms": (), "metrics": ()}) == RunConfig()


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_file_overrides_defaults_and_cli_overrides_file(tmp_path, suffix):
    if suffix == ".json":
        text = json.dumps({"seed": 4, "batch_size": 2, "transforms": ["rotate:10", "scale:0.75"],
                           "metrics": "psnr", "method_params": {"im2s": {"lr": 0.02}}})
    else:
        text = ('seed = 4\nbatch_size = 2\ntransforms = ["rotate:10", "scale:0.75"]\nmetrics = "psnr"\n'
                "[method_params.im2s]\nlr = 0.02\n")
    path = write(tmp_path / f"c{suffix}", text)
    cfg = make_config({"seed": 11, "steps": None, "transforms": ()}, path)
    assert cfg.seed == 11  # CLI
    assert cfg.batch_size == 2 and cfg.transforms == ("rotate:10", "scale:0.75")  # file, lists -> tuples
    assert cfg.metrics == ("psnr",)  # a single string becomes a 1-tuple
    assert cfg.method_params == {"im2s": {"lr": 0.02}}
    assert cfg.steps is None and cfg.fill == RunConfig().fill  # defaults
    assert make_config({"transforms": ("translate:5",)}, path).transforms == ("translate:5",)  # replaced


def test_cli_false_flag_overrides_file_true(tmp_path):
    path = write(tmp_path / "c.json", '{"include_identity": true}')
    assert make_config({"include_identity": False}, path).include_identity is False
    assert make_config({"include_identity": None}, path).include_identity is True


# --- file errors --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"config file .*nope\.json: no such file"):
        load_config_file(tmp_path / "nope.json")


def test_unknown_keys_are_named_with_the_known_ones(tmp_path):
    path = write(tmp_path / "c.toml", 'methods = "im2s"\nstpes = 3\nbatchsize = 2\n')
    with pytest.raises(ValueError) as err:
        load_config_file(path)
    text = str(err.value)
    assert "c.toml" in text and "['batchsize', 'stpes']" in text and "'steps'" in text


@pytest.mark.parametrize("name, text", [("c.json", '{"seed": 1,'), ("c.toml", "seed = = 1"), ("c.json", "")])
def test_unparseable_files(tmp_path, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(ValueError, match=rf"config file .*{name}: cannot be parsed"):
        load_config_file(path)


@pytest.mark.parametrize("data, key", [
    ({"seed": "1"}, "seed"),
    ({"seed": True}, "seed"),  # a bool is not a seed
    ({"steps": 2.5}, "steps"),
    ({"n": [3]}, "n"),
    ({"include_identity": "false"}, "include_identity"),  # a truthy string must not mean True
    ({"transforms": 20}, "transforms"),
    ({"transforms": ["rotate:20", 5]}, "transforms"),
    ({"generator": 3}, "generator"),
    ({"method_params": {"im2s": 0.1}}, "method_params"),
    ({"method_params": ["im2s"]}, "method_params"),
])
def test_wrong_types_in_file_are_named(tmp_path, data, key):
    path = write(tmp_path / "c.json", json.dumps(data))
    with pytest.raises(ValueError, match=rf"config file .*c\.json: {key} must be"):
        load_config_file(path)


def test_right_types_pass(tmp_path):
    data = {"methods": "im2s,w", "transforms": "rotate:20", "protocol": None, "n": None, "steps": 0,
            "generator": "g.pt", "save_latents": False, "method_params": {"w": {"lr": 0.1, "betas": [0.9, 0.99]}}}
    path = write(tmp_path / "c.json", json.dumps(data))
    assert load_config_file(path) == data
    check_types(RunConfig().to_dict(), "defaults")  # the defaults fit their own types


def test_not_a_table(tmp_path):
    with pytest.raises(ValueError, match="expected a table of options"):
        load_config_file(write(tmp_path / "c.json", '["seed", 1]'))


# --- resolve: profiles and simple checks ---------------------------------------------------------------


def test_auto_profile_follows_the_device():
    cpu, gpu = resolve(RunConfig(), device_type="cpu"), resolve(RunConfig(), device_type="cuda")
    assert (cpu.profile, cpu.n) == ("quick", PROFILES["quick"]["n"])
    assert (gpu.profile, gpu.n) == ("paper", PROFILES["paper"]["n"])
    assert resolve(RunConfig(profile="paper", n=3), device_type="cpu").n == 3
    assert resolve(RunConfig(profile="quick"), device_type="cuda").profile == "quick"
    again = resolve(cpu, device_type="cpu")
    assert again == cpu  # resolving is idempotent


@pytest.mark.parametrize("kw, words", [
    ({"profile": "fast"}, ["--profile", "'fast'", "quick", "paper"]),
    ({"batch_size": 0}, ["--batch-size", "0"]),
    ({"steps": -1}, ["--steps", "-1"]),
    ({"n": 0}, ["--n", "0"]),
    ({"batch_size": "8"}, ["batch_size", "'8'"]),
])
def test_resolve_rejects_bad_values(kw, words):
    with pytest.raises(ValueError) as err:
        resolve(RunConfig(**kw), device_type="cpu")
    for word in words:
        assert word in str(err.value)


def test_method_overrides():
    quick = resolve(RunConfig(), device_type="cpu")
    assert method_overrides(quick, "im2s", 5000) == {"steps": PROFILES["quick"]["max_steps"]}  # capped
    assert method_overrides(quick, "im2s", 100) == {}  # under the cap: published default kept
    paper = resolve(RunConfig(), device_type="cuda")
    assert method_overrides(paper, "im2s", 5000) == {}
    explicit = dataclasses.replace(paper, steps=7, method_params={"im2s": {"lr": 0.5}, "w": {"lr": 1.0}})
    assert method_overrides(explicit, "im2s", 5000) == {"steps": 7, "lr": 0.5}
    assert method_overrides(explicit, "enc", 0) == {}  # feed-forward methods have no steps to set
    per_method = dataclasses.replace(explicit, method_params={"im2s": {"steps": 9}})
    assert method_overrides(per_method, "im2s", 5000)["steps"] == 9  # method_params beat --steps


# --- names checked without loading anything -----------------------------------------------------------


@pytest.mark.parametrize("kw, words", [
    ({"methods": "im2"}, ["unknown method 'im2'", "Did you mean 'im2s'?", "Available"]),
    ({"methods": " , "}, ["no method given"]),
    ({"transforms": ("rotate:abc",)}, ["rotate:abc"]),
    ({"protocol": "smok"}, ["smok", "smoke"]),
    ({"fill": "mirror"}, ["--fill", "mirror", "reflection"]),
    ({"perceptual": "vgg"}, ["--perceptual", "'vgg'", "lpips-vgg"]),
])
def test_check_names(kw, words):
    with pytest.raises(ValueError) as err:
        check_names(RunConfig(**kw))
    for word in words:
        assert word in str(err.value)


def test_check_names_accepts_valid_config():
    check_names(RunConfig(methods="im2s,w", transforms=("rotate:0..20/10", "translate:3,-2"),
                          protocol="bdinvert-table1", fill="zeros", perceptual="none"))


# --- the resume check of a run directory --------------------------------------------------------------


def test_run_store_accepts_the_same_config_after_a_json_round_trip(tmp_path):
    cfg = resolve(RunConfig(transforms=("rotate:20",), metrics=("psnr",)), device_type="cpu").to_dict()
    with RunStore(tmp_path / "r") as store:
        store.check_config(cfg)  # nothing stored yet
        store.write_json("config.json", cfg)
    with RunStore(tmp_path / "r") as store:
        store.check_config(cfg)  # tuples in memory, lists on disk: still the same run
        store.check_config(cfg | {"run_dir": "elsewhere"})  # the folder may move


def test_run_store_names_the_differing_keys(tmp_path):
    cfg = resolve(RunConfig(), device_type="cpu").to_dict()
    store = RunStore(tmp_path / "r")
    store.write_json("config.json", cfg)
    with pytest.raises(ValueError) as err:
        store.check_config(cfg | {"seed": 1, "transforms": ("scale:2",)})
    store.close()
    text = str(err.value)
    assert "['seed', 'transforms']" in text and str(tmp_path / "r") in text and "--run-dir" in text
