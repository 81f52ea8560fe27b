"""``bench ls metrics`` lists the world's perceptual metric and says what is available here (issue #18)."""

from click.testing import CliRunner

from bench.cli import main


def test_ls_metrics_shows_attrnet_lpips_defaults_and_availability():
    result = CliRunner().invoke(main, ["ls", "metrics"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:] if line[:1].strip()}
    assert rows["attrnet-lpips"][1:3] == ["↓", "world"]
    assert rows["psnr"][1:4] == ["↑", "all", "runs"] and rows["psnr"][4] == "available"
    for name in ("lpips-alex", "lpips-vgg"):
        assert rows[name][4] in ("available", "missing")
        if rows[name][4] == "missing":
            assert "needs torchvision's ImageNet" in result.output
