"""The identity metric (``bench.metrics.identity``) on real photos, and its failures in a run and its tables.

Photos: matplotlib's ``grace_hopper.jpg`` and scikit-image's astronaut (real faces shipped with the
packages), and geometric variants of Grace Hopper (rotated, scaled, shifted), FFHQ-aligned to the size the
metric scores at. Expected values come from outside the metric: 1 for an image with itself (the cosine of a
vector with itself), dlib's own calls (detector, shape predictor, ``compute_face_descriptor``) for the value
of a pair, dlib's documented same-person rule (Euclidean distance of the descriptors below 0.6) for which
pairs are the same person, and dlib's detector run directly on a run's saved inputs for how many rows must
fail. Tolerances: 1e-6 for the self-similarity, 1e-5 against dlib's own descriptors (float32 results).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.faces import faces_unavailable_reason

pytestmark = pytest.mark.skipif(bool(faces_unavailable_reason()), reason=faces_unavailable_reason() or "ok")

SELF_TOL, DLIB_TOL = 1e-6, 1e-5
DLIB_SAME_PERSON = 0.6  # dlib: descriptors closer than 0.6 (Euclidean) are the same person


@pytest.fixture(scope="module")
def photos():
    import matplotlib

    skimage_data = pytest.importorskip("skimage.data")
    grace = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
                       .convert("RGB"))
    g = Image.fromarray(grace)
    return {
        "grace": grace,
        "astronaut": skimage_data.astronaut(),
        "grace_rot10": np.asarray(g.rotate(10, resample=Image.Resampling.BICUBIC, expand=True,
                                           fillcolor=(128, 128, 128))),
        "grace_scale0.6": np.asarray(g.resize((307, 360), Image.Resampling.LANCZOS)),
        "grace_shift": np.ascontiguousarray(np.pad(grace, ((40, 0), (0, 60), (0, 0)), mode="edge")),
    }


def aligned(photos, size):
    from bench.faces import align_photo

    return {k: align_photo(v, size, transform_size=4 * size).image for k, v in photos.items()}


def tensor(*images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class DlibDirect:
    """dlib called the way its examples do, with the metric's documented choice: the face found in the
    target, landmarks fitted in each image inside that box, the descriptors' cosine."""

    def __init__(self):
        import dlib

        from bench.faces import MODEL_FILES, face_models

        folder = face_models().folder
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(folder / MODEL_FILES["landmarks"]))
        self.rec = dlib.face_recognition_model_v1(str(folder / MODEL_FILES["recognition"]))

    def upsample(self, side):  # documented in the metric: x2 steps until the side reaches 400 px, at least one
        return max(1, int(np.ceil(np.log2(400 / side)))) if side < 400 else 1

    def box(self, img):
        dets = self.detector(img, self.upsample(img.shape[0]))
        return dets[0] if len(dets) else None

    def descriptor(self, img, box):
        return np.array(self.rec.compute_face_descriptor(img, self.shape(img, box), 0))

    def pair(self, pred, target):
        box = self.box(target)
        a, b = self.descriptor(pred, box), self.descriptor(target, box)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), float(np.linalg.norm(a - b))


@pytest.fixture(scope="module")
def dlib_direct():
    return DlibDirect()


@pytest.mark.parametrize("size", [64, 256])
def test_identity_of_a_face_with_itself_is_one(photos, size):
    from bench.metrics import build_metrics

    (metric,) = build_metrics(["identity"], device="cpu")
    faces = aligned({k: photos[k] for k in ("grace", "astronaut")}, size)
    x = tensor(faces["grace"], faces["astronaut"])
    values = metric(x, x)
    np.testing.assert_allclose(values.numpy(), 1.0, atol=SELF_TOL)
    assert metric.item_failures() == [None, None]
    np.testing.assert_allclose(metric(x, x, mask=torch.ones(2, 1, size, size)).numpy(), 1.0, atol=SELF_TOL)


