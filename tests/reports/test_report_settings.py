"""Each method's resolved settings in every report header and table caption: Markdown, CSV, LaTeX, HTML (#18)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reports import load_results, summary_table, write_report
from reports.html import write_html
from reports.tables import add_settings, method_settings
from tests.reports.test_report_tables import make_run

PERCEPTUAL = "attrnet-lpips: LPIPS-style distance over the embedded world's attribute net"


def _settings(steps: int, lr: float, precision: str, batch: int) -> dict:
    entry = {"precision": precision, "batch_size": batch, "perceptual": PERCEPTUAL}
    return {"im2s": {**entry, "params": {"steps": steps, "lr": lr, "mse_weight": 1.0, "perceptual_weight": 1.0}},
            "fwplus16": {**entry, "params": {"base_res": 16, "steps": steps, "lr": 0.01, "perceptual_weight": 10.0}}}


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_run(tmp_path, "run_a")
    b = tmp_path / "run_b"
    shutil.copytree(a, b)
    for run, settings in ((a, _settings(20, 0.01, "fp32", 8)), (b, _settings(10, 0.02, "bf16", 4))):
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "method_settings": settings}))
    return a, b


IM2S_A = ("steps 20, lr 0.01, mse_weight 1.0, perceptual_weight 1.0; perceptual attrnet-lpips; precision fp32, "
          "batch 8")
IM2S_B = ("steps 10, lr 0.02, mse_weight 1.0, perceptual_weight 1.0; perceptual attrnet-lpips; precision bf16, "
          "batch 4")


def test_method_settings_line_has_steps_every_parameter_perceptual_precision_and_batch(two_runs) -> None:
    lines = method_settings(two_runs[0])
    assert lines["im2s"] == IM2S_A
    assert lines["fwplus16"].startswith("steps 20, base_res 16, lr 0.01, perceptual_weight 10.0; perceptual")


def _tables(md: str) -> list[str]:
    return md.split("## Results", 1)[1].split("## Failed items", 1)[0].split("### ")[1:]


def test_two_run_report_with_different_settings_shows_them_in_header_and_every_caption(two_runs, tmp_path) -> None:
    paths = write_report(list(two_runs), tmp_path / "rep")
    md = paths["table.md"].read_text()
    header = md.split("## Results", 1)[0]
    assert f"  - im2s: {IM2S_A}\n" in header and f"  - im2s: {IM2S_B}\n" in header
    tables = _tables(md)
    assert len(tables) >= 2
    for table in tables:  # every metric's table names each of its rows' settings
        assert f"Settings of im2s [run_a]: {IM2S_A}" in table
        assert f"Settings of im2s [run_b]: {IM2S_B}" in table
        assert "Settings of fwplus16 [run_b]: steps 10," in table

    csv = pd.read_csv(paths["table.csv"])
    assert set(csv.loc[(csv["run"] == "run_b") & (csv["method"] == "im2s"), "settings"]) == {IM2S_B}
    assert set(csv.loc[(csv["run"] == "run_a") & (csv["method"] == "im2s"), "settings"]) == {IM2S_A}

    tex = paths["table.tex"].read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(f"% Settings of im2s [run_b]: {IM2S_B}\n") == len(tables)


def test_html_report_shows_the_settings_in_header_and_every_caption(two_runs, tmp_path) -> None:
    page = write_html(list(two_runs), tmp_path / "report.html").read_text()
    header = page.split("<h2>Results</h2>", 1)[0]
    assert f"<th>method im2s</th><td>{IM2S_A}</td>" in header and f"<td>{IM2S_B}</td>" in header
    results = page.split("<h2>Results</h2>", 1)[1].split("<h2>Failed items</h2>", 1)[0]
    tables = results.count("<table>")
    assert tables >= 2
    assert results.count(f"Settings of im2s [run_a]: {IM2S_A}") == tables
    assert results.count(f"Settings of im2s [run_b]: {IM2S_B}") == tables


def test_forced_pool_caption_names_each_runs_settings(two_runs, tmp_path) -> None:
    md = write_report(list(two_runs), tmp_path / "rep", pool=True, force=True)["table.md"].read_text()
    for table in _tables(md):
        assert f"Settings of im2s: [run_a] {IM2S_A} / [run_b] {IM2S_B}" in table


def test_pooled_runs_with_equal_settings_get_one_line(two_runs) -> None:
    a, b = two_runs
    shutil.copy(a / "config.json", b / "config.json")
    summary = add_settings(summary_table(load_results([a, b]), pool=True), [a, b])
    assert set(summary.loc[summary["method"] == "im2s", "settings"]) == {IM2S_A}


def test_run_without_recorded_settings_says_so(tmp_path) -> None:
    run = make_run(tmp_path, "old")
    md = write_report(run, tmp_path / "rep")["table.md"].read_text()
    assert "Settings of" not in md
    assert md.count("Method settings: not recorded (this run's config.json has no method_settings") == len(_tables(md))
