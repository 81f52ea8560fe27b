"""The ``bench`` command line (click) against the Python API: run, dry-run, ls, report, make-set.

Runs use a 32 px random generator checkpoint written by the test, 3 steps, 3 items and no perceptual
network; the whole file takes seconds on 2 CPU cores.
"""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.cli import main
from bench.config import RunConfig
from bench.runner import run as run_api

KEY = ["item", "method", "transform", "metric"]


@pytest.fixture(scope="module")
def gen_path(tiny_generator_path):
    return tiny_generator_path


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # no LPIPS backbones from the user's cache, and a clean working directory (runs/ lands here)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fast_options(gen_path, run_dir, *extra: str) -> list[str]:
    return ["run", "--generator", gen_path, "--data", "synthetic:3", "--n", "3", "--steps", "3", "--perceptual",
            "none", "--device", "cpu", "--batch-size", "2", "--run-dir", run_dir, "--quiet", *extra]


def results(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv").sort_values(KEY).reset_index(drop=True)


def dry_run(*args: str) -> dict:
    result = invoke("run", "--dry-run", "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- 2. CLI == API ------------------------------------------------------------------------------------


def test_cli_and_api_give_the_same_table(gen_path, tmp_path):
    cli = invoke(*fast_options(gen_path, tmp_path / "cli", "--methods", "im2s", "--transform", "rotate:20"))
    assert cli.exit_code == 0, cli.output
    assert f"results written to {tmp_path / 'cli'}" in cli.stdout
    api_dir = run_api(RunConfig(methods="im2s", transforms=("rotate:20",), generator=str(gen_path),
                                data="synthetic:3", n=3, steps=3, perceptual="none", device="cpu", batch_size=2,
                                run_dir=str(tmp_path / "api")), progress=False, log=lambda m: None)
    a, b = results(tmp_path / "cli"), results(api_dir)
    assert len(a) == 3 * 2 * 6 and len(a) == len(b)
    for col in ("item", "method", "transform", "metric", "status", "seed"):
        assert a[col].tolist() == b[col].tolist(), col
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), rtol=0, atol=1e-6)
    ca = json.loads((tmp_path / "cli" / "config.json").read_text())
    cb = json.loads((api_dir / "config.json").read_text())
    assert {k: v for k, v in ca.items() if k != "run_dir"} == {k: v for k, v in cb.items() if k != "run_dir"}


# --- 4. bad files, reported on stderr -----------------------------------------------------------------


def test_cli_reports_bad_image_files_on_stderr(gen_path, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / "ok.png")
    Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(folder / "cut.png")
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:300])
    (folder / "readme.png").write_text("plain text")
    opts = fast_options(gen_path, tmp_path / "r", "--no-identity", "--transform", "rotate:10")
    opts[opts.index("synthetic:3")] = f"folder:{folder}"
    result = invoke(*opts)
    assert result.exit_code == 0, result.output
    assert "cut.png" in result.stderr and "readme.png" in result.stderr
    assert "cut.png" not in result.stdout
    df = results(tmp_path / "r")
    assert set(df["item"]) == {"ok"} and set(df["transform"]) == {"rotate:10"} and (df["status"] == "ok").all()


# --- 5. dry-run, precedence, errors --------------------------------------------------------------------


