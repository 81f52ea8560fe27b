"""Runner (``bench.runner.run``) and run directory: contract files, resume, bad inputs, failed items.

Every run here uses a 32 px random generator checkpoint written by the test, 3 optimisation steps, two or
three items and no perceptual network, so the whole file takes a few seconds on 2 CPU cores.
"""

import dataclasses
import datetime as dt
import json
import math
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import bench.prepare
import bench.runner
from bench.config import RunConfig
from bench.generators.checkpoints import load_generator
from bench.metrics import BACKBONE_FILES, DEFAULT_METRICS, list_metrics
from bench.results import RESULT_COLUMNS, SAMPLE_COLUMNS, TIMING_COLUMNS, TRANSFORM_COLUMNS
from bench.runner import run
from methods.wplus import WPlusOptimization

AVAILABLE = {"mse", "psnr", "ssim"}  # LPIPS backbones are absent (TORCH_HOME points at an empty folder)
KEY = ["item", "method", "transform", "metric"]


@pytest.fixture(scope="module")
def gen_path(tiny_generator_path):
    return tiny_generator_path


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    # LPIPS must be reported unavailable here even on a machine whose torch cache holds the backbones
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def config(gen_path, run_dir, **kw) -> RunConfig:
    base = dict(methods="im2s", transforms=("rotate:20",), generator=str(gen_path), data="synthetic:3", n=3,
                steps=3, perceptual="none", device="cpu", batch_size=2, run_dir=str(run_dir))
    return RunConfig(**(base | kw))


def results(run_dir) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "results.csv")
    return df.sort_values(KEY).reset_index(drop=True)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> None:
    assert len(a) == len(b)
    for col in ("item", "method", "transform", "metric", "status"):
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col
    assert a["seed"].tolist() == b["seed"].tolist()
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), rtol=0, atol=atol)


# --- 1. the run directory contract -------------------------------------------------------------------


@pytest.fixture(scope="module")
def contract_run(gen_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("contract") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(run_dir.parent / "torch-home"))
    try:
        out = run(config(gen_path, run_dir, max_samples=2), progress=False, log=lambda m: None)
    finally:
        mp.undo()
    assert out == run_dir
    return run_dir


def test_config_json_is_the_resolved_config(contract_run, gen_path):
    cfg = json.loads((contract_run / "config.json").read_text())
    assert set(cfg) == {f.name for f in dataclasses.fields(RunConfig)} | {"method_settings"}
    assert cfg["profile"] == "quick"  # auto on a CPU
    assert cfg["n"] == 3 and cfg["steps"] == 3 and cfg["transforms"] == ["rotate:20"]
    assert cfg["generator"] == str(gen_path) and cfg["run_dir"] == str(contract_run)


def test_config_json_records_what_each_method_ran_with(contract_run):
    settings = json.loads((contract_run / "config.json").read_text())["method_settings"]
    im2s = settings["im2s"]
    assert im2s["params"]["steps"] == 3 and im2s["params"]["lr"] == WPlusOptimization.Params().lr
    assert im2s["precision"] == "fp32" and im2s["batch_size"] == 2 and im2s["perceptual"]


def test_versions_json(contract_run, gen_path):
    v = json.loads((contract_run / "versions.json").read_text())
    assert v["packages"]["torch"] == metadata.version("torch")
    assert set(v["packages"]) >= {"kornia", "numpy", "pandas", "click"}
    assert isinstance(v["git_commit"], str) and v["git_commit"]
    assert v["device"] == "cpu"
    date = dt.datetime.fromisoformat(v["date"])
    assert abs((dt.datetime.now(dt.timezone.utc) - date).total_seconds()) < 600
    assert gen_path.name in v["generator"]
    assert v["perceptual"].startswith("none")
    assert v["data"].startswith("synthetic:3")


