"""Metric figures a reader understands without the table (issue #18): titles, units, bands, axes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import plots as pl
from reports import write_report
from reports.rundir import MetricInfo
from tests.reports.images import pixels
from tests.reports.test_report_tables import make_run

PSNR, PSNR_VALID = MetricInfo("psnr", True), MetricInfo("psnr@valid", True)


def _summary(transforms, methods=("im2s", "fwplus16"), metrics=("psnr", "psnr@valid")) -> pd.DataFrame:
    rows = [{"method": m, "transform": t, "metric": k, "mean": 20.0 + i + j, "std": 0.5, "n": 8, "n_failed": 0}
            for i, m in enumerate(methods) for j, t in enumerate(transforms) for k in metrics]
    df = pd.DataFrame(rows)
    for column in ("method", "transform", "metric"):
        df[column] = pd.Categorical(df[column], categories=list(pd.unique(df[column])), ordered=True)
    return df


@pytest.fixture
def captured(monkeypatch):
    """The figures metric_figure draws, instead of writing them."""
    figs = []

    def save(fig, out_path, dpi, **kwargs):
        figs.append(fig)
        return Path(out_path)

    monkeypatch.setattr(pl, "_save", save)
    return figs


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text()]
    for ax in fig.axes:
        parts += [ax.get_ylabel(), ax.get_xlabel(), *(t.get_text() for t in ax.get_xticklabels())]
    return "\n".join(parts)


def test_labels_carry_units_and_direction() -> None:
    assert pl.metric_label("psnr", True) == "PSNR (dB) ↑"
    assert pl.metric_label("psnr@valid", True) == "PSNR@valid (dB) ↑"
    assert pl.metric_label("mse", False) == "MSE (on [0, 1] images) ↓"
    assert pl.metric_label("ssim") == "SSIM"
    assert pl.metric_label("edit[all]/psnr", True) == "edit: PSNR (mean over all edits) (dB) ↑"
    assert pl.metric_label("edit[all]/consistency-psnr").startswith("edit consistency: PSNR")
    assert pl.metric_label("my-metric", False) == "my-metric ↓"


def test_metric_families_pair_each_metric_with_its_valid_twin() -> None:
    infos = [MetricInfo("psnr@valid", True), MetricInfo("mse", False), MetricInfo("psnr", True)]
    assert [(b, [i.name for i in v]) for b, v in pl.metric_families(infos)] == [
        ("psnr", ["psnr", "psnr@valid"]), ("mse", ["mse"])]


def test_categorical_axis_draws_points_not_lines_and_says_what_the_bars_are(captured, tmp_path) -> None:
    pl.metric_figure(_summary(["identity", "R30", "S3/4"]), [PSNR, PSNR_VALID], pl.TransformAxis(), tmp_path / "a.png")
    (fig,) = captured
    text = _texts(fig)
    assert "PSNR by transform" in text and "±1 sample std" in text and "n = 8 per point" in text
    assert "PSNR (dB) ↑\nwhole image" in text and "PSNR@valid (dB) ↑\nvalid region only" in text
    data = [c.lines[0] for ax in fig.axes for c in ax.containers]  # one errorbar per (panel, method)
    assert len(data) == 4 and all(line.get_linestyle() == "None" for line in data)  # markers only
    xs = [tuple(np.round(line.get_xdata(), 3)) for line in data[:2]]
    assert xs[0] != xs[1]  # the two methods are dodged apart, not drawn on top of each other


def test_numeric_axis_per_family_with_protocol_units(captured, tmp_path) -> None:
    magnitudes = {"identity": ("identity", 0.0), "T50": ("translation", 3.125), "T150": ("translation", 9.375),
                  "R30": ("rotation", 30.0)}
    axis = pl.TransformAxis(magnitudes, resolution=64, protocol="bdinvert-table1")
    assert axis.protocol_scale == 16
    pl.metric_figure(_summary(list(magnitudes)), [PSNR], axis, tmp_path / "b.png")
    (fig,) = captured
    text = _texts(fig)
    assert "shift (px at 64 px)" in text and "|angle| (degrees)" in text
    assert "9.38\nT150" in text and "T150 = 9.4 px here" in text and "1024 px units" in text
    top = [c for ax in fig.axes for c in ax.child_axes]  # the secondary axis in the protocol's units
    assert top and "1024 px units" in top[0].get_xlabel()
    assert sorted(np.round(top[0].get_xticks(), 6)) == [0, 50, 150]


def test_a_protocol_run_at_1024_needs_no_second_axis() -> None:
    assert pl.TransformAxis({}, resolution=1024, protocol="bdinvert-table1").protocol_scale is None


def test_report_draws_one_figure_per_metric_family(tmp_path) -> None:
    run = make_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "psnr@valid": metrics["psnr"]}))
    raw = pd.read_csv(run / "results.csv", dtype=str)
    valid = raw[raw["metric"] == "psnr"].assign(metric="psnr@valid")
    pd.concat([raw, valid]).to_csv(run / "results.csv", index=False)
    paths = write_report([run], tmp_path / "rep")
    plots = sorted(n for n in paths if n.endswith(".png") and not n.startswith(("grid_", "transforms")))
    assert plots == ["metric_mse.png", "metric_psnr.png"]  # psnr and psnr@valid share one figure
    assert pixels(paths["metric_psnr.png"]).shape[0] > pixels(paths["metric_mse.png"]).shape[0]  # two rows


def test_with_one_method_nothing_is_bold(tmp_path) -> None:
    from reports import load_metric_info, load_results, summary_table, to_markdown

    run = make_run(tmp_path)
    raw = pd.read_csv(run / "results.csv", dtype=str)
    raw[raw["method"] == "im2s"].to_csv(run / "results.csv", index=False)
    md = to_markdown(summary_table(load_results(run)), load_metric_info(run))
    assert not [line for line in md.splitlines() if line.startswith("| im2s") and "**" in line]