def test_dry_run_prints_resolved_json_and_writes_nothing(tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    cfg = dry_run("--run-dir", tmp_path / "never")
    assert cfg["profile"] == "quick"  # auto on a CPU
    assert cfg["n"] == 8  # filled from the quick profile
    assert cfg["methods"] == RunConfig().methods and cfg["steps"] is None
    assert set(cfg) == set(RunConfig().to_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run dir, no runs/
    assert dry_run("--profile", "paper")["n"] == 50
    assert dry_run("--n", "3")["n"] == 3


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_config_precedence_cli_over_file_over_defaults(tmp_path, kind):
    path = tmp_path / f"opts.{kind}"
    if kind == "json":
        path.write_text(json.dumps({"seed": 5, "steps": 7, "methods": "w", "transforms": ["scale:0.75"],
                                    "include_identity": False, "method_params": {"w": {"lr": 0.05}}}))
    else:
        path.write_text('seed = 5\nsteps = 7\nmethods = "w"\ntransforms = ["scale:0.75"]\n'
                        'include_identity = false\n[method_params.w]\nlr = 0.05\n')
    cfg = dry_run("--config", path, "--seed", "9", "--transform", "rotate:20")
    assert cfg["seed"] == 9 and cfg["transforms"] == ["rotate:20"]  # CLI wins (and replaces the list)
    assert cfg["steps"] == 7 and cfg["methods"] == "w" and cfg["include_identity"] is False  # file
    assert cfg["method_params"] == {"w": {"lr": 0.05}}
    assert cfg["batch_size"] == RunConfig().batch_size and cfg["fill"] == "reflection"  # defaults
    assert dry_run("--config", path, "--identity")["include_identity"] is True


def test_config_file_unknown_key(tmp_path):
    path = tmp_path / "opts.json"
    path.write_text(json.dumps({"stpes": 3}))
    result = invoke("run", "--dry-run", "--device", "cpu", "--config", path)
    assert result.exit_code == 1
    assert "opts.json" in result.stderr and "stpes" in result.stderr and "steps" in result.stderr


@pytest.mark.parametrize("text, words", [
    ('{"batch_size": "eight"}', ["batch_size", "eight"]),
    ('{"include_identity": "no"}', ["include_identity", "bool"]),
    ('{"steps": 2.5}', ["steps", "2.5"]),
    ('{"n": 0}', ["--n", ">= 1"]),
    ('{"profile": "fast"}', ["--profile", "fast"]),
    ('{"fill": "mirror"}', ["--fill", "mirror", "reflection"]),
    ('{"seed": 1,}', ["cannot be parsed"]),
    ('[1, 2]', ["expected a table"]),
])
def test_config_file_bad_values(tmp_path, text, words):
    path = tmp_path / "opts.json"
    path.write_text(text)
    result = invoke("run", "--dry-run", "--device", "cpu", "--config", path)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ")
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert "Traceback" not in result.output


def test_bad_toml_file(tmp_path):
    path = tmp_path / "opts.toml"
    path.write_text("steps = [unclosed\n")
    result = invoke("run", "--dry-run", "--device", "cpu", "--config", path)
    assert result.exit_code == 1 and "opts.toml" in result.stderr and "cannot be parsed" in result.stderr


@pytest.mark.parametrize("dry", [True, False])
def test_unknown_method_names_available_ones_and_a_suggestion(gen_path, tmp_path, dry):
    flags = ["--dry-run"] if dry else []
    base = ["run", *flags, "--device", "cpu", "--generator", gen_path, "--data", "synthetic:2",
            "--run-dir", tmp_path / "r", "--quiet"]
    result = invoke(*base, "--methods", "bogus")
    assert result.exit_code == 1
    assert "unknown method 'bogus'" in result.stderr and "im2s" in result.stderr and "w" in result.stderr
    result = invoke(*base, "--methods", "im2")
    assert result.exit_code == 1 and "Did you mean 'im2s'?" in result.stderr
    assert not (tmp_path / "r").exists()


def test_bad_transform_spec_and_protocol(tmp_path):
    result = invoke("run", "--dry-run", "--device", "cpu", "--transform", "rotate:abc")
    assert result.exit_code == 1 and "rotate:abc" in result.stderr
    result = invoke("run", "--dry-run", "--device", "cpu", "--protocol", "bdinvert-tabel1")
    assert result.exit_code == 1 and "bdinvert-table1" in result.stderr


def test_click_rejects_bad_option_values():
    result = invoke("run", "--dry-run", "--n", "0")
    assert result.exit_code == 2 and "--n" in result.stderr
    result = invoke("run", "--dry-run", "--fill", "mirror")
    assert result.exit_code == 2 and "mirror" in result.stderr


# --- 6. ls and report ---------------------------------------------------------------------------------


@pytest.mark.parametrize("what, words", [
    ("methods", ["im2s", "w ", "W+"]),
    ("transforms", ["rotate", "translate", "scale", "..", "+"]),
    ("metrics", ["mse", "psnr", "ssim", "lpips-alex", "lpips-vgg", "↑", "↓", "@valid"]),
    ("protocols", ["bdinvert-table1", "smoke", "R20", "T50"]),
    ("config", [f"{name} = " for name in RunConfig().to_dict()]),
])
def test_ls(what, words):
    result = invoke("ls", what)
    assert result.exit_code == 0, result.output
    for word in words:
        assert word in result.stdout, (what, word)


def test_ls_unknown_topic():
    result = invoke("ls", "colours")
    assert result.exit_code == 2 and "methods" in result.stderr


def test_report_after_run(gen_path, tmp_path):
    run_dir = tmp_path / "r"
    assert invoke(*fast_options(gen_path, run_dir, "--transform", "rotate:20")).exit_code == 0
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    out = run_dir / "report"
    table = pd.read_csv(out / "table.csv")
    assert "im2s" in table.to_string() and "rotate:20" in table.to_string()
    md = (out / "table.md").read_text()
    assert "im2s" in md and "psnr" in md.lower()
    grids = sorted(out.glob("grid_*.png"))
    assert grids and any("rotate" in g.name for g in grids)
    with Image.open(grids[0]) as img:
        assert img.size[0] > 32 and img.size[1] > 32
    assert "table.md" in result.stdout


def test_report_without_runs_is_a_clear_error():
    result = invoke("report")
    assert result.exit_code == 1 and "no run found" in result.stderr


# --- 7. make-set, read back with set: -----------------------------------------------------------------


def test_make_set_then_run_on_it(gen_path, tmp_path):
    out = tmp_path / "set"
    made = invoke("make-set", out, "--data", "synthetic:3", "--generator", gen_path, "--transform", "rotate:20",
                  "--no-identity", "--device", "cpu")
    assert made.exit_code == 0, made.output
    stored = pd.read_csv(out / "transforms.csv")
    assert len(stored) == 3 and set(stored["label"]) == {"rotate:20"}

    opts = fast_options(gen_path, tmp_path / "r")  # identity on by default: a made set must ignore it
    opts[opts.index("synthetic:3")] = f"set:{out}"
    result = invoke(*opts)
    assert result.exit_code == 0, result.output
    df = results(tmp_path / "r")
    assert set(df["transform"]) == set(stored["label"])  # exactly the set's labels, no identity row
    assert set(df["item"]) == set(stored["id"]) and (df["status"] == "ok").all()
    assert len(df) == 3 * 6

    # the run's input is the stored image as it is: not transformed a second time
    samples = pd.read_csv(tmp_path / "r" / "samples" / "index.csv")
    for _, row in stored.iterrows():
        path = samples[(samples["item"] == row["id"]) & (samples["kind"] == "input")]["path"].item()
        used = np.asarray(Image.open(tmp_path / "r" / "samples" / path))
        original = np.asarray(Image.open(out / "images" / f"{row['file']}.png"))
        np.testing.assert_array_equal(used, original)
    # and its recorded parameters are the stored ones
    params = pd.read_csv(tmp_path / "r" / "transforms.csv")
    for _, row in params.iterrows():
        p = json.loads(row["params"])
        ref = stored[stored["id"] == row["item"]]
        np.testing.assert_allclose(p["matrix"], json.loads(ref["matrix"].item()), atol=1e-12)
        assert p["label"] == "rotate:20"


def test_make_set_with_identity_keeps_both_labels(gen_path, tmp_path):
    out = tmp_path / "set"
    made = invoke("make-set", out, "--data", "synthetic:2", "--generator", gen_path, "--transform", "scale:0.75",
                  "--device", "cpu")
    assert made.exit_code == 0, made.output
    assert "wrote 4 images" in made.stdout
    opts = fast_options(gen_path, tmp_path / "r")
    opts[opts.index("synthetic:3")] = f"set:{out}"
    opts[opts.index("--n") + 1] = "4"
    assert invoke(*opts).exit_code == 0
    df = results(tmp_path / "r")
    assert set(df["transform"]) == {"identity", "scale:0.75"}
    assert df.groupby("transform")["item"].nunique().to_dict() == {"identity": 2, "scale:0.75": 2}


def test_ls_methods_shows_the_gpu_precision_of_auto():
    lines = invoke("ls", "methods").stdout.splitlines()
    rows = {line.split()[0]: line.split()[3] for line in lines[1:] if not line.startswith("gpu auto:")}
    assert rows["im2s"] == rows["fwplus16"] == rows["w"] == "bf16" and rows["psp"] == "fp32"
