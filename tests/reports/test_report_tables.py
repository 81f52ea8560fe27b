"""Tests for reports.tables (summary, Markdown/LaTeX/CSV writers, write_report) on a fake run dir."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reports import (
    MetricInfo,
    RunDirError,
    load_metric_info,
    load_results,
    summary_table,
    to_latex,
    to_markdown,
    write_csv,
    write_report,
)

# Deliberately not alphabetical, so that any sorting shows up as a wrong order.
METHODS = ["fwplus16", "im2s"]
TRANSFORMS = ["identity", "rotate:20", "T50"]
ITEMS = ["003", "000", "001", "002"]
FAILED = ("002", "im2s", "rotate:20")
ABSENT = ("im2s", "T50")  # never run: the cell must read "–"
METRICS = {
    "psnr": {
        "higher_is_better": True,
        "range": [0, 100],
        "description": "PSNR on [0,1], dB",
        "available": True,
        "reason": "",
    },
    "mse": {"higher_is_better": False, "range": [0, 1], "description": "MSE on [0,1]", "available": True, "reason": ""},
    "lpips": {
        "higher_is_better": False,
        "range": [0, 1],
        "description": "LPIPS alex @256",
        "available": False,
        "reason": "LPIPS AlexNet weights not found in the torch cache",
    },
}


def _values() -> dict[tuple[str, str, str, str], float]:
    """(item, method, transform, metric) -> value; F/W+ is clearly better on every cell."""
    rng = np.random.default_rng(0)
    out = {}
    for method in METHODS:
        for transform in TRANSFORMS:
            if (method, transform) == ABSENT:
                continue
            for item in ITEMS:
                base = 26.0 if method == "fwplus16" else 22.0
                psnr = base + rng.normal(0.0, 0.5)
                out[(item, method, transform, "psnr")] = psnr
                out[(item, method, transform, "mse")] = 10 ** (-psnr / 10)
    return out


def make_run(root: Path, name: str = "run_a") -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    rows = []
    for (item, method, transform, metric), value in _values().items():
        failed = (item, method, transform) == FAILED
        rows.append(
            {
                "item": item,
                "method": method,
                "transform": transform,
                "seed": 7,
                "metric": metric,
                # A failed row's value must be ignored even if the runner left one.
                "value": 999.0 if failed else value,
                "status": "failed: NaN loss at step 12, batch of 4" if failed else "ok",
            }
        )
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "config.json").write_text(json.dumps({"methods": METHODS, "transforms": TRANSFORMS}))
    (run / "versions.json").write_text(
        json.dumps(
            {
                "packages": {"torch": "2.14.1"},
                "git_commit": "abc1234",
                "device": "cpu (2 cores)",
                "date": "2025-01-01T00:00:00",
                "generator": "embedded StyleGAN2 64px\nsha256 0f0f",
                "perceptual": "stand-in perceptual distance (domain-trained), not LPIPS",
            }
        )
    )
    pd.DataFrame({"method": METHODS, "transform": ["identity"] * 2, "items": [4, 4], "seconds": [12.0, 30.0]}).to_csv(
        run / "timing.csv", index=False
    )
    index = []
    for transform in TRANSFORMS[:2]:
        for item in ITEMS[:2]:
            for kind in ["input", *METHODS]:
                rel = f"{kind}_{item}_{transform.replace(':', '_')}.png"
                Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(run / "samples" / rel)
                index.append({"item": item, "transform": transform, "kind": kind, "path": rel})
    pd.DataFrame(index).to_csv(run / "samples" / "index.csv", index=False)
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def _md_rows(md: str, metric: str) -> dict[str, list[str]]:
    """The Markdown table under '### <metric> ...' as {first cell: other cells}."""
    block = md.split(f"### {metric} ", 1)[1].split("###", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|") and not ln.startswith("|:--")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


def test_summary_matches_independent_numpy(run: Path) -> None:
    summary = summary_table(load_results([run]))
    values = _values()
    for method in METHODS:
        for transform in TRANSFORMS:
            for metric in ("psnr", "mse"):
                ok = [
                    values[(i, method, transform, metric)]
                    for i in ITEMS
                    if (method, transform) != ABSENT and (i, method, transform) != FAILED
                ]
                row = summary[
                    (summary["method"] == method) & (summary["transform"] == transform) & (summary["metric"] == metric)
                ]
                if (method, transform) == ABSENT:
                    assert row.empty
                    continue
                assert len(row) == 1
                assert row["mean"].item() == pytest.approx(np.mean(ok), rel=1e-12)
                assert row["std"].item() == pytest.approx(np.std(ok, ddof=1), rel=1e-12)
                assert row["n"].item() == len(ok)
                assert row["n_failed"].item() == (1 if (method, transform) == FAILED[1:] else 0)


def test_summary_matches_pandas_groupby_from_csv(run: Path) -> None:
    raw = pd.read_csv(run / "results.csv", dtype={"item": str})
    ok = raw[raw["status"] == "ok"]
    expected = ok.groupby(["method", "transform", "metric"])["value"].agg(["mean", "std"])
    summary = summary_table(load_results([run])).astype({"method": str, "transform": str, "metric": str})
    got = summary.set_index(["method", "transform", "metric"])[["mean", "std"]].sort_index()
    pd.testing.assert_frame_equal(got, expected.sort_index(), rtol=1e-12, check_names=False)


def test_summary_keeps_run_order_and_filters_metrics(run: Path) -> None:
    summary = summary_table(load_results([run]), metrics=["mse"])
    assert list(summary["metric"].unique()) == ["mse"]
    assert list(summary["method"].cat.categories) == METHODS
    assert list(summary["transform"].cat.categories) == TRANSFORMS
    assert list(summary["transform"].astype(str))[:3] == TRANSFORMS
    with pytest.raises(ValueError, match="unknown metric.*ssim"):
        summary_table(load_results([run]), metrics=["ssim"])


def test_load_results_merges_metric_info_and_keeps_ids(run: Path) -> None:
    df = load_results(run)  # a single path is accepted
    assert set(df["item"]) == set(ITEMS)  # "000" stays a string id
    assert df.loc[df["metric"] == "psnr", "higher_is_better"].all()
    assert not df.loc[df["metric"] == "mse", "higher_is_better"].any()
    assert (df["run"] == "run_a").all()


def test_markdown_arrows_bold_dash_and_unavailable(run: Path) -> None:
    md = to_markdown(summary_table(load_results([run])), load_metric_info([run]))
    psnr, mse = _md_rows(md, "psnr"), _md_rows(md, "mse")
    assert psnr["psnr ↑"] == TRANSFORMS and mse["mse ↓"] == TRANSFORMS
    # F/W+ is better on every column for both directions: its cells, and only its, are bold, except in T50,
    # where im2s has no value and there is nothing to compare.
    for rows in (psnr, mse):
        assert all(c.startswith("**") and c.endswith("**") for c in rows["fwplus16"][:2])
        assert "**" not in rows["fwplus16"][2]
        assert not any("**" in c for c in rows["im2s"])
        assert re.fullmatch(r"\*\*\d+\.\d+ ± \d+\.\d+\*\*", rows["fwplus16"][0])
    assert psnr["im2s"][2] == "–" and mse["im2s"][2] == "–"
    assert "### lpips" not in md and "| lpips" not in md
    assert "LPIPS AlexNet weights not found in the torch cache" in md.split("Unavailable metrics", 1)[1]
    assert "im2s / rotate:20: 1 failed, 3 ok" in md


def test_bold_flips_with_direction(run: Path) -> None:
    summary = summary_table(load_results([run]))
    flipped = {**METRICS, "psnr": {**METRICS["psnr"], "higher_is_better": False}}
    rows = _md_rows(to_markdown(summary, flipped), "psnr")
    assert "psnr ↓" in rows
    assert [c.startswith("**") for c in rows["im2s"]] == [True, True, False]  # T50: im2s has no value
    assert [c.startswith("**") for c in rows["fwplus16"]] == [False, False, False]  # T50: alone, not bold


def test_ties_all_bold_and_nan_std() -> None:
    summary = pd.DataFrame(
        {
            "method": ["a", "b", "c", "a", "b", "c"],
            "transform": ["x"] * 3 + ["y"] * 3,
            "metric": ["m"] * 6,
            "mean": [1.0, 1.0, 0.5, 2.0, math.nan, 1.0],
            "std": [0.1, 0.2, 0.1, math.nan, math.nan, 0.1],
            "n": [4, 4, 4, 1, 0, 4],
            "n_failed": [0, 0, 0, 0, 4, 0],
        }
    )
    info = {"m": MetricInfo("m", higher_is_better=True)}
    rows = _md_rows(to_markdown(summary, info, decimals=2), "m")
    assert rows["a"] == ["**1.00 ± 0.10**", "**2.00 ± –**"]
    assert rows["b"] == ["**1.00 ± 0.20**", "–"]
    assert rows["c"] == ["0.50 ± 0.10", "1.00 ± 0.10"]
    with pytest.raises(ValueError, match="no entry for metric"):
        to_markdown(summary, {})


def test_latex_booktabs_and_bold(run: Path) -> None:
    tex = to_latex(summary_table(load_results([run])), load_metric_info([run]))
    assert tex.count(r"\begin{tabular}") == 2 and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"psnr $\uparrow$ & identity & rotate:20 & T50 \\" in tex
    assert r"mse $\downarrow$" in tex
    fw_line = next(ln for ln in tex.splitlines() if ln.startswith("fwplus16"))
    assert fw_line.count(r"\textbf{") == 2 and r"$\pm$" in fw_line  # T50: nothing to compare with
    im_line = next(ln for ln in tex.splitlines() if ln.startswith("im2s"))
    assert r"\textbf" not in im_line and im_line.endswith(r"& -- \\")
    assert "% lpips: unavailable (LPIPS AlexNet weights" in tex


def test_write_csv_roundtrip(run: Path, tmp_path: Path) -> None:
    summary = summary_table(load_results([run]))
    back = pd.read_csv(write_csv(summary, tmp_path / "out" / "t.csv"))
    assert list(back.columns) == ["method", "transform", "metric", "mean", "std", "n", "n_failed"]
    np.testing.assert_allclose(back["mean"], summary["mean"], rtol=1e-15)
    assert back["n"].tolist() == summary["n"].tolist()


def test_write_report_creates_files(run: Path, tmp_path: Path) -> None:
    paths = write_report([run], tmp_path / "report")
    for name in ("table.csv", "table.md", "table.tex", "grid_identity.png", "grid_rotate_20.png", "metric_psnr.png"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    assert "metric_lpips.png" not in paths
    md = paths["table.md"].read_text()
    for text in (
        str(run),
        "abc1234",
        "cpu (2 cores)",
        "2025-01-01",
        "embedded StyleGAN2 64px sha256 0f0f",
        "stand-in perceptual distance",
        "NaN loss at step 12, batch of 4",
        "![grid_identity.png]",
    ):
        assert text in md, text
    failed = md.split("## Failed items", 1)[1].split("##", 1)[0]
    assert failed.count("| run_a | 002 | im2s | rotate:20 | 7 |") == 1  # one line, not one per metric


def test_merged_runs_pool_rows(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "run_b"
    shutil.copytree(run, other)
    df = load_results([run, other])
    assert list(pd.unique(df["run"])) == ["run_a", "run_b"]
    one, two = summary_table(load_results([run])), summary_table(df, pool=True)
    np.testing.assert_allclose(two["mean"], one["mean"], rtol=1e-12)
    assert (two["n"] == 2 * one["n"]).all()
    paths = write_report([run, other], tmp_path / "merged", pool=True)
    assert "grid_run_b_identity.png" in paths


def test_not_a_run_dir_names_missing_file(tmp_path: Path, run: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunDirError, match=r"not a run directory: missing results\.csv, metrics\.json"):
        load_results([empty])
    with pytest.raises(RunDirError, match="does not exist"):
        load_results([tmp_path / "nope"])
    (run / "metrics.json").unlink()
    with pytest.raises(RunDirError, match=r"missing metrics\.json"):
        write_report([run], tmp_path / "out")


def test_malformed_files_give_clear_errors(run: Path) -> None:
    (run / "metrics.json").write_text(json.dumps({"psnr": METRICS["psnr"]}))
    with pytest.raises(RunDirError, match=r"metrics\.json: no entry for metric\(s\) \['mse'\]"):
        load_results([run])
    (run / "metrics.json").write_text(json.dumps({**METRICS, "mse": {"range": [0, 1]}}))
    with pytest.raises(RunDirError, match="'mse' needs a boolean 'higher_is_better'"):
        load_results([run])
    (run / "metrics.json").write_text(json.dumps(METRICS))
    raw = pd.read_csv(run / "results.csv", dtype=str).drop(columns=["status"])
    raw.to_csv(run / "results.csv", index=False)
    with pytest.raises(RunDirError, match=r"results\.csv: missing column\(s\) \['status'\]"):
        load_results([run])


def test_conflicting_direction_between_runs(run: Path, tmp_path: Path) -> None:
    other = make_run(tmp_path, "run_b")
    (other / "metrics.json").write_text(json.dumps({**METRICS, "mse": {**METRICS["mse"], "higher_is_better": True}}))
    with pytest.raises(RunDirError, match="'mse' changes direction"):
        load_metric_info([run, other])


def test_write_report_before_any_row(tmp_path: Path) -> None:
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "results.csv").write_text("item,method,transform,seed,metric,value,status\n")
    (run / "metrics.json").write_text(json.dumps(METRICS))
    paths = write_report(run, tmp_path / "out")
    md = paths["table.md"].read_text()
    assert "No results." in md and "not recorded" in md and "LPIPS AlexNet weights not found" in md
    assert pd.read_csv(paths["table.csv"]).empty
