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
from tests.bench.released_fixtures import FIXTURES, expected, fixture, max_abs_diff, rebuild_state

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


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


# ------------------------------------------------------------------------------------------------ pSp / e4e


def _tiny_decoder():
    from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator

    torch.manual_seed(3)
    return StyleGAN2Generator(GeneratorConfig(32, w_dim=512, n_mlp=2, channels={4: 16, 8: 16, 16: 16, 32: 16}))


@pytest.fixture(scope="module")
def psp_checkpoint():
    """A pSp checkpoint object in the released layout: seeded IR-SE-50 encoder (8 styles), a 32 px decoder."""
    rec = fixture("psp_encoder")
    state = rebuild_state(rec, tuple(rec["settings"]["unit_std"]))
    decoder = _tiny_decoder()
    sd = {f"encoder.{k}": v for k, v in state.items()}
    sd |= {f"decoder.{k}": v for k, v in decoder.state_dict().items() if k != "w_avg"}
    opts = {"encoder_type": "GradualStyleEncoder", "input_nc": 3, "output_size": 32, "start_from_latent_avg": True,
            "learn_in_w": False, "checkpoint_path": None}
    return {"state_dict": sd, "opts": opts, "latent_avg": expected("psp_encoder")["latent_avg"]}, decoder


def _codes_input(name: str) -> torch.Tensor:
    s = fixture(name)["settings"]
    x = seeded_images(s["images"], s["side"], s["images_seed"])
    assert float(x.double().sum()) == pytest.approx(s["images_checksum"], rel=1e-9)
    return x


@pytest.mark.slow
def test_psp_and_e4e_encoders_match_official(tmp_path, psp_checkpoint):
    """Full-width IR-SE-50 encoders (123M seeded weights, 8 styles) against GradualStyleEncoder / Encoder4Editing."""
    from bench.encoders import psp_release

    obj, _ = psp_checkpoint
    path = tmp_path / "psp_test.pt"
    torch.save(obj, path)
    enc = load_encoder(path, method="psp")
    path.unlink()
    assert enc.family == "psp" and enc.config.num_ws == 8 and enc.config.input_size == 256
    x = _codes_input("psp_encoder")
    exp = expected("psp_encoder")
    with torch.no_grad():
        assert max_abs_diff(enc.net(x), exp["codes"]) < TOL
        assert max_abs_diff(enc(x), exp["with_avg"]) < TOL
    e4e_obj = {**obj, "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 32, "start_from_latent_avg": True}}
    e4e = psp_release.encoder_from_checkpoint(e4e_obj, "e4e_test.pt")
    exp = expected("e4e_encoder")
    assert fixture("e4e_encoder")["checksums"] == fixture("psp_encoder")["checksums"]  # same seeded weights
    with torch.no_grad():
        assert max_abs_diff(e4e.net(x), exp["codes"]) < TOL
        assert max_abs_diff(e4e(x), exp["with_avg"]) < TOL


@pytest.mark.parametrize("name", ["psp_encoder", "e4e_encoder"])
def test_psp_released_layout_keys(name):
    """The FFHQ-1024 layout (18 styles) has exactly the official keys and shapes (built on the meta device)."""
    from bench.encoders.psp_release import GradualStyleNet

    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in GradualStyleNet(18, e4e=name.startswith("e4e")).state_dict().items()}
    assert ours == fixture(name)["settings"]["released_shapes"]


