"""Report stage: tables and figures read from run directories (never from models)."""

from reports.build import write_report
from reports.edit_figure import edit_figure
from reports.figures import cell_dpi, figure_grid, safe_label
from reports.html import write_html
from reports.plots import metric_curve, metric_figure
from reports.rundir import (
    MetricInfo,
    RunDirError,
    check_run_dir,
    read_config,
    read_metrics,
    read_results,
    read_sample_index,
    read_timing,
    read_versions,
)
from reports.tables import (
    load_metric_info,
    load_results,
    summary_table,
    to_latex,
    to_markdown,
    write_csv,
)

__all__ = [
    "MetricInfo",
    "RunDirError",
    "cell_dpi",
    "check_run_dir",
    "edit_figure",
    "figure_grid",
    "load_metric_info",
    "load_results",
    "metric_curve",
    "metric_figure",
    "read_config",
    "read_metrics",
    "read_results",
    "read_sample_index",
    "read_timing",
    "read_versions",
    "safe_label",
    "summary_table",
    "to_latex",
    "to_markdown",
    "write_csv",
    "write_html",
    "write_report",
]