def test_metrics_json_lists_every_metric_with_availability(contract_run):
    table = json.loads((contract_run / "metrics.json").read_text())
    # a run on a user's generator gets the default metrics; the world's perceptual metric is only
    # added for the embedded world's own generator
    names = set(DEFAULT_METRICS)
    assert names <= {m.name for m in list_metrics()}
    assert set(table) == names | {n + "@valid" for n in names}
    for name, entry in table.items():
        assert set(entry) >= {"higher_is_better", "range", "available", "reason", "description"}
        base = name.removesuffix("@valid")
        assert entry["available"] == (base in AVAILABLE), name
        if base in AVAILABLE:
            assert entry["reason"] == ""
        elif base == "effnet-lpips":  # the perceptual extra: hidden in the tests (tests/conftest.py) or missing
            assert "perceptual" in entry["reason"]
        else:  # an unavailable metric says which file is missing, never a number from random weights
            net = base.removeprefix("lpips-")
            assert BACKBONE_FILES[net] in entry["reason"]
    assert table["psnr"]["higher_is_better"] and not table["mse"]["higher_is_better"]


def test_results_csv_one_row_per_item_method_transform_metric(contract_run):
    df = pd.read_csv(contract_run / "results.csv")
    assert tuple(df.columns) == RESULT_COLUMNS
    metrics = AVAILABLE | {m + "@valid" for m in AVAILABLE}
    assert set(df["metric"]) == metrics  # unavailable metrics get no rows (metrics.json says why)
    assert set(df["transform"]) == {"identity", "rotate:20"}
    assert set(df["method"]) == {"im2s"}
    assert len(df) == 3 * 1 * 2 * len(metrics)
    assert not df.duplicated(KEY).any()
    assert (df["status"] == "ok").all() and np.isfinite(df["value"]).all()
    # one seed per (item, method, transform), different across transforms
    seeds = df.groupby(["item", "method", "transform"])["seed"].nunique()
    assert (seeds == 1).all()
    per_item = df.drop_duplicates(["item", "transform"]).pivot(index="item", columns="transform", values="seed")
    assert (per_item["identity"] != per_item["rotate:20"]).all()


def test_results_values_are_consistent(contract_run):
    df = pd.read_csv(contract_run / "results.csv")
    wide = df.pivot_table(index=["item", "transform"], columns="metric", values="value")
    # PSNR on [0, 1] with peak 1 is -10 log10(MSE), whole image and valid region alike
    np.testing.assert_allclose(wide["psnr"], -10 * np.log10(wide["mse"]), rtol=1e-4)
    np.testing.assert_allclose(wide["psnr@valid"], -10 * np.log10(wide["mse@valid"]), rtol=1e-4)
    ident = wide.xs("identity", level="transform")
    np.testing.assert_allclose(ident["mse@valid"], ident["mse"], rtol=1e-5)  # identity: every pixel valid
    rot = wide.xs("rotate:20", level="transform")
    assert (rot["mse@valid"] != rot["mse"]).all()  # rotation: corners are fill, masked out


def test_results_match_the_saved_latents(contract_run, gen_path):
    """Re-render the saved W+ codes and recompute the identity rows' MSE independently."""
    gen = load_generator(gen_path).eval()
    df = pd.read_csv(contract_run / "results.csv")
    from bench.data import open_source

    items = {it.id: it for it in open_source("synthetic:3", resolution=32, n=3, seed=0, generator=gen,
                                             on_error=print)}
    for item_id, item in items.items():
        wp = torch.load(contract_run / "latents" / "im2s" / "identity" / f"{item_id}.pt", weights_only=True)["wp"]
        with torch.no_grad():
            recon = gen.synthesis(wp[None]).clamp(-1, 1)[0]
        mse = float(((recon - item.image) / 2).square().mean())
        row = df[(df["item"] == item_id) & (df["transform"] == "identity") & (df["metric"] == "mse")]
        assert row["value"].item() == pytest.approx(mse, rel=1e-4, abs=1e-7)


