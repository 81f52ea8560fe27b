import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.data.sets import (
    CSV_COLUMNS,
    SetRecord,
    existing_ids,
    read_set,
    safe_name,
    write_set,
)
from bench.data.sources import item_seed, open_source

R = 12
STEP = 2.0 / 255.0


def _record(item_id: str, seed: int, label: str = "rotate:20", res: int = R) -> SetRecord:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, res, res, generator=g) * 2 - 1
    mask = (torch.rand(1, res, res, generator=g) > 0.3).float()
    angle = float(seed * 3 - 7.5)
    matrix = torch.tensor([[1.0, 0.1 * seed, 2.5], [-0.1, 1.0, -3.0], [0.0, 0.0, 1.0]])
    transform = {
        "label": label,
        "angle": angle,
        "tx": 1.5,
        "ty": -2.0,
        "scale": 1.125,
        "fill": "reflection",
        "matrix": matrix,
        "extra": {"steps": (1, 2), "arr": np.arange(3)},
    }
    return SetRecord(item_id, image, mask, transform)


def _plain(transform: dict) -> dict:
    """What the transform dict should read back as: tensors, arrays and tuples become lists."""
    out = dict(transform)
    out["matrix"] = transform["matrix"].tolist()
    out["extra"] = {"steps": [1, 2], "arr": [0, 1, 2]}
    return out


def test_safe_name():
    assert safe_name("000123__rotate_20") == "000123__rotate_20"
    assert safe_name("rotate:10+scale:1.125") == "rotate_10+scale_1.125"
    assert safe_name("translate:30,-10") == "translate_30,-10"
    assert safe_name("a/b\\c d*?") == "a_b_c_d__"
    assert safe_name(".hidden").startswith("_")
    assert safe_name("CON") != "CON" and safe_name("con.png") != "con.png"
    long = safe_name("x" * 400)
    assert len(long) <= 150 and long != safe_name("x" * 399)
    for text in ("rotate:0..30/10", "ü:ñ", "../../etc/passwd", "a\nb"):
        assert re.fullmatch(r"[A-Za-z0-9_,+=-][A-Za-z0-9._,+=-]*", safe_name(text)), text
    with pytest.raises(ValueError):
        safe_name("")


def test_round_trip(tmp_path):
    labels = ["rotate:20", "scale:0.75", "rotate:10+scale:1.125/2"]
    records = [_record(f"{i:06d}__{safe_name(lbl)}", i, lbl) for i, lbl in enumerate(labels)]
    out = tmp_path / "set"
    assert write_set(out, records, info={"command": "bench make-set", "seed": 3}) == 3
    items = read_set(out, R, seed=9)
    assert [it.id for it in items] == [r.id for r in records]
    for it, rec in zip(items, records, strict=True):
        assert it.image.shape == (3, R, R) and it.mask.shape == (1, R, R)
        assert (it.image - rec.image).abs().max().item() <= STEP / 2 + 1e-6
        assert torch.equal(it.mask, rec.mask)
        assert it.transform == _plain(rec.transform)
        assert it.seed == item_seed(9, it.id)
    meta = json.loads((out / "set.json").read_text())
    assert meta["resolution"] == R and meta["count"] == 3 and meta["complete"] is True
    assert meta["creation"] == {"command": "bench make-set", "seed": 3} and isinstance(meta["version"], int)
    table = pd.read_csv(out / "transforms.csv")
    assert tuple(table.columns) == CSV_COLUMNS
    assert list(table["label"]) == ["rotate:20", "scale:0.75", "rotate:10+scale:1.125/2"]
    assert table["angle"].tolist() == [r.transform["angle"] for r in records]
    assert json.loads(table["matrix"][1]) == records[1].transform["matrix"].tolist()
    assert set(table["resolution"]) == {R} and set(table["fill"]) == {"reflection"}
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_unsafe_and_clashing_ids(tmp_path):
    ids = ["img/7__rotate:20", "img_7__rotate_20", "A", "a"]
    write_set(tmp_path, [_record(i, n) for n, i in enumerate(ids)])
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(files) == 4 and len({f.casefold() for f in files}) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9._,+=-]+\.png", f) for f in files)
    back = read_set(tmp_path, R)
    assert [it.id for it in back] == ids
    for n, it in enumerate(back):
        assert (it.image - _record(ids[n], n).image).abs().max() <= STEP / 2 + 1e-6


