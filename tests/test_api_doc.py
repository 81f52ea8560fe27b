"""The Python example of docs/api.md runs as written (so that the documentation cannot rot)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_api_example_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # the run directory goes under ./runs of a scratch folder
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - the project's own documentation
    df, inversion = namespace["df"], namespace["inversion"]
    assert set(df["metric"]) >= {"psnr"} and (df["status"] == "ok").all()
    assert inversion.images.shape == (4, 3, 64, 64)
    out = capsys.readouterr().out
    assert "psnr:" in out and "valid region" in out
