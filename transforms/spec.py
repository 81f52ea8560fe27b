"""The transform-spec grammar: text such as ``rotate:+-20+scale:1.1`` to :class:`TransformSpec` objects.

A spec only *describes* a transform; random parts (the sign of ``rotate:+-20``, the direction of
``translate:50``) are drawn later, per item, by :func:`transforms.geometric.sample_params`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

GRAMMAR = """\
Transform spec grammar:
  identity | none | 0                  no transform
  rotate:DEG                           rotate DEG degrees, counter-clockwise on screen (negative: clockwise)
  rotate:+-DEG                         rotate DEG degrees with a random sign drawn per item
  translate:PX                         shift PX pixels (at the working resolution) in a random direction
  translate:DX,DY                      shift DX pixels right and DY pixels down
  scale:S                              isotropic scale about the image centre, S > 0 (S > 1 zooms in)
  OP+OP+...                            composition, applied left to right (e.g. rotate:10+scale:1.125)
  any number may be a sweep START..STOP/STEP (inclusive stop, STEP > 0, at most 1000 values),
    in at most one place per spec: rotate:0..30/10 -> rotate:0, rotate:10, rotate:20, rotate:30
  several specs are separated by ';' (or given as a list) and kept in order"""

OP_KINDS = ("rotate", "translate", "scale")
IDENTITY_NAMES = ("identity", "none", "0")
MAX_SWEEP_VALUES = 1000
_ARITY = {"rotate": (1,), "translate": (1, 2), "scale": (1,)}
_EXAMPLE = {"rotate": "20", "translate": "50", "scale": "0.75"}
# Split compositions only on a '+' that starts an op name; a '+' right after ':', ',' or '-' (as in
# "rotate:+-20" or "rotate:+inf") belongs to a number.
_OP_SPLIT = re.compile(r"(?<![:,\-])\+(?=\s*[A-Za-z_])")
_SWEEP = re.compile(r"^(?P<start>[^.]*(?:\.[^.]+)?)\.\.(?P<stop>[^/]*)/(?P<step>.*)$")


class TransformSpecError(ValueError):
    """A malformed transform spec; the message quotes the spec, the bad part and the grammar."""

    def __init__(self, spec: str, problem: str, part: str | None = None) -> None:
        where = f" in {part!r}" if part is not None and part != spec else ""
        super().__init__(f"bad transform spec {spec!r}{where}: {problem}\n{GRAMMAR}")
        self.spec = spec
        self.part = part
        self.problem = problem


def format_number(value: float) -> str:
    """Shortest text for a number in a canonical label: ``20.0 -> "20"``, ``1.125 -> "1.125"``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class Op:
    """One elementary geometric operation.

    Attributes:
        kind: ``"rotate"`` (value = (degrees CCW,)), ``"translate"`` (value = (pixels,) in a random
            direction, or (dx right, dy down) in pixels) or ``"scale"`` (value = (factor,), > 0).
        value: The numbers of the op, as floats.
        random_sign: For ``rotate`` only: the sign of the angle is drawn per item.
    """

    kind: str
    value: tuple[float, ...]
    random_sign: bool = False

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"Op kind must be one of {OP_KINDS}, got {self.kind!r}")
        if len(self.value) not in _ARITY[self.kind]:
            raise ValueError(f"Op {self.kind!r} takes {_ARITY[self.kind]} numbers, got {self.value!r}")
        if not all(math.isfinite(v) for v in self.value):
            raise ValueError(f"Op {self.kind!r} has a non-finite value {self.value!r}")
        if self.random_sign and self.kind != "rotate":
            raise ValueError(f"random_sign is only defined for rotate, not {self.kind!r}")
        if self.random_sign and self.value[0] < 0:
            raise ValueError(f"random-sign rotation takes a magnitude >= 0, got {self.value[0]!r}")
        if self.kind == "scale" and self.value[0] <= 0:
            raise ValueError(f"scale factor must be > 0, got {self.value[0]!r}")
        if self.kind == "translate" and len(self.value) == 1 and self.value[0] < 0:
            raise ValueError(f"random-direction translation must be >= 0 px, got {self.value[0]!r}")

    @property
    def random_direction(self) -> bool:
        """True for a ``translate`` op whose direction is drawn per item."""
        return self.kind == "translate" and len(self.value) == 1

    @property
    def label(self) -> str:
        """Canonical text of this op, e.g. ``"rotate:+-20"`` or ``"translate:30,-10"``."""
        sign = "+-" if self.random_sign else ""
        return f"{self.kind}:{sign}" + ",".join(format_number(v) for v in self.value)


@dataclass(frozen=True)
class TransformSpec:
    """A composition of ops (applied left to right) with a display label.

    Attributes:
        ops: The ops; empty for the identity.
        label: Canonical text (``"rotate:10+scale:1.125"``, ``"identity"``) or a short protocol label
            such as ``"T50"``.
    """

    ops: tuple[Op, ...]
    label: str

    @property
    def is_identity(self) -> bool:
        """True when the spec has no ops."""
        return not self.ops

    @staticmethod
    def canonical_label(ops: Sequence[Op]) -> str:
        """The canonical label of a sequence of ops (``"identity"`` when empty)."""
        return "+".join(op.label for op in ops) if ops else "identity"


