from PIL import Image

from bench.config import RunConfig
from bench.runner import run
from reports import write_report
from reports.figures import cell_dpi, transform_figure


def test_transform_figure_and_pdf_twins(tiny_generator_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cfg = RunConfig(methods="im2s", transforms=("rotate:20", "scale:0.75"), generator=str(tiny_generator_path),
                    data="synthetic:2", n=2, steps=2, perceptual="none", device="cpu", metrics=("psnr",),
                    run_dir=str(tmp_path / "run"))
    out = run(cfg, progress=False, log=lambda m: None)
    png = transform_figure(out, tmp_path / "t.png")
    with Image.open(png) as im:
        # one 1-inch cell per transform (identity, rotate:20, scale:0.75) at the cell dpi
        assert abs(im.size[0] - 3 * cell_dpi(32)) <= 2
    assert (tmp_path / "t.pdf").read_bytes().startswith(b"%PDF")
    paths = write_report([out], tmp_path / "report")
    assert "transforms.png" in paths
    for name in paths:
        if name.endswith(".png"):
            assert (tmp_path / "report" / name).with_suffix(".pdf").is_file()


def test_family_curves_use_magnitudes_from_transforms_csv(tiny_generator_path, tmp_path, monkeypatch):
    from reports.figures import transform_magnitudes
    from reports.plots import _panels, metric_families, metric_figure, transform_axis
    from reports.rundir import read_metrics
    from reports.tables import load_results, summary_table

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cfg = RunConfig(methods="im2s", transforms=("rotate:+-10", "rotate:20", "translate:3", "scale:0.75",
                                                "rotate:10+scale:1.1"),
                    generator=str(tiny_generator_path), data="synthetic:2", n=2, steps=1, perceptual="none",
                    device="cpu", metrics=("psnr",), run_dir=str(tmp_path / "run"))
    out = run(cfg, progress=False, log=lambda m: None)
    mags = transform_magnitudes(out)
    assert mags["identity"] == ("identity", 0.0)
    assert mags["rotate:+-10"] == ("rotation", 10.0) and mags["rotate:20"] == ("rotation", 20.0)
    assert mags["translate:3"][0] == "translation" and abs(mags["translate:3"][1] - 3.0) < 1e-6
    assert mags["scale:0.75"] == ("scale", 0.75)
    assert "rotate:10+scale:1.1" not in mags  # compositions belong to no single family
    summary = summary_table(load_results([out]))
    axis = transform_axis([out])
    assert axis.resolution == 32 and axis.protocol is None and axis.protocol_scale is None
    labels = [str(t) for t in summary["transform"].cat.categories]
    assert _panels(labels, axis) == ["categorical"]  # the composition has no family: categories, points only
    assert _panels([t for t in labels if "+" not in t], axis) == ["translation", "rotation", "scale"]
    (family,) = metric_families(list(read_metrics(out).values()))
    png = metric_figure(summary, family[1], axis, tmp_path / "f.png")
    assert png is not None and png.is_file() and (tmp_path / "f.pdf").is_file()
