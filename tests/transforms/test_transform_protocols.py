import math

import pytest
import torch

from transforms.geometric import apply_transform, sample_params
from transforms.protocols import (
    PROTOCOLS,
    REFERENCE_RESOLUTION,
    Protocol,
    expand_protocol,
    list_protocols,
    register_protocol,
)
from transforms.spec import Op

TABLE1_LABELS = ["0", "T50", "T100", "T150", "R10", "R20", "R30", "S7/8", "S3/4", "S9/8", "S5/4"]


def test_registry_lists_both_protocols():
    assert REFERENCE_RESOLUTION == 1024
    assert {"bdinvert-table1", "smoke"} <= set(list_protocols())
    assert list_protocols() == sorted(PROTOCOLS)


def test_table1_at_reference_resolution():
    specs = expand_protocol("bdinvert-table1", 1024)
    assert [s.label for s in specs] == TABLE1_LABELS
    assert specs[0].ops == ()
    # Translations: a random direction (one number); rotations: a random sign; scales as fractions.
    assert [s.ops for s in specs[1:4]] == [(Op("translate", (px,)),) for px in (50.0, 100.0, 150.0)]
    assert [s.ops for s in specs[4:7]] == [(Op("rotate", (deg,), True),) for deg in (10.0, 20.0, 30.0)]
    assert [s.ops for s in specs[7:]] == [(Op("scale", (f,)),) for f in (7 / 8, 3 / 4, 9 / 8, 5 / 4)]


def test_table1_scaled_to_64():
    specs = {s.label: s for s in expand_protocol("bdinvert-table1", 64)}
    assert len(specs) == 11
    # px = px_1024 * 64 / 1024: 50 -> 3.125, 100 -> 6.25, 150 -> 9.375; angles and scales unchanged.
    assert [specs[t].ops[0].value for t in ("T50", "T100", "T150")] == [(3.125,), (6.25,), (9.375,)]
    assert specs["R30"].ops == (Op("rotate", (30.0,), True),)
    assert specs["S9/8"].ops == (Op("scale", (1.125,)),)
    p = sample_params(specs["T150"], seed=3, resolution=64)
    assert math.hypot(*p.translation) == pytest.approx(9.375)
    assert p.label == "T150"
    assert abs(sample_params(specs["R20"], seed=3, resolution=64).angle) == 20.0


def test_odd_resolution_scales_linearly():
    (t50,) = [s for s in expand_protocol("bdinvert-table1", 100) if s.label == "T50"]
    assert t50.ops[0].value == (50 * 100 / 1024,)


def test_smoke_is_a_subset_of_table1():
    table = {s.label: s for s in expand_protocol("bdinvert-table1", 32)}
    smoke = expand_protocol("smoke", 32)
    assert [s.label for s in smoke] == ["0", "T100", "R20", "S3/4"]
    assert all(s == table[s.label] for s in smoke)


def test_protocol_specs_apply_end_to_end():
    specs = expand_protocol("smoke", 16)
    images = torch.zeros(len(specs), 3, 16, 16)
    params = [sample_params(s, seed=i, resolution=16) for i, s in enumerate(specs)]
    out = apply_transform(images, params)
    assert out.image.shape == images.shape and [p.label for p in params] == ["0", "T100", "R20", "S3/4"]


def test_unknown_protocol_suggests_and_lists():
    with pytest.raises(ValueError) as info:
        expand_protocol("bdinvert-tabel1", 64)
    message = str(info.value)
    assert "did you mean 'bdinvert-table1'" in message
    assert "bdinvert-table1, smoke" in message or all(n in message for n in list_protocols())
    with pytest.raises(ValueError, match="available"):
        expand_protocol("zzz", 64)


@pytest.mark.parametrize("resolution", [0, -64, 64.0, True])
def test_bad_resolution(resolution):
    with pytest.raises(ValueError, match="resolution"):
        expand_protocol("smoke", resolution)


def test_register_rejects_duplicates_and_bad_specs():
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(Protocol("smoke", "dup", (("0", "identity"),)))
    with pytest.raises(ValueError, match="single spec"):
        register_protocol(Protocol("test-sweep", "bad", (("R", "rotate:0..10/10"),)))
    with pytest.raises(ValueError, match="rotat"):
        register_protocol(Protocol("test-typo", "bad", (("R", "rotat:10"),)))
    assert "test-sweep" not in PROTOCOLS and "test-typo" not in PROTOCOLS
