"""Released encoder formats against the official networks' outputs (fixtures from scripts/make_encoder_fixtures.py).

Each test rebuilds the seeded weights the official network ran with, writes them in the released file
layout, loads that file through ``bench.encoders.load_encoder`` and compares outputs in float32 (1e-4).
"""

import numpy as np
import pytest
import torch

from bench.encoders import load_encoder
from bench.encoders.bdinvert import load_bdinvert_pnorm
from bench.encoders.files import EncoderFileError
from bench.encoders.reference import seeded_images
from tests.bench.released_fixtures import expected, fixture, max_abs_diff, rebuild_state

TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ BDInvert


def _bdinvert_file(tmp_path, state, name="encoder_final.pth"):
    path = tmp_path / name
    torch.save({"encoder": state, "optimizer": {}, "scheduler": {}, "epoch": 9999}, path)
    return path


def test_bdinvert_encoder_matches_official(tmp_path):
    rec = fixture("bdinvert_encoder")
    path = _bdinvert_file(tmp_path, rebuild_state(rec), "encoder_x_basesize8.pth")
    enc = load_encoder(path, method="fwplus8")
    assert enc.family == "basecode" and enc.base_res == 8 and not enc.training
    s = rec["settings"]
    x = seeded_images(s["images"], s["encoder_input_shape"][1], s["images_seed"])
    assert float(x.double().sum()) == pytest.approx(s["images_checksum"], rel=1e-9)
    with torch.no_grad():
        diff = max_abs_diff(enc(x), expected("bdinvert_encoder")["f"])
    assert diff < TOL, diff


def test_bdinvert_released_shapes_load(tmp_path):
    """The FFHQ-1024 16x16 release's layout (widths 128..512, 512-channel head) loads; 12.4M parameters."""
    shapes = fixture("bdinvert_encoder")["settings"]["released_shapes"]
    state = {k: torch.zeros(v, dtype=torch.long if k.endswith("tracked") else torch.float32) for k, v in shapes.items()}
    enc = load_encoder(_bdinvert_file(tmp_path, state, "encoder_stylegan2_ffhq1024_basesize16.pth"), method="fwplus16")
    assert enc.base_res == 16 and sum(p.numel() for p in enc.parameters()) == 12_399_872


def test_bdinvert_errors_name_file_and_format(tmp_path):
    state = rebuild_state(fixture("bdinvert_encoder"))
    bad = dict(state)
    bad["model.33.weight"] = bad["model.33.weight"][:, :-1]
    with pytest.raises(EncoderFileError, match=r"enc\.pth.*BDInvert base-code encoder.*shape mismatches"):
        load_encoder(_bdinvert_file(tmp_path, bad, "enc.pth"))
    extra = {**state, "model.99.weight": torch.zeros(1)}
    with pytest.raises(EncoderFileError, match="unexpected keys"):
        load_encoder(_bdinvert_file(tmp_path, extra, "enc.pth"))
    with pytest.raises(EncoderFileError, match=r"base size 16, method 'fwplus8' needs 8"):
        load_encoder(_bdinvert_file(tmp_path, state, "e_basesize16.pth"), method="fwplus8")
    with pytest.raises(EncoderFileError, match=r"a basecode encoder, but method 'psp' needs a psp"):
        load_encoder(_bdinvert_file(tmp_path, state, "enc.pth"), method="psp")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(EncoderFileError, match=r"junk\.pth: cannot be read as a weights-only torch file"):
        load_encoder(tmp_path / "junk.pth")


def test_bdinvert_refuses_code_in_pickle(tmp_path):
    """A checkpoint holding an arbitrary object is refused (weights_only), not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"encoder": {"model.0.weight": torch.zeros(1)}, "x": np.dtype("float32").type}, path)
    with pytest.raises(EncoderFileError, match="weights-only"):
        load_encoder(path)


def test_bdinvert_pnorm_matches_project_w2pN(tmp_path):
    e = expected("bdinvert_pnorm")
    for name in ("mean_latent", "eigen_values", "eigen_vectors"):
        np.save(tmp_path / f"{name}.npy", e[name].numpy())
    stats = load_bdinvert_pnorm(tmp_path)
    assert max_abs_diff(stats.whiten(e["w"]), e["projected"]) < TOL
    np.save(tmp_path / "eigen_values.npy", -e["eigen_values"].numpy())
    with pytest.raises(EncoderFileError, match=r"eigen_values\.npy: 32 eigenvalues <= 0"):
        load_bdinvert_pnorm(tmp_path)
    np.save(tmp_path / "eigen_values.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EncoderFileError, match="pickled files are refused"):
        load_bdinvert_pnorm(tmp_path / "mean_latent.npy")