@pytest.mark.parametrize("size", [64, 256])
def test_same_person_scores_higher_than_another_person(photos, dlib_direct, size):
    """Variants of Grace Hopper against Grace Hopper beat the astronaut against Grace Hopper; dlib's own
    descriptors give the same values and its same-person rule agrees on which pairs are one person."""
    from bench.metrics import build_metrics

    (metric,) = build_metrics(["identity"], device="cpu")
    faces = aligned(photos, size)
    others = ["grace_rot10", "grace_scale0.6", "grace_shift", "astronaut"]
    values = metric(tensor(*(faces[k] for k in others)), tensor(*[faces["grace"]] * len(others))).numpy()
    direct = {k: dlib_direct.pair(faces[k], faces["grace"]) for k in others}
    np.testing.assert_allclose(values, [direct[k][0] for k in others], atol=DLIB_TOL)
    stranger = values[-1]
    assert all(v > stranger for v in values[:-1]), dict(zip(others, values, strict=True))
    assert all(direct[k][1] < DLIB_SAME_PERSON for k in others[:-1])  # dlib: the same person
    assert direct["astronaut"][1] > DLIB_SAME_PERSON  # dlib: another person


def test_a_blank_target_is_a_recorded_failure(photos, dlib_direct):
    from bench.metrics import build_metrics

    (metric,) = build_metrics(["identity"], device="cpu")
    faces = aligned({k: photos[k] for k in ("grace", "astronaut")}, 64)
    face = faces["grace"]
    blank = np.full_like(face, 128)
    assert dlib_direct.box(blank) is None  # dlib finds no face in it either
    values = metric(tensor(face, blank), tensor(face, blank)).numpy()
    reasons = metric.item_failures()
    assert abs(values[0] - 1) < SELF_TOL and np.isnan(values[1])
    assert reasons[0] is None and reasons[1].startswith("no face detected in the target")
    # a blank *reconstruction* of a real face is scored, not excused (detection runs on the target only), and
    # scores below another person's face (measured 0.81 vs 0.88: dlib's cosines are high for any pair)
    blank_pred, stranger = metric(tensor(blank, faces["astronaut"]), tensor(face, face)).numpy()
    assert metric.item_failures() == [None, None] and np.isfinite(blank_pred) and blank_pred < stranger


def test_an_edit_whose_target_has_no_face_is_a_recorded_failure(tiny_generator, tmp_path):
    """Ground-truth edits of a random 32 px generator hold no face: the identity edit rows must say so."""
    from bench.editing import edit_jobs, edit_scores, metric_name
    from bench.metrics import build_metrics
    from methods import Inversion, build_method
    from transforms import parse_transforms, sample_params

    gen = tiny_generator
    w = gen.mapping(torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(1)))
    images = gen.synthesis(w[:, None].expand(-1, gen.num_ws, -1)).clamp(-1, 1)
    inv = Inversion("im2s", {"wp": w[:, None].expand(-1, gen.num_ws, -1).clone()}, images, torch.zeros(2),
                    (None, None))
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal(gen.w_dim).astype(np.float32))
    jobs = edit_jobs([f"{tmp_path / 'd.npy'}:2"], gen)
    params = [sample_params(parse_transforms("identity")[0], seed=i, resolution=gen.resolution) for i in range(2)]
    failures = {}
    scores, _ = edit_scores(build_method("im2s"), inv, gen, jobs, build_metrics(["identity", "mse"], device="cpu"),
                            w, params, torch.ones(2, 1, 32, 32), torch.ones(2, dtype=torch.bool), failures=failures)
    name = metric_name(jobs[0], "identity")
    assert torch.isnan(scores[name]).all()
    assert set(failures) == {name, name + "@valid"}
    assert all(r.startswith("no face detected in the target") for r in failures[name])
    assert metric_name(jobs[0], "mse") not in failures


def _face_folder(photos, folder: Path) -> Path:
    """Grace Hopper and the astronaut FFHQ-aligned at the embedded world's 64 px, and a blank grey image."""
    folder.mkdir()
    faces = aligned({k: photos[k] for k in ("grace", "astronaut")}, 64)
    for name, img in (*faces.items(), ("blank", np.full((64, 64, 3), 128, np.uint8))):
        Image.fromarray(img).save(folder / f"{name}.png")
    return folder


def _identity_rows_are_honest(df: pd.DataFrame) -> pd.DataFrame:
    """Every identity-family row: NaN only when failed, failed only with the detector's reason."""
    ident = df[df["metric"].str.contains("identity")]
    assert not (ident["value"].isna() & (ident["status"] == "ok")).any()  # no NaN passes as ok
    failed = ident[ident["status"] != "ok"]
    assert failed["value"].isna().all() and failed["status"].str.contains("no face detected").all()
    return ident


