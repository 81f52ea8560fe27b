"""Tests for reports.figures: sample grids (size, placement, missing cells) and metric curves."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reports import RunDirError, cell_dpi, figure_grid, load_results, metric_curve, safe_label, summary_table
from reports.figures import GAP_IN, LABEL_IN, MISSING_GREY, TITLE_IN
from tests.reports.images import mask as colour_mask
from tests.reports.images import pixels

METHODS = ["fwplus16", "im2s"]  # results.csv order: the grid's row order after "input"
KINDS = ["input", *METHODS]
ITEMS = ["007", "002", "005", "001"]  # index order: the grid's column order
TRANSFORMS = ["identity", "rotate:20", "T50"]
RES = 64


def colour(kind: str, item: str) -> tuple[int, int, int]:
    """A distinct solid colour per sample, far from white, black and the missing-cell grey."""
    return (30 + 80 * KINDS.index(kind), 20 + 50 * ITEMS.index(item), 200)


def make_run(root: Path) -> Path:
    run = root / "run"
    (run / "samples" / "png").mkdir(parents=True)
    rows = [
        {"item": i, "method": m, "transform": t, "seed": 0, "metric": "psnr", "value": 20.0, "status": "ok"}
        for m in METHODS
        for t in TRANSFORMS
        for i in ITEMS
    ]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "metrics.json").write_text(
        json.dumps(
            {"psnr": {"higher_is_better": True, "range": [0, 100], "description": "", "available": True, "reason": ""}}
        )
    )
    index = []
    for transform in TRANSFORMS[:2]:
        for item in ITEMS:
            for kind in ["target", *KINDS]:
                rel = f"png/{safe_label(transform)}_{item}_{kind}.png"
                rgb = colour(kind, item) if kind != "target" else (255, 0, 0)
                Image.fromarray(np.full((RES, RES, 3), rgb, np.uint8)).save(run / "samples" / rel)
                index.append({"item": item, "transform": transform, "kind": kind, "path": rel})
    pd.DataFrame(index).to_csv(run / "samples" / "index.csv", index=False)
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def test_cell_dpi() -> None:
    assert cell_dpi(64) == 128 and cell_dpi(32) == 96 and cell_dpi(128) == 128
    assert cell_dpi(256) == 256 and cell_dpi(1024) == 256


def test_grid_size_scales_with_rows_and_cols(run: Path, tmp_path: Path) -> None:
    dpi = cell_dpi(RES)
    full = pixels(figure_grid(run, "identity", tmp_path / "a.png"))
    two = pixels(figure_grid(run, "identity", tmp_path / "b.png", max_items=2))
    height, width = full.shape[:2]
    # Each cell is one inch (dpi px) plus a white gap; a label band on the left, a title band on top.
    pitch = dpi + round(GAP_IN * dpi)
    assert (width, height) == (round(LABEL_IN * dpi) + 4 * pitch, round(TITLE_IN * dpi) + 3 * pitch)
    assert width - two.shape[1] == 2 * pitch and two.shape[0] == height


def test_grid_places_each_sample_in_its_cell(run: Path, tmp_path: Path) -> None:
    img = pixels(figure_grid(run, "identity", tmp_path / "g.png"))
    dpi = cell_dpi(RES)
    centres = {}
    for kind in KINDS:
        for item in ITEMS:
            mask = colour_mask(img, colour(kind, item))
            # One cell of exactly one inch (dpi pixels, the sample enlarged by a whole factor), drawn once.
            assert mask.sum() == dpi**2, (kind, item, mask.sum())
            ys, xs = np.nonzero(mask)
            assert xs.max() - xs.min() < dpi and ys.max() - ys.min() < dpi
            centres[kind, item] = (ys.mean(), xs.mean())
    for item in ITEMS:  # rows: input, then methods in results order
        ys = [centres[kind, item][0] for kind in KINDS]
        assert ys == sorted(ys) and min(np.diff(ys)) > 0.9 * dpi
    for kind in KINDS:  # columns: items in index order
        xs = [centres[kind, item][1] for item in ITEMS]
        assert xs == sorted(xs) and min(np.diff(xs)) > 0.9 * dpi
    assert not colour_mask(img, (255, 0, 0)).any()  # the optional target row is not drawn


def test_missing_and_unreadable_samples_become_grey_cells(run: Path, tmp_path: Path) -> None:
    index = pd.read_csv(run / "samples" / "index.csv", dtype=str)
    gone = (index["transform"] == "identity") & (index["item"] == "002") & (index["kind"] == "im2s")
    index[~gone].to_csv(run / "samples" / "index.csv", index=False)  # no index row
    (run / "samples" / "png" / "identity_005_fwplus16.png").unlink()  # index row, no file
    (run / "samples" / "png" / "identity_001_input.png").write_bytes(b"not a png")  # corrupt
    img = pixels(figure_grid(run, "identity", tmp_path / "g.png"))
    dpi = cell_dpi(RES)
    grey = colour_mask(img, (MISSING_GREY,) * 3).sum()
    assert 3 * 0.75 * dpi**2 <= grey <= 3 * dpi**2  # three grey cells, less their captions
    for kind, item in [("im2s", "002"), ("fwplus16", "005"), ("input", "001")]:
        assert not colour_mask(img, colour(kind, item)).any()
    assert colour_mask(img, colour("im2s", "007")).sum() > 0.85 * dpi**2


def test_grid_errors(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no samples for transform 'T50'.*'identity', 'rotate:20'"):
        figure_grid(run, "T50", tmp_path / "g.png")
    with pytest.raises(ValueError, match="max_items"):
        figure_grid(run, "identity", tmp_path / "g.png", max_items=0)
    with pytest.raises(RunDirError, match=r"missing results\.csv"):
        figure_grid(run / "samples", "identity", tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_safe_label() -> None:
    assert safe_label("rotate:20") == "rotate_20"
    assert safe_label("translate:30,-10") == "translate_30_-10"
    assert safe_label("rotate:10+scale:1.125") == "rotate_10_scale_1.125"
    assert safe_label("../x") == "x" and safe_label("::") == "_"


def test_metric_curve_writes_png(tmp_path: Path) -> None:
    summary = pd.DataFrame(
        {
            "method": ["a", "a", "b"],
            "transform": ["identity", "T50", "identity"],
            "metric": ["psnr"] * 3,
            "mean": [25.0, 24.0, 22.0],
            "std": [0.5, 0.4, float("nan")],
            "n": [4, 4, 1],
            "n_failed": [0, 0, 0],
        }
    )
    path = metric_curve(summary, "psnr", tmp_path / "c.png", higher_is_better=True)
    assert pixels(path).shape[0] > 100
    with pytest.raises(ValueError, match="'ssim' not in summary"):
        metric_curve(summary, "ssim", tmp_path / "d.png")


def test_metric_curve_from_real_summary(run: Path, tmp_path: Path) -> None:
    path = metric_curve(summary_table(load_results([run])), "psnr", tmp_path / "c.png")
    assert path.is_file()
