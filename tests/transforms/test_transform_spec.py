import doctest

import pytest

import transforms.spec as spec_module
from transforms.spec import GRAMMAR, MAX_SWEEP_VALUES, Op, TransformSpec, TransformSpecError, parse_transforms

R, T, S = "rotate", "translate", "scale"


@pytest.mark.parametrize(
    ("text", "ops", "label"),
    [
        ("identity", (), "identity"),
        ("none", (), "identity"),
        ("0", (), "identity"),
        (" Identity ", (), "identity"),
        ("rotate:20", (Op(R, (20.0,)),), "rotate:20"),
        ("rotate:-20", (Op(R, (-20.0,)),), "rotate:-20"),
        ("rotate:+-20", (Op(R, (20.0,), True),), "rotate:+-20"),
        ("rotate:2.5", (Op(R, (2.5,)),), "rotate:2.5"),
        ("translate:50", (Op(T, (50.0,)),), "translate:50"),
        ("translate:30,-10", (Op(T, (30.0, -10.0)),), "translate:30,-10"),
        ("translate: 30 , -10 ", (Op(T, (30.0, -10.0)),), "translate:30,-10"),
        ("scale:0.75", (Op(S, (0.75,)),), "scale:0.75"),
        ("scale:1e-1", (Op(S, (0.1,)),), "scale:0.1"),
        ("rotate:10+scale:1.125", (Op(R, (10.0,)), Op(S, (1.125,))), "rotate:10+scale:1.125"),
        ("rotate:+-20+scale:1.1", (Op(R, (20.0,), True), Op(S, (1.1,))), "rotate:+-20+scale:1.1"),
        ("ROTATE:10 + Scale:2", (Op(R, (10.0,)), Op(S, (2.0,))), "rotate:10+scale:2"),
        (
            "translate:3,-4+rotate:-5+scale:1.5",
            (Op(T, (3.0, -4.0)), Op(R, (-5.0,)), Op(S, (1.5,))),
            "translate:3,-4+rotate:-5+scale:1.5",
        ),
    ],
)
def test_valid_single_specs(text, ops, label):
    (spec,) = parse_transforms(text)
    assert spec.ops == ops
    assert spec.label == label
    assert spec.is_identity == (ops == ())


def test_label_round_trips_through_parser():
    for text in ["rotate:+-20+scale:1.1", "translate:30,-10", "scale:0.875", "identity"]:
        (spec,) = parse_transforms(text)
        assert parse_transforms(spec.label) == [spec]


def test_sweep_expands_inclusive():
    specs = parse_transforms("rotate:0..30/10")
    assert [s.label for s in specs] == ["rotate:0", "rotate:10", "rotate:20", "rotate:30"]
    assert [s.ops[0].value for s in specs] == [(0.0,), (10.0,), (20.0,), (30.0,)]
    assert [s.label for s in parse_transforms("translate:0..150/50")] == [
        "translate:0", "translate:50", "translate:100", "translate:150",
    ]


def test_sweep_is_float_safe():
    values = [s.ops[0].value[0] for s in parse_transforms("scale:0.1..1/0.1")]
    # 0.1 + 8 * 0.1 accumulates to 0.9000000000000001 and (1 - 0.1) / 0.1 to 8.999999999999998 in floats.
    assert values == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_transforms("rotate:-1..1/0.5")[0].label == "rotate:-1"
    # 0.3 / 0.1 == 2.9999999999999996: a naive floor would drop the inclusive stop.
    assert [s.label for s in parse_transforms("rotate:0..0.3/0.1")] == [f"rotate:{v}" for v in (0, 0.1, 0.2, 0.3)]
    assert len(parse_transforms("rotate:0..1/0.3")) == 4  # 0, 0.3, 0.6, 0.9: stop not hit is fine


def test_sweep_inside_composition():
    specs = parse_transforms("rotate:+-0..20/10+scale:1.1")
    assert [s.label for s in specs] == [f"rotate:+-{a}+scale:1.1" for a in (0, 10, 20)]
    specs = parse_transforms("translate:0..2/1,-10")
    assert [s.ops[0].value for s in specs] == [(0.0, -10.0), (1.0, -10.0), (2.0, -10.0)]