def test_transforms_csv_records_params_with_matrix(contract_run):
    df = pd.read_csv(contract_run / "transforms.csv")
    assert tuple(df.columns) == TRANSFORM_COLUMNS
    assert len(df) == 3 * 2 and not df.duplicated(["item", "transform"]).any()
    c = (32 - 1) / 2
    for _, row in df.iterrows():
        p = json.loads(row["params"])
        m = np.array(p["matrix"])
        assert m.shape == (3, 3)
        if row["transform"] == "identity":
            np.testing.assert_allclose(m, np.eye(3), atol=1e-12)
        else:
            a = math.radians(20)
            np.testing.assert_allclose(abs(m[0, 1]), math.sin(a), atol=1e-9)
            np.testing.assert_allclose(m[[0, 1], [0, 1]], [math.cos(a)] * 2, atol=1e-9)
            np.testing.assert_allclose(m @ [c, c, 1], [c, c, 1], atol=1e-9)  # about the image centre
        assert p["fill"] == "reflection"


def test_timing_csv(contract_run):
    df = pd.read_csv(contract_run / "timing.csv")
    assert tuple(df.columns) == TIMING_COLUMNS
    assert (df["seconds"] >= 0).all()
    assert df.groupby(["method", "transform"])["items"].sum().to_dict() == {("im2s", "identity"): 3,
                                                                            ("im2s", "rotate:20"): 3}
    assert df["items"].max() <= 2  # batch size


def test_latents_load_with_weights_only(contract_run, gen_path):
    gen = load_generator(gen_path)
    files = sorted((contract_run / "latents").rglob("*.pt"))
    assert len(files) == 3 * 2
    assert {f.parent.name for f in files} == {"identity", "rotate_20"}
    for f in files:
        lat = torch.load(f, weights_only=True)
        assert set(lat) == {"wp"}
        assert lat["wp"].shape == (gen.num_ws, gen.w_dim) and lat["wp"].dtype == torch.float32


def test_samples_bounded_by_max_samples(contract_run):
    idx = pd.read_csv(contract_run / "samples" / "index.csv")
    assert tuple(idx.columns) == SAMPLE_COLUMNS
    assert set(idx["item"]) == {"synthetic-000000", "synthetic-000001"}  # max_samples=2 of 3 items
    assert len(idx) == 2 * 2 * 2  # items x transforms x (input, im2s)
    assert set(idx["kind"]) == {"input", "im2s"}
    for rel in idx["path"]:
        with Image.open(contract_run / "samples" / rel) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
    assert len(list((contract_run / "samples").rglob("*.png"))) == len(idx)


def test_save_latents_off(gen_path, tmp_path):
    run_dir = run(config(gen_path, tmp_path / "r", save_latents=False, n=2, transforms=()), progress=False,
                  log=lambda m: None)
    assert not (run_dir / "latents").exists()
    assert len(results(run_dir)) == 2 * 6


# --- invariances --------------------------------------------------------------------------------------


@pytest.mark.parametrize("methods", ["im2s", "w"])
def test_batch_size_does_not_change_results(gen_path, tmp_path, methods):
    """Batch sizes 1, 2, 3 and 4 (4 mixes both transforms in one batch) give the same table.

    A batch of one runs as a batch of two (the runner pads it), so it matches batch 2 bit for bit; larger
    batches may take other CPU kernels, whose rounding differs by ~1e-6."""
    tables = {}
    for size in (1, 2, 3, 4):
        out = run(config(gen_path, tmp_path / f"b{size}", batch_size=size, methods=methods), progress=False,
                  log=lambda m: None)
        tables[size] = results(out)
    assert_same_table(tables[1], tables[2], atol=0)
    for size in (1, 2, 4):
        assert_same_table(tables[size], tables[3], atol=1e-5)
    timing = {s: pd.read_csv(tmp_path / f"b{s}" / "timing.csv") for s in (1, 3, 4)}
    assert len(timing[1]) == 6 and len(timing[3]) == 2
    assert len(timing[4]) == 3 and timing[4]["items"].tolist() == [3, 1, 2]  # the batch of 4 is split by transform


# --- 3. resume ----------------------------------------------------------------------------------------


