import numpy as np
import pytest
import torch

from bench.edits import EditSpec, load_direction, parse_edit_spec, resolve_direction, world_directions
from bench.world import procfaces


def test_parse_edit_spec():
    assert parse_edit_spec("age:-2..2/5") == EditSpec("age", (-2.0, -1.0, 0.0, 1.0, 2.0))
    assert parse_edit_spec("age:-1..1/3,3") == EditSpec("age", (-1.0, 0.0, 1.0, 3.0))
    assert parse_edit_spec("smile:-3,3") == EditSpec("smile", (-3.0, 3.0))
    assert parse_edit_spec("dirs/a:b/age.npy:1.5") == EditSpec("dirs/a:b/age.npy", (1.5,))
    for bad in ["age", "age:", ":2", "age:two", "age:2..1/1"]:
        with pytest.raises(ValueError, match="--edit"):
            parse_edit_spec(bad)


def test_npy_and_pt_directions(tmp_path):
    v = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    np.save(tmp_path / "age_w.npy", v)
    d = load_direction(tmp_path / "age_w.npy", num_ws=4, w_dim=8)
    assert d.name == "age_w" and d.vector.shape == (8,)
    assert torch.allclose(d.vector, torch.from_numpy(v[0]) / np.linalg.norm(v[0]))
    per_layer = torch.randn(1, 4, 8)
    torch.save(per_layer, tmp_path / "pose.pt")
    d = load_direction(tmp_path / "pose.pt", num_ws=4, w_dim=8)
    assert torch.equal(d.vector, per_layer[0])
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="fits neither"):
        load_direction(tmp_path / "bad.npy", num_ws=4, w_dim=8)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "idinvert.npy", np.array({"boundary": np.zeros((1, 14, 512))}, dtype=object),
            allow_pickle=True)
    with pytest.raises(ValueError, match="pickled"):
        load_direction(tmp_path / "idinvert.npy", num_ws=14, w_dim=512)


def test_world_directions_by_name():
    dirs = world_directions()
    assert list(dirs) == list(procfaces.ATTRIBUTES)
    d = resolve_direction(parse_edit_spec("smile:1"), num_ws=10, w_dim=256)
    assert torch.allclose(d.vector.norm(), torch.tensor(1.0), atol=1e-5)
    with pytest.raises(ValueError, match="Did you mean 'smile'"):
        resolve_direction(parse_edit_spec("smil:1"), num_ws=10, w_dim=256)
    with pytest.raises(ValueError, match="w_dim"):
        resolve_direction(parse_edit_spec("age:1"), num_ws=18, w_dim=512)