def test_sweep_limit():
    assert len(parse_transforms(f"rotate:1..{MAX_SWEEP_VALUES}/1")) == MAX_SWEEP_VALUES
    with pytest.raises(TransformSpecError, match="more than 1000"):
        parse_transforms(f"rotate:0..{MAX_SWEEP_VALUES}/1")


def test_several_specs_concatenate_in_order():
    labels = [s.label for s in parse_transforms("identity; rotate:0..10/10;translate:5")]
    assert labels == ["identity", "rotate:0", "rotate:10", "translate:5"]
    labels = [s.label for s in parse_transforms(["scale:2", "rotate:1;rotate:2", "none"])]
    assert labels == ["scale:2", "rotate:1", "rotate:2", "identity"]
    assert parse_transforms("rotate:1;") == parse_transforms("rotate:1")


BAD_SPECS = [
    ("rotat:10", "did you mean 'rotate'"),
    ("tranlate:5", "did you mean 'translate'"),
    ("shear:5", "unknown op 'shear'"),
    ("rotate", "needs a number"),
    ("rotate:", "needs a number"),
    ("rotate:+-", "needs a number"),
    ("scale:1,2", "takes 1 number"),
    ("translate:1,2,3", "takes 1 or 2 number"),
    ("rotate:abc", "'abc' is not a number"),
    ("translate:5,", "'' is not a number"),
    ("rotate:nan", "not a finite number"),
    ("scale:inf", "not a finite number"),
    ("rotate:+inf", "not a finite number"),
    ("scale:0", "scale factor must be > 0"),
    ("scale:-0.5", "scale factor must be > 0"),
    ("scale:+-2", "only allowed for rotate"),
    ("translate:-5", "must be >= 0 px"),
    ("rotate:30..0/10", "empty sweep"),
    ("rotate:0..30/0", "step must be > 0"),
    ("rotate:0..30/-10", "step must be > 0"),
    ("rotate:0..30", "START..STOP/STEP"),
    ("rotate:0..1/0.0001", "more than 1000"),
    ("scale:0..1/0.5", "scale factor must be > 0"),
    ("rotate:0..2/1+scale:1..2/1", "only one sweep"),
    ("identity+rotate:10", "cannot be combined"),
    ("rotate:10+", "'10+' is not a number"),
    ("rotate:+--20", "magnitude >= 0"),
    ("", "no transform given"),
    (" ; ", "no transform given"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_SPECS)
def test_bad_specs_raise_with_quote_and_grammar(text, fragment):
    with pytest.raises(TransformSpecError) as info:
        parse_transforms(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text.strip()) in message or repr(text) in message
    assert GRAMMAR in message
    assert isinstance(info.value, ValueError)


def test_error_names_the_offending_part_of_a_composition():
    with pytest.raises(TransformSpecError) as info:
        parse_transforms("rotate:10+scale:0+translate:3")
    assert "'rotate:10+scale:0+translate:3'" in str(info.value)
    assert "in 'scale:0'" in str(info.value)
    assert info.value.part == "scale:0"


def test_error_in_a_later_spec_of_a_list_quotes_that_spec():
    with pytest.raises(TransformSpecError, match="'rotate:1x'"):
        parse_transforms(["rotate:1", "rotate:1x"])


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse_transforms([1.0])


@pytest.mark.parametrize(
    ("kind", "value", "random_sign"),
    [
        ("shear", (1.0,), False),
        ("rotate", (1.0, 2.0), False),
        ("rotate", (-1.0,), True),
        ("translate", (1.0,), True),
        ("scale", (0.0,), False),
        ("rotate", (float("nan"),), False),
    ],
)
def test_op_validates_direct_construction(kind, value, random_sign):
    with pytest.raises(ValueError):
        Op(kind, value, random_sign)


def test_canonical_label():
    assert TransformSpec.canonical_label([]) == "identity"
    ops = [Op(R, (7.5,), True), Op(T, (0.0, 2.0))]
    assert TransformSpec.canonical_label(ops) == "rotate:+-7.5+translate:0,2"


def test_docstring_examples_run():
    assert doctest.testmod(spec_module, raise_on_error=True).attempted > 0
