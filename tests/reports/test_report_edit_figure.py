"""Tests for the edit figure, edit rows kept out of the reconstruction grid, and the HTML figure budget."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reports import figure_grid, write_html, write_report
from reports.edit_figure import (
    EDIT_GAP_PX,
    GROUP_GAP_PX,
    LABEL_PX,
    TITLE_PX,
    edit_columns,
    edit_figure,
    has_edit_samples,
)
from reports.figures import GAP_IN, MISSING_GREY, TITLE_IN, cell_dpi, split_edit_kind
from reports.html import choose_figures, key_transforms
from tests.reports.images import mask as colour_mask
from tests.reports.images import pixels

METHODS = ["fwplus16", "im2s", "w"]  # w has no edited samples (a method that cannot edit)
EDITS = ["age:+2", "smile:+1", "age:-2", "age:-1", "smile:-1", "age:+1"]  # run order, not figure order
COLUMNS = ["age -2", "age -1", "age +1", "age +2", "smile -1", "smile +1"]  # grouped, by strength
ITEMS = ["s-1", "s-0"]
TRANSFORMS = {"identity": {}, "T150": {"translation": [9.0, 0.0]}, "T50": {"translation": [3.0, 0.0]},
              "R30": {"angle": 30.0}, "S3/4": {"scale": 0.75}, "S5/4": {"scale": 1.25}, "S7/8": {"scale": 0.875}}
RES = 64


def kinds(method: str) -> list[str]:
    return [method] + ([f"{method} {e}" for e in EDITS] if method != "w" else [])


ALL_KINDS = ["input", *(k for m in METHODS for k in kinds(m))]


def colour(kind: str, item: str, transform: str) -> tuple[int, int, int]:
    """A distinct solid colour per sample (no two equal, none white, black or the missing grey)."""
    k = ALL_KINDS.index(kind)
    return (10 + 12 * k, 40 + 100 * ITEMS.index(item), 20 + 30 * list(TRANSFORMS).index(transform))


def make_run(root: Path) -> Path:
    run = root / "run"
    (run / "samples").mkdir(parents=True)
    rows = [{"item": i, "method": m, "transform": t, "seed": 0, "metric": metric, "value": 20.0, "status": "ok"}
            for m in METHODS for t in TRANSFORMS for i in ITEMS for metric in ("psnr", "edit[age:+2]/psnr")]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    info = {name: {"higher_is_better": True, "range": [0, 100], "available": True}
            for name in ("psnr", "edit[age:+2]/psnr")}
    (run / "metrics.json").write_text(json.dumps(info))
    params = [{"item": i, "transform": t, "params": json.dumps({"angle": 0.0, "translation": [0.0, 0.0],
                                                                "scale": 1.0, **p})}
              for t, p in TRANSFORMS.items() for i in ITEMS]
    pd.DataFrame(params).to_csv(run / "transforms.csv", index=False)
    index = []
    for t in TRANSFORMS:
        for i in ITEMS:
            for kind in ALL_KINDS:
                rel = f"{len(index)}.png"
                Image.fromarray(np.full((RES, RES, 3), colour(kind, i, t), np.uint8)).save(run / "samples" / rel)
                index.append({"item": i, "transform": t, "kind": kind, "path": rel})
    pd.DataFrame(index).to_csv(run / "samples" / "index.csv", index=False)
    return run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def test_edit_kinds_and_columns() -> None:
    assert split_edit_kind("im2s smile:+2", ["im2s"]) == ("im2s", "smile", 2.0)
    assert split_edit_kind("im2s dirs/my dir.npy:-0.5", ["im2s"]) == ("im2s", "dirs/my dir.npy", -0.5)
    assert split_edit_kind("im2s smile:+2", ["w"]) is None  # not an edit of a known kind
    assert split_edit_kind("<b>x y:1</b>", ["<b>x"]) is None and split_edit_kind("im2s", ["im2s"]) is None
    assert [c.title for c in edit_columns(ALL_KINDS)] == COLUMNS
    assert edit_columns(["input", "im2s"]) == []


def test_grid_has_no_edit_rows(run: Path, tmp_path: Path) -> None:
    img = pixels(figure_grid(run, "R30", tmp_path / "g.png"))
    dpi = cell_dpi(RES)
    pitch = dpi + round(GAP_IN * dpi)
    assert img.shape[0] == round(TITLE_IN * dpi) + (1 + len(METHODS)) * pitch  # input + one row per method
    for item in ITEMS:
        for kind in ALL_KINDS:
            drawn = colour_mask(img, colour(kind, item, "R30")).sum()
            assert drawn == (0 if " " in kind else dpi**2), (kind, item)


def test_edit_figure_layout(run: Path, tmp_path: Path) -> None:
    png = edit_figure(run, "R30", tmp_path / "e.png")
    assert (tmp_path / "e.pdf").read_bytes().startswith(b"%PDF")
    img = pixels(png)
    pitch = RES + EDIT_GAP_PX  # native resolution: a 64 px sample is a 64 px cell
    cols = 2 + len(COLUMNS)
    assert img.shape[:2] == (TITLE_PX + len(METHODS) * pitch, LABEL_PX + cols * pitch + 2 * GROUP_GAP_PX)
    item = ITEMS[0]  # the first sample item by default
    assert not any(colour_mask(img, colour(k, ITEMS[1], "R30")).any() for k in ALL_KINDS)
    for r, method in enumerate(METHODS):
        titles = {"input": "input", method: "recon", **{f"{method} {e}": e.replace(":", " ") for e in EDITS}}
        y = TITLE_PX + r * pitch
        for kind, title in titles.items():
            c = ["input", "recon", *COLUMNS].index(title)
            x = LABEL_PX + c * pitch + GROUP_GAP_PX * ((c >= 2) + (c >= 6))
            cell = img[y : y + RES, x : x + RES]
            if method == "w" and c >= 2:  # no edit samples: grey cells saying so
                assert (cell == MISSING_GREY).mean() > 0.8, (method, title)
            else:
                assert colour_mask(cell, colour(kind, item, "R30")).all(), (method, title)
                assert colour_mask(img, colour(kind, item, "R30")).sum() == RES * RES * (1 if kind != "input" else 3)


def test_edit_figure_item_and_errors(run: Path, tmp_path: Path) -> None:
    img = pixels(edit_figure(run, "T50", tmp_path / "e.png", item="s-0"))
    assert colour_mask(img, colour("im2s age:+2", "s-0", "T50")).sum() == RES * RES
    assert not colour_mask(img, colour("im2s age:+2", "s-1", "T50")).any()
    with pytest.raises(ValueError, match=r"no samples of item 'nope' under 'T50'"):
        edit_figure(run, "T50", tmp_path / "x.png", item="nope")
    with pytest.raises(ValueError, match=r"no samples for transform 'R99'"):
        edit_figure(run, "R99", tmp_path / "x.png")
    index = pd.read_csv(run / "samples" / "index.csv", dtype=str)
    index[~index["kind"].str.contains(" ")].to_csv(run / "samples" / "index.csv", index=False)
    assert not has_edit_samples(run)
    with pytest.raises(ValueError, match="no edited samples"):
        edit_figure(run, "T50", tmp_path / "x.png")


def test_write_report_and_html_budget(run: Path, tmp_path: Path) -> None:
    paths = write_report(run, tmp_path / "rep", edit_item="s-0")
    for t in TRANSFORMS:
        name = t.replace("/", "_")
        assert paths[f"edits_{name}.png"].with_suffix(".pdf").is_file() and f"grid_{name}.png" in paths
    pngs = [p for p in paths.values() if p.suffix == ".png"]
    assert key_transforms([run]) == {"identity", "T150", "R30", "S3_4", "S5_4"}
    embedded, left = choose_figures(pngs, [run], max_bytes=None)
    assert embedded == pngs and left == []
    per_transform = sum(p.stat().st_size for p in pngs if p.name.startswith(("grid_", "edits_")))
    budget = sum(p.stat().st_size for p in pngs) - per_transform // 5  # too small for all, not for 5 of 7
    embedded, left = choose_figures(pngs, [run], max_bytes=budget)
    assert sorted(p.name for p in left) == ["edits_S7_8.png", "edits_T50.png", "grid_S7_8.png", "grid_T50.png"]
    assert sum(p.stat().st_size for p in embedded) <= budget
    text = write_html(run, tmp_path / "r.html", pngs, max_figure_bytes=budget).read_text(encoding="utf-8")
    assert text.count("<img ") == len(embedded) and "Not embedded" in text and "grid_T50.png" in text
    # the per-edit tables are folded away below the headline ones
    assert text.index("<h3>psnr ↑</h3>") < text.index("<details><summary><b>Edit metrics</b>: 1 table,")
    assert text.index("<details><summary><b>Edit metrics") < text.index("<h3>edit[age:+2]/psnr ↑</h3>")
    embedded, left = choose_figures(pngs, [run], max_bytes=1)  # summary figures stay; the rest goes
    assert all(not p.name.startswith(("grid_", "edits_")) for p in embedded) and len(left) == 2 * len(TRANSFORMS)


def test_long_timing_is_summed_per_method_and_folded(run: Path, tmp_path: Path) -> None:
    timing = pd.DataFrame([{"method": m, "transform": t, "items": 2, "seconds": 1.0 + k}
                           for k, m in enumerate(METHODS) for t in TRANSFORMS])  # 21 rows
    timing.to_csv(run / "timing.csv", index=False)
    text = write_html(run, tmp_path / "r.html").read_text(encoding="utf-8")
    section = text.split("<h2>Timing</h2>", 1)[1]
    head, folded = section.split("<details><summary>Per transform (21 rows)</summary>", 1)
    assert "<tr><th>im2s</th><td>14</td><td>14.0</td><td>1.00</td></tr>" in head  # 7 transforms x 2 items, 2 s
    assert folded.count("<tr><th>im2s</th>") == len(TRANSFORMS)