def _parse_number(text: str, spec: str, part: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TransformSpecError(spec, f"{text.strip()!r} is not a number", part) from None
    if not math.isfinite(value):
        raise TransformSpecError(spec, f"{text.strip()!r} is not a finite number", part)
    return value


def _expand_sweep(text: str, spec: str, part: str) -> list[float]:
    """``"0..30/10" -> [0, 10, 20, 30]``; a plain number gives a one-element list."""
    match = _SWEEP.match(text.strip())
    if match is None:
        if ".." in text:
            raise TransformSpecError(spec, f"sweep {text.strip()!r} must read START..STOP/STEP", part)
        return [_parse_number(text, spec, part)]
    start, stop, step = (_parse_number(match[k], spec, part) for k in ("start", "stop", "step"))
    if step <= 0:
        raise TransformSpecError(spec, f"sweep step must be > 0, got {format_number(step)}", part)
    if stop < start:
        raise TransformSpecError(spec, f"empty sweep: stop {format_number(stop)} < start "
                                 f"{format_number(start)}", part)
    # A relative tolerance keeps "0..1/0.1" inclusive of 1 despite binary rounding of 0.1.
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_SWEEP_VALUES:
        raise TransformSpecError(spec, f"sweep has {count} values, more than {MAX_SWEEP_VALUES}", part)
    # Rounding removes drift such as 0.30000000000000004 so labels stay clean.
    return [round(start + i * step, 10) + 0.0 for i in range(count)]


def expand_numbers(text: str, spec: str | None = None) -> list[float]:
    """Numbers of a comma list whose items may be sweeps: ``"-2..2/1"`` or ``"-2,0,2"`` -> floats.

    Raises:
        TransformSpecError: quoting ``spec`` (default: ``text``) for malformed numbers or sweeps.
    """
    spec = text if spec is None else spec
    return [v for item in text.split(",") for v in _expand_sweep(item, spec, text)]


def _parse_op(part: str, spec: str) -> tuple[str, list[list[float]], bool]:
    """Split ``"rotate:+-0..30/10"`` into kind, per-field value lists and the random-sign flag."""
    name, sep, args = part.partition(":")
    kind = name.strip().lower()
    if kind in IDENTITY_NAMES:
        raise TransformSpecError(spec, f"{kind!r} cannot be combined with other ops", part)
    if kind not in OP_KINDS:
        close = difflib.get_close_matches(kind, OP_KINDS + IDENTITY_NAMES[:1], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known ops: {', '.join(OP_KINDS)}"
        raise TransformSpecError(spec, f"unknown op {name.strip()!r}{hint}", part)
    args = args.strip()
    random_sign = args.startswith("+-")
    if random_sign:
        if kind != "rotate":
            raise TransformSpecError(spec, "a random sign '+-' is only allowed for rotate", part)
        args = args[2:]
    if not sep or not args:
        raise TransformSpecError(spec, f"{kind} needs a number, e.g. {kind}:{_EXAMPLE[kind]}", part)
    fields = args.split(",")
    if len(fields) not in _ARITY[kind]:
        wanted = " or ".join(str(n) for n in _ARITY[kind])
        raise TransformSpecError(spec, f"{kind} takes {wanted} number(s), got {len(fields)}", part)
    return kind, [_expand_sweep(f, spec, part) for f in fields], random_sign


def _build_op(kind: str, value: tuple[float, ...], random_sign: bool, spec: str, part: str) -> Op:
    try:
        return Op(kind, value, random_sign)
    except ValueError as err:  # range checks live in Op; re-raise with the spec quoted
        raise TransformSpecError(spec, str(err), part) from None


def parse_spec(spec: str) -> list[TransformSpec]:
    """Parse one spec (no ``;``) into one :class:`TransformSpec` per sweep value.

    Args:
        spec: Text following :data:`GRAMMAR`, e.g. ``"rotate:0..30/10+scale:1.1"``.

    Returns:
        The expanded specs, in sweep order (one element when there is no sweep).

    Raises:
        TransformSpecError: If the spec does not follow the grammar.
    """
    text = spec.strip()
    if not text:
        raise TransformSpecError(spec, "empty spec")
    if text.lower() in IDENTITY_NAMES:
        return [TransformSpec((), "identity")]
    parsed = [(part.strip(), *_parse_op(part, spec)) for part in _OP_SPLIT.split(text)]
    sweeps = [(i, j) for i, (_, _, vals, _) in enumerate(parsed) for j, f in enumerate(vals) if len(f) > 1]
    if len(sweeps) > 1:
        raise TransformSpecError(spec, "only one sweep per spec is allowed")
    n_values = len(parsed[sweeps[0][0]][2][sweeps[0][1]]) if sweeps else 1
    out = []
    for k in range(n_values):
        ops = []
        for part, kind, fields, random_sign in parsed:
            value = tuple(f[k] if len(f) > 1 else f[0] for f in fields)
            ops.append(_build_op(kind, value, random_sign, spec, part))
        out.append(TransformSpec(tuple(ops), TransformSpec.canonical_label(ops)))
    return out


def parse_transforms(text: str | Sequence[str]) -> list[TransformSpec]:
    """Parse transform specs into a flat list of :class:`TransformSpec`.

    Args:
        text: One string, possibly with several specs separated by ``;``, or a sequence of such strings
            (e.g. a CLI option given several times). Grammar: :data:`GRAMMAR`.

    Returns:
        The specs in the order given, sweeps expanded in place.

    Raises:
        TransformSpecError: If any spec is malformed, or if there is no spec at all.

    Example:
        >>> [s.label for s in parse_transforms("rotate:0..20/10; translate:30,-10")]
        ['rotate:0', 'rotate:10', 'rotate:20', 'translate:30,-10']
    """
    items = [text] if isinstance(text, str) else list(text)
    if not all(isinstance(t, str) for t in items):
        raise TypeError(f"transform specs must be strings, got {[type(t).__name__ for t in items]}")
    parts = [p for t in items for p in t.split(";") if p.strip()]
    if not parts:
        raise TransformSpecError("; ".join(items), "no transform given")
    return [s for p in parts for s in parse_spec(p)]
