"""Named grids of transforms, such as the BDInvert (ICCV 2021) Table 1 protocol.

A protocol lists (label, spec) pairs whose pixel offsets are given at :data:`REFERENCE_RESOLUTION`;
:func:`expand_protocol` rescales them to the working resolution: ``px = px_1024 * resolution / 1024``.
Angles and scale factors need no rescaling.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from transforms.spec import Op, TransformSpec, parse_transforms

REFERENCE_RESOLUTION = 1024


@dataclass(frozen=True)
class Protocol:
    """A named, ordered grid of transforms.

    Attributes:
        name: Registry key, e.g. ``"bdinvert-table1"``.
        description: One line on what the grid is and where it comes from.
        entries: ``(label, spec text)`` pairs; translations in pixels at :data:`REFERENCE_RESOLUTION`.
    """

    name: str
    description: str
    entries: tuple[tuple[str, str], ...]


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to :data:`PROTOCOLS`; its specs are parsed now so a typo fails at import."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is already registered")
    for _, text in protocol.entries:
        if len(parse_transforms(text)) != 1:
            raise ValueError(f"protocol {protocol.name!r}: entry {text!r} must be a single spec, not a sweep")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def list_protocols() -> list[str]:
    """Names of the registered protocols, sorted."""
    return sorted(PROTOCOLS)


def _rescale(op: Op, factor: float) -> Op:
    if op.kind != "translate":
        return op
    return replace(op, value=tuple(v * factor for v in op.value))


def expand_protocol(name: str, resolution: int) -> list[TransformSpec]:
    """The specs of a protocol at the working resolution, in the protocol's order.

    Translations are rescaled from the paper's 1024 px: ``px = px_1024 * resolution / 1024``
    (so ``T50`` is 3.125 px at 64). Each spec keeps the protocol's short label (``"T50"``, ``"R20"``).

    Args:
        name: A name from :func:`list_protocols`.
        resolution: Working image side in pixels.

    Returns:
        One :class:`TransformSpec` per protocol entry.

    Raises:
        ValueError: For an unknown name (listing the available ones) or a non-positive resolution.
    """
    if name not in PROTOCOLS:
        close = difflib.get_close_matches(name, list(PROTOCOLS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown protocol {name!r}{hint}; available: {', '.join(list_protocols())}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    factor = resolution / REFERENCE_RESOLUTION
    out = []
    for label, text in PROTOCOLS[name].entries:
        (spec,) = parse_transforms(text)
        out.append(TransformSpec(tuple(_rescale(op, factor) for op in spec.ops), label))
    return out


register_protocol(
    Protocol(
        name="bdinvert-table1",
        description="BDInvert (Kang et al., ICCV 2021) Table 1: identity, translation 50/100/150 px at 1024 "
        "in a random direction, rotation 10/20/30 deg with a random sign, scale 7/8, 3/4, 9/8, 5/4",
        entries=(
            ("0", "identity"),
            ("T50", "translate:50"),
            ("T100", "translate:100"),
            ("T150", "translate:150"),
            ("R10", "rotate:+-10"),
            ("R20", "rotate:+-20"),
            ("R30", "rotate:+-30"),
            ("S7/8", "scale:0.875"),
            ("S3/4", "scale:0.75"),
            ("S9/8", "scale:1.125"),
            ("S5/4", "scale:1.25"),
        ),
    )
)
register_protocol(
    Protocol(
        name="smoke",
        description="CI subset of bdinvert-table1: identity, T100, R20, S3/4",
        entries=(
            ("0", "identity"),
            ("T100", "translate:100"),
            ("R20", "rotate:+-20"),
            ("S3/4", "scale:0.75"),
        ),
    )
)
