"""Tests for reports.html: one self-contained HTML report (tables, run info, embedded figures)."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.cli import main
from reports import load_metric_info, load_results, summary_table, write_html
from reports.html import embed_image, to_html

EVIL = "<script>alert('x')</script>&"
METHODS = ["fwplus16", "im2s", EVIL]
TRANSFORMS = ["identity", "rotate:20"]
ITEMS = ["000", "001", "002"]
METRICS = {
    "psnr": {"higher_is_better": True, "description": "PSNR on [0,1], dB", "available": True},
    "mse": {"higher_is_better": False, "description": f"MSE {EVIL}", "available": True},
    "lpips-alex": {"higher_is_better": False, "available": False, "reason": "weights <not> found"},
}
BASE_PSNR = {"fwplus16": 26.0, "im2s": 22.0, EVIL: 18.0}  # fwplus16 best on every column


def make_run(root: Path, name: str = "run_a") -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for method in METHODS:
        for transform in TRANSFORMS:
            for item in ITEMS:
                psnr = BASE_PSNR[method] + rng.normal(0, 0.3)
                failed = (item, method, transform) == ("002", "im2s", "rotate:20")
                status = f"failed: NaN loss {EVIL}" if failed else "ok"
                rows += [{"item": item, "method": method, "transform": transform, "seed": 1, "metric": m,
                          "value": v, "status": status} for m, v in (("psnr", psnr), ("mse", 10 ** (-psnr / 10)))]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "config.json").write_text(json.dumps({"methods": "fwplus16,im2s", "note": EVIL}))
    versions = {"packages": {"torch": "2.14.1", "kornia": "0.9.0"}, "git_commit": "abc1234", "device": "cpu",
                "date": "2025-01-01T00:00:00", "generator": f"embedded StyleGAN2 64px {EVIL}",
                "perceptual": "attrnet-lpips stand-in, not LPIPS"}
    (run / "versions.json").write_text(json.dumps(versions))
    pd.DataFrame({"method": ["fwplus16"], "transform": ["identity"], "items": [3], "seconds": [6.0]}).to_csv(
        run / "timing.csv", index=False)
    index = []
    for item in ITEMS[:2]:
        for kind in ["input", "fwplus16", "im2s"]:
            rel = f"{kind}_{item}.png"
            Image.fromarray(np.full((32, 32, 3), 40 + 30 * len(index), np.uint8)).save(run / "samples" / rel)
            index.append({"item": item, "transform": "rotate:20", "kind": kind, "path": rel})
    pd.DataFrame(index).to_csv(run / "samples" / "index.csv", index=False)
    return run


class Page(HTMLParser):
    """Collects tags, attributes, <img> sources and table cells as (text, bold)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.imgs, self.tables = [], [], [], []
        self._bold = 0
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", False]
        elif tag == "b":
            self._bold += 1

    def handle_endtag(self, tag):
        if tag == "b":
            self._bold -= 1
        elif tag in ("td", "th"):
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
            self._cell[1] |= self._bold > 0 and bool(data.strip())


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def metric_tables(page: Page) -> dict[str, dict[str, list[tuple[str, bool]]]]:
    """{header cell: {method: cells}} for the tables whose header names a metric with an arrow."""
    out = {}
    for table in page.tables:
        if table and table[0][0][0].endswith(("↑", "↓")):
            out[table[0][0][0]] = {row[0][0]: row[1:] for row in table[1:]}
    return out