def test_resume_keeps_existing_ids(tmp_path):
    first = [_record("a", 1), _record("b", 2)]

    def interrupted():
        yield from first
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_set(tmp_path, interrupted(), flush_seconds=0)
    assert existing_ids(tmp_path) == {"a", "b"}
    with pytest.raises(ValueError, match="incomplete"):
        read_set(tmp_path, R)
    changed_a = _record("a", 99)  # same id, different content: must be kept as first written
    assert write_set(tmp_path, [changed_a, first[1], _record("c", 3), _record("d", 4)]) == 2
    items = {it.id: it for it in read_set(tmp_path, R)}
    assert sorted(items) == ["a", "b", "c", "d"]
    assert (items["a"].image - first[0].image).abs().max() <= STEP / 2 + 1e-6
    assert existing_ids(tmp_path / "nothing-here") == set()


def test_rewrites_a_row_whose_files_are_gone(tmp_path):
    write_set(tmp_path, [_record("a", 1)])
    (tmp_path / "masks" / "a.png").unlink()
    assert write_set(tmp_path, [_record("a", 1)]) == 1
    assert len(read_set(tmp_path, R)) == 1


def test_set_source_subset_and_items(tmp_path):
    write_set(tmp_path, [_record(f"{i:03d}", i) for i in range(6)])
    src = open_source(f"set:{tmp_path}:2", resolution=R, seed=1)
    assert src.name == "set" and len(src) == 2
    items = list(src)
    assert all(it.mask is not None and it.transform["label"] == "rotate:20" for it in items)


def test_corrupted_sets_give_clear_errors(tmp_path):
    write_set(tmp_path, [_record("a", 1), _record("b", 2)])
    with pytest.raises(ValueError, match="made at 12 px"):
        read_set(tmp_path, 16)
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"masks/b\.png"):
        read_set(tmp_path, R)
    write_set(tmp_path, [_record("b", 2)])
    csv_file = tmp_path / "transforms.csv"
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join(lines[:-1]))  # drop a row
    with pytest.raises(ValueError, match="transforms.csv"):
        read_set(tmp_path, R)
    (tmp_path / "set.json").unlink()
    with pytest.raises(ValueError, match="set.json"):
        read_set(tmp_path, R)
    with pytest.raises(ValueError, match="not a folder"):
        read_set(tmp_path / "missing", R)


def test_corrupted_image_file_names_the_file(tmp_path):
    write_set(tmp_path, [_record("a", 1)])
    (tmp_path / "images" / "a.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"images/a\.png"):
        read_set(tmp_path, R)


@pytest.mark.parametrize(
    "records, match",
    [
        ([_record("a", 1), _record("a", 2)], "duplicate"),
        ([_record("a", 1), _record("b", 2, res=16)], "16x16"),
        ([SetRecord("a", torch.full((3, R, R), 2.0), torch.ones(1, R, R), {})], "outside"),
        ([SetRecord("a", torch.zeros(3, R, R), torch.ones(R, R), {})], "mask"),
        ([SetRecord("a", torch.zeros(3, R, R), torch.ones(1, R, R), {"f": object()})], "cannot store"),
        ([], "no records"),
    ],
)
def test_bad_records_are_rejected(tmp_path, records, match):
    with pytest.raises(ValueError, match=match):
        write_set(tmp_path / "s", records)


def test_resume_with_other_resolution_is_rejected(tmp_path):
    write_set(tmp_path, [_record("a", 1)])
    with pytest.raises(ValueError, match="set is 12x12"):
        write_set(tmp_path, [_record("b", 2, res=16)])
    assert Path(tmp_path / "set.json").exists() and len(read_set(tmp_path, R)) == 1