@pytest.mark.slow
def test_run_records_identity_failures_per_method_and_transform(photos, dlib_direct, tmp_path, monkeypatch):
    """A small run of two methods on face photos and a blank image: every identity failure is a row (status
    and reason), the tables count them per (method, transform), and the counts are what dlib itself finds.
    With --edit, the consistency rows of identity (edit of T(x) vs T(edit of x)) fail the same way when the
    detector finds no face in their target, instead of a NaN marked ok."""
    from bench.config import RunConfig
    from bench.runner import run
    from reports.build import write_report

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    src = _face_folder(photos, tmp_path / "faces")
    cfg = RunConfig(methods="psp,im2s", transforms=("rotate:90",), data=f"folder:{src}", steps=1, device="cpu",
                    run_dir=str(tmp_path / "run"), metrics=("identity", "psnr"), edits=("smile:2",))
    out = run(cfg, progress=False, log=lambda m: None)
    df = pd.read_csv(out / "results.csv")
    ident = _identity_rows_are_honest(df)
    assert len(df[df["metric"].isin(["identity", "identity@valid"])]) == 3 * 2 * 2 * 2  # nothing dropped
    cons = ident[ident["metric"].str.startswith("edit[smile:+2]/consistency-identity")]
    assert len(cons) == 3 * 2 * 2 and set(cons["transform"]) == {"rotate:90"}  # items x methods x (whole, @valid)
    failed_cons = cons[cons["status"] != "ok"]
    assert len(failed_cons) >= 1
    assert failed_cons["status"].str.startswith("failed: edit[smile:+2]/consistency-identity").all()

    # expected failures: dlib's detector on the inputs the run saved (the transformed targets)
    index = pd.read_csv(out / "samples" / "index.csv")
    inputs = index[index["kind"] == "input"]
    no_face = {(r.item, r.transform): dlib_direct.box(np.asarray(Image.open(out / "samples" / r.path)
                                                                .convert("RGB"))) is None
               for r in inputs.itertuples()}
    assert len(no_face) == 3 * 2
    expected = {t: sum(v for (_, tt), v in no_face.items() if tt == t) for t in ("identity", "rotate:90")}
    assert expected["identity"] == 1 and not no_face[("grace", "identity")]  # the blank only
    assert expected["rotate:90"] >= 1

    table = pd.read_csv(write_report(out, tmp_path / "report")["table.csv"])
    rows = table[table["metric"] == "identity"]
    assert len(rows) == 2 * 2
    for r in rows.itertuples():
        assert (r.n_failed, r.n) == (expected[r.transform], 3 - expected[r.transform]), r
    md = (tmp_path / "report" / "table.md").read_text()
    assert f"{expected['identity']} failed, {3 - expected['identity']} ok" in md


def test_edit_identity_against_its_source(photos, tiny_generator, tmp_path):
    """edit[...]/source-identity: an edit that returns its source scores 1, another person lower, and a
    source without a face is a failed row with the reason (detection on the source, as for targets)."""
    from bench.editing import SOURCE_IDENTITY, edit_jobs, edit_scores, metric_entries, metric_name
    from bench.metrics import build_metrics
    from methods import Inversion

    faces = aligned(photos, 64)
    sources = torch.cat([tensor(faces["grace"], faces["grace"]), torch.full((1, 3, 64, 64), -1.0)])
    edits = tensor(faces["grace"], faces["astronaut"], faces["grace"])

    class EditReturns:  # the only part of a Method that edit_scores calls
        def edit(self, inv, generator, direction, strength):
            return edits

    gen = tiny_generator
    np.save(tmp_path / "d.npy", np.ones(gen.w_dim, dtype=np.float32))
    jobs = edit_jobs([f"{tmp_path / 'd.npy'}:2"], gen)
    inv = Inversion("stub", {}, sources, torch.zeros(3), (None,) * 3)
    metrics = build_metrics(["identity"], device="cpu")
    failures = {}
    scores, _ = edit_scores(EditReturns(), inv, gen, jobs, metrics, None, None, torch.ones(3, 1, 64, 64),
                            torch.ones(3, dtype=torch.bool), failures=failures, sources=sources)
    name = metric_name(jobs[0], SOURCE_IDENTITY)
    value = scores[name]
    assert abs(value[0].item() - 1.0) < 1e-6 and value[1] < 0.95 and torch.isnan(value[2])
    assert failures[name][:2] == [None, None] and failures[name][2].startswith("no face detected")
    assert metric_entries(jobs, metrics, with_attributes=False)[name]["higher_is_better"] is True