def test_tables_have_arrows_and_bold_best(run: Path) -> None:
    summary = summary_table(load_results(run))
    tables = metric_tables(Page(to_html(summary, load_metric_info(run))))
    assert set(tables) == {"psnr ↑", "mse ↓"}  # the unavailable metric gets no table
    for rows in tables.values():
        assert list(rows) == METHODS
        assert all(bold for _, bold in rows["fwplus16"]) and len(rows["fwplus16"]) == len(TRANSFORMS)
        assert not any(bold for _, bold in rows["im2s"] + rows[EVIL])
    # Cells agree with an independent mean over the ok rows of results.csv.
    raw = pd.read_csv(run / "results.csv")
    ok = raw[(raw["status"] == "ok") & (raw["method"] == "im2s") & (raw["transform"] == "rotate:20")]
    shown = tables["psnr ↑"]["im2s"][1][0]
    assert shown.startswith(f"{ok[ok['metric'] == 'psnr']['value'].mean():.2f} ± ")


def test_report_is_self_contained(run: Path, tmp_path: Path) -> None:
    figs = []
    for i, size in enumerate([(20, 30), (8, 8)]):
        figs.append(tmp_path / f"fig{i}.png")
        Image.fromarray(np.full((*size, 3), 30 * i, np.uint8)).save(figs[-1])
    out = write_html([run], tmp_path / "out" / "report.html", figs)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert 'src="http' not in text and "http://" not in text and "https://" not in text
    assert not [v for k, v in page.attrs if k == "href"] and "link" not in page.tags and "script" not in page.tags
    assert len(page.imgs) == len(figs)
    for src, fig in zip(page.imgs, figs, strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == fig.read_bytes()
    assert "default-src 'none'" in text and '<meta charset="utf-8">' in text


def test_run_info_failures_and_unavailable(run: Path, tmp_path: Path) -> None:
    text = write_html(run, tmp_path / "r.html").read_text(encoding="utf-8")
    page = Page(text)
    info = {row[0][0]: row[1][0] for table in page.tables for row in table if len(row) == 2}
    assert info["git commit"] == "abc1234" and info["device"] == "cpu" and info["date"] == "2025-01-01T00:00:00"
    assert info["generator"] == f"embedded StyleGAN2 64px {EVIL}" and info["perceptual"].startswith("attrnet")
    assert info["packages"] == "torch 2.14.1, kornia 0.9.0" and info["data"] == "not recorded"
    assert "lpips-alex ↓: weights &lt;not&gt; found" in text
    failed = next(t for t in page.tables if t[0][0][0] == "run")
    assert [c[0] for c in failed[1]] == ["run_a", "002", "im2s", "rotate:20", "1", f"NaN loss {EVIL}"]
    assert len(failed) == 2  # one line per (item, method, transform, seed), not per metric
    timing = next(t for t in page.tables if t[0][0][0] == "method")
    assert [c[0] for c in timing[1]] == ["fwplus16", "identity", "3", "6.0", "2.00"]


def test_text_is_escaped(run: Path, tmp_path: Path) -> None:
    text = write_html(run, tmp_path / "r.html", title=f"Report {EVIL}").read_text(encoding="utf-8")
    assert "<script" not in text and "alert('x')" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in text
    page = Page(text)
    assert "script" not in page.tags
    # The parser sees the original text again: in the title, a method row, the config and a description.
    assert EVIL in metric_tables(page)["psnr ↑"] and text.count("&lt;script&gt;") >= 6


def test_bad_figures_are_clear_errors(run: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "curve.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"curve\.pdf: cannot embed a \.pdf file.*pass its PNG"):
        write_html(run, tmp_path / "r.html", [pdf])
    with pytest.raises(ValueError, match=r"nope\.png: no such file"):
        embed_image(tmp_path / "nope.png")
    assert not (tmp_path / "r.html").exists()
    svg = tmp_path / "a.svg"
    svg.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert embed_image(svg).startswith("data:image/svg+xml;base64,")


def test_cli_report_writes_html_with_every_figure(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "rep")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html_path = tmp_path / "rep" / "report.html"
    assert f"report.html: {html_path}" in result.output
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert "grid_rotate_20.png" in pngs
    page = Page(html_path.read_text(encoding="utf-8"))
    assert len(page.imgs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "no"), "--no-html"])
    assert result.exit_code == 0 and not (tmp_path / "no" / "report.html").exists()