def test_resume_after_interrupt_matches_uninterrupted_run(gen_path, tmp_path):
    full = run(config(gen_path, tmp_path / "full"), progress=False, log=lambda m: None)
    cfg = config(gen_path, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False, log=lambda m: None, _stop_after_batches=1)
    partial = results(tmp_path / "resumed")
    assert len(partial) == 2 * 6  # exactly the first batch (2 items x 6 metric columns) was kept
    run(cfg, progress=False, log=lambda m: None)
    resumed = results(tmp_path / "resumed")
    assert not resumed.duplicated(KEY).any()
    assert_same_table(resumed, results(full), atol=1e-5)
    timing = pd.read_csv(tmp_path / "resumed" / "timing.csv")
    assert timing["items"].sum() == 3 * 2  # the finished batch was not redone
    tf = pd.read_csv(tmp_path / "resumed" / "transforms.csv")
    assert len(tf) == 6 and not tf.duplicated(["item", "transform"]).any()


def test_rerunning_a_finished_run_adds_nothing(gen_path, tmp_path):
    cfg = config(gen_path, tmp_path / "r", n=2)
    run_dir = run(cfg, progress=False, log=lambda m: None)
    before = {name: (run_dir / name).read_text() for name in ("results.csv", "timing.csv", "transforms.csv")}
    before["index"] = (run_dir / "samples" / "index.csv").read_text()
    run(cfg, progress=False, log=lambda m: None)
    after = {name: (run_dir / name).read_text() for name in ("results.csv", "timing.csv", "transforms.csv")}
    after["index"] = (run_dir / "samples" / "index.csv").read_text()
    assert after == before


def test_different_config_on_same_run_dir_is_refused(gen_path, tmp_path):
    run_dir = run(config(gen_path, tmp_path / "r", n=2), progress=False, log=lambda m: None)
    before = (run_dir / "results.csv").read_text()
    with pytest.raises(ValueError, match="different configuration") as err:
        run(config(gen_path, run_dir, n=2, steps=4, seed=1), progress=False, log=lambda m: None)
    text = str(err.value)
    assert "'seed'" in text and "'steps'" in text and "'n'" not in text and str(run_dir) in text
    assert (run_dir / "results.csv").read_text() == before
    assert json.loads((run_dir / "config.json").read_text())["steps"] == 3


# --- 4. bad image files -------------------------------------------------------------------------------