def test_psp_decoder_is_the_generator(tmp_path, psp_checkpoint):
    """--generator PSP.pt gives the checkpoint's decoder; a wrong opts or a missing key is named."""
    from bench.encoders import psp_release

    obj, decoder = psp_checkpoint
    light = {**obj, "state_dict": {k: v for k, v in obj["state_dict"].items() if k.startswith("decoder.")}
             | {"encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3)}}
    path = tmp_path / "psp_decoder.pt"
    torch.save(light, path)
    gen = psp_release.load_generator_file(path)
    assert "decoder of psp_decoder.pt" in gen.description
    assert torch.equal(gen.w_avg, obj["latent_avg"][0])
    ws = torch.randn(2, gen.num_ws, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_abs_diff(gen.synthesis(ws), decoder.synthesis(ws)) == 0.0
    with pytest.raises(EncoderFileError, match=r"psp_decoder\.pt: does not match the pSp/e4e .*missing keys"):
        psp_release.load_psp_encoder(path)
    bad = {**obj, "opts": {**obj["opts"], "encoder_type": "BackboneEncoderUsingLastLayerIntoW"}}
    with pytest.raises(EncoderFileError, match="encoder_type.*BackboneEncoderUsingLastLayerIntoW.*supported"):
        psp_release.encoder_from_checkpoint(bad, "x.pt")
    bad = {**obj, "opts": {**obj["opts"], "output_size": 1024}}
    with pytest.raises(EncoderFileError, match="8 map2style heads in encoder.styles, but opts give 18 styles"):
        psp_release.encoder_from_checkpoint(bad, "x.pt")


# ------------------------------------------------------------------------------------------------ IDinvert


def test_idinvert_encoder_matches_official(tmp_path):
    rec = fixture("idinvert_encoder")
    state = rebuild_state(rec)
    path = tmp_path / "styleganinv_test_encoder.pth"
    torch.save(state, path)
    enc = load_encoder(path, method="idinvert")
    assert enc.family == "idinvert" and (enc.num_ws, enc.w_dim, enc.resolution) == (8, 16, 32)
    s = rec["settings"]
    x = seeded_images(s["images"], s["resolution"], s["images_seed"])
    assert float(x.double().sum()) == pytest.approx(s["images_checksum"], rel=1e-9)
    with torch.no_grad():
        assert max_abs_diff(enc(x), expected("idinvert_encoder")["codes"]) < TOL
    no_counts = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(no_counts, path)
    load_encoder(path)  # num_batches_tracked may be absent (PyTorch's own loader allows it)
    torch.save({**state, "block9.fc.weight": torch.zeros(3)}, path)
    with pytest.raises(EncoderFileError, match="IDinvert encoder"):
        load_encoder(path)


def test_idinvert_released_layout_keys():
    from bench.encoders.idinvert_release import ReleasedIDInvertEncoder

    with torch.device("meta"):
        enc = ReleasedIDInvertEncoder(256)
    assert {k: list(v.shape) for k, v in enc.state_dict().items()} == \
        fixture("idinvert_encoder")["settings"]["released_shapes"]
    assert enc.num_ws == 14


def test_idinvert_vgg16_matches_official(tmp_path):
    from bench.encoders.idinvert_release import load_idinvert_vgg16

    rec = fixture("idinvert_vgg16")
    path = tmp_path / "vgg16.pth"
    torch.save(rebuild_state(rec), path)
    vgg = load_idinvert_vgg16(path)
    s = rec["settings"]
    y = seeded_images(s["images"], s["side"], s["images_seed"])
    exp = expected("idinvert_vgg16")["features"]
    with torch.no_grad():
        feats = vgg.features(y)
        assert max_abs_diff(feats, exp) < TOL * max(1.0, float(exp.abs().max()))
        d = vgg(y, y.flip(0))
    ref = (exp - exp.flip(0)).square().flatten(1).mean(1)
    assert torch.allclose(d, ref, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ SeFa


def test_sefa_matches_factorize_weight():
    """Directions and eigenvalues equal genforce/sefa's (sorted by eigenvalue, up to sign)."""
    from bench.encoders.sefa import parse_rows, sefa
    from bench.generators.checkpoints import load_rosinality

    gen = load_rosinality(FIXTURES / "tiny_rosinality.pt")
    exp = expected("sefa")
    for label, spec in (("all", "all"), ("rows0_3", "0-3")):
        rows = parse_rows(spec, gen.num_ws)
        assert list(rows) == exp[f"{label}_rows"].tolist()
        ours = sefa(gen, rows, k=gen.w_dim)
        order = exp[f"{label}_values"].argsort(descending=True)
        ref_vals, ref_vecs = exp[f"{label}_values"][order], exp[f"{label}_vectors"][order]
        assert torch.allclose(ours.eigenvalues, ref_vals, rtol=1e-4, atol=1e-4)
        top = 8  # well-separated leading eigenvalues: each direction is unique up to sign
        cos = (ours.directions[:top] * ref_vecs[:top]).sum(1).abs()
        assert float((1 - cos).max()) < 1e-4, cos