def _image_folder(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in ("good_a", "good_b"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.png").write_text("this is a text file, not an image\n")
    return folder


def test_bad_image_files_are_reported_and_skipped(gen_path, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    messages = []
    cfg = config(gen_path, tmp_path / "r", data=f"folder:{folder}", n=None, transforms=("scale:0.75",))
    run_dir = run(cfg, progress=False, log=messages.append)
    text = "\n".join(messages)
    assert "truncated.png" in text and "notes.png" in text
    assert "good_a" not in text.replace("good_a.png", "")  # the good files raise no complaint
    df = results(run_dir)
    assert set(df["item"]) == {"good_a", "good_b"}
    assert (df["status"] == "ok").all()
    assert len(df) == 2 * 2 * 6


def test_folder_without_readable_images_is_an_error(gen_path, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="no readable images"):
        run(config(gen_path, tmp_path / "r", data=f"folder:{folder}", n=None), progress=False, log=lambda m: None)


# --- 8. failed items ----------------------------------------------------------------------------------


class NaNForSecondImage:
    """Perceptual fake: zero distance, except NaN for image 1 of a 3-image batch (a diverging loss)."""

    name = "test-nan-for-image-1"

    def __call__(self, x, y):
        d = (x - y).abs().flatten(1).mean(1) * 0
        if x.shape[0] == 3:
            d = d + torch.tensor([0.0, float("nan"), 0.0])
        return d


def test_diverging_item_is_failed_and_others_are_ok(gen_path, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.prepare, "resolve_perceptual", lambda *a, **k: (NaNForSecondImage(), "nan fake"))
    cfg = config(gen_path, tmp_path / "r", perceptual="auto", batch_size=3)
    run_dir = run(cfg, progress=False, log=lambda m: None)
    df = results(run_dir)
    failed = df[df["status"] != "ok"]
    assert set(failed["item"]) == {"synthetic-000001"}
    assert failed["status"].str.startswith("failed: ").all() and "diverged" in failed["status"].iloc[0]
    assert failed["value"].isna().all()
    assert len(failed) == 2 * 6  # both transforms, every metric
    ok = df[df["status"] == "ok"]
    assert set(ok["item"]) == {"synthetic-000000", "synthetic-000002"} and np.isfinite(ok["value"]).all()
    assert json.loads((run_dir / "versions.json").read_text())["perceptual"] == "nan fake"


def test_nan_reconstruction_does_not_poison_the_batch(gen_path, tmp_path, monkeypatch):
    """A method that returns a NaN image for one item: that item fails, the batch is still scored."""
    original = WPlusOptimization.invert

    def nan_for_item_1(self, targets, generator, **kw):
        inv = original(self, targets, generator, **kw)
        images = inv.images.clone()
        images[1] = float("nan")  # not flagged by the method itself
        return dataclasses.replace(inv, images=images)

    monkeypatch.setattr(WPlusOptimization, "invert", nan_for_item_1)
    run_dir = run(config(gen_path, tmp_path / "r", batch_size=3, transforms=()), progress=False,
                  log=lambda m: None)
    df = results(run_dir)
    bad = df[df["item"] == "synthetic-000001"]
    assert (bad["status"] == "failed: non-finite reconstruction").all() and bad["value"].isna().all()
    good = df[df["item"] != "synthetic-000001"]
    assert (good["status"] == "ok").all() and np.isfinite(good["value"]).all()
    idx = pd.read_csv(run_dir / "samples" / "index.csv")
    assert "synthetic-000001" not in set(idx["item"])  # no sample image of a NaN reconstruction


def test_missing_encoder_fails_before_anything_is_written(gen_path, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"'fwplus16' needs an encoder.*--encoder fwplus16=PATH"):
        run(config(gen_path, run_dir, methods="im2s,fwplus16"), progress=False, log=lambda m: None)
    assert not (run_dir / "results.csv").exists()


def test_encoder_given_on_the_command_line_is_used(gen_path, tmp_path):
    from bench.encoders.basecode import save_encoder
    from methods.fwplus import BaseCodeEncoder

    gen = load_generator(gen_path)
    enc_path = tmp_path / "enc16.safetensors"
    save_encoder(BaseCodeEncoder(gen.feature_shape(16)[0]).eval(), enc_path, 16)
    out = run(config(gen_path, tmp_path / "run", methods="fwplus16", encoders={"fwplus16": str(enc_path)},
                     method_params={"fwplus16": {"pnorm_weight": 0.0}}), progress=False, log=lambda m: None)
    df = results(out)
    assert set(df["method"]) == {"fwplus16"} and (df["status"] == "ok").all()


def test_auto_batch_size_probes_each_method_once(tiny_generator_path, tmp_path, monkeypatch):
    """--batch-size auto: the probe inverts real items (2 and 6 copies) with a short method, once per method,
    and the run uses the size it returns. (On the CPU the real probe returns 8 without inverting; the fake
    below runs the probe's inversions to check them.)"""
    import bench.prepare

    calls = []

    def fake_probe(invert, device, limit, cap=256):
        for b in (2, 6):
            invert(b)
        calls.append(limit)
        return 2, "2 (fake probe)"

    monkeypatch.setattr(bench.prepare, "probe_batch_size", fake_probe)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cfg = RunConfig(methods="im2s,w", transforms=("rotate:20",), generator=str(tiny_generator_path),
                    data="synthetic:3", n=3, steps=2, perceptual="none", device="cpu", batch_size="auto",
                    run_dir=str(tmp_path / "run"), save_latents=False)
    logs = []
    out = run(cfg, progress=False, log=logs.append)
    assert calls == [6, 6]  # once per method, at most the number of units (3 items x 2 transforms)
    assert any("batch size for im2s: 2 (fake probe)" in m for m in logs)
    timing = pd.read_csv(out / "timing.csv")
    assert sorted(timing["items"].tolist()) == [1, 1, 1, 1, 2, 2, 2, 2]  # 3 items in batches of 2 + 1


def test_report_header_shows_what_each_method_ran_with(contract_run):
    from reports.build import method_settings_lines

    lines = method_settings_lines(contract_run)
    assert len(lines) == 1 and lines[0].startswith("im2s: steps 3, lr 0.01") and "precision fp32, batch 2" in lines[0]
