"""The ``procfaces:N`` data source: held-out procedural faces for the benchmark (see ``bench.world.procfaces``).

Registered as a source kind by ``bench.world.defaults``; duck-types ``bench.data.Source``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bench.world.procfaces import (
    ATTRIBUTES,
    HAIR_STYLES,
    HELDOUT_SEED_OFFSET,
    FaceParams,
    face_seed,
    labels,
    render,
    render_transformed,
    sample_params,
)

__all__ = ["ProcFacesSource", "procfaces_source"]

_FACES_PER_PASS = 64  # faces the iterator renders at a time (``render`` splits them into cache-sized chunks)


class ProcFacesSource:
    """Held-out procedural faces; face i (id ``procfaces-{i:06d}``) has seed ``HELDOUT_SEED_OFFSET + i``.

    Duck-types ``bench.data.Source`` (``name``, ``description``, ``seed``, ``len``, ``iter``, ``ids()``)
    but renders a chunk of faces per pass instead of loading items one by one.
    """

    name = "procfaces"

    def __init__(self, indices: list[int], *, resolution: int, seed: int, total: int,
                 on_error: Callable[[str], None]) -> None:
        """Create the source over face ``indices`` (already subset, in id order)."""
        self._indices, self.resolution, self.seed, self.on_error = list(indices), resolution, seed, on_error
        self.description = (f"{len(self._indices)} of {total} procedural aligned faces (held-out seeds "
                            f"{HELDOUT_SEED_OFFSET} + index) at {resolution}px")

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:
        return f"<ProcFacesSource {self.description}>"

    def ids(self) -> list[str]:
        """Item ids in iteration order."""
        return [_face_id(i) for i in self._indices]

    def __iter__(self) -> Iterator:
        from bench.data import Item, item_seed  # lazy, so that this module imports without bench.data

        for start in range(0, len(self._indices), _FACES_PER_PASS):
            chunk = self._indices[start : start + _FACES_PER_PASS]
            seeds = [face_seed(HELDOUT_SEED_OFFSET, i) for i in chunk]
            params = FaceParams.cat([sample_params(1, s) for s in seeds])
            images, labs = render(params, self.resolution), labels(params).tolist()
            for k, (i, s) in enumerate(zip(chunk, seeds, strict=True)):
                meta = {"face_seed": s, "hair_style": HAIR_STYLES[int(params.hair_style[k])],
                        "labels": dict(zip(ATTRIBUTES, labs[k], strict=True))}
                yield Item(id=_face_id(i), image=images[k].clone(), seed=item_seed(self.seed, _face_id(i)), meta=meta,
                           render=self.render_transformed)

    def render_transformed(self, items, matrices, fill: str):
        """Render these faces under ``matrices`` in the renderer's coordinates (``bench.data.DirectRender``)."""
        params = FaceParams.cat([sample_params(1, it.meta["face_seed"]) for it in items])
        return render_transformed(params, matrices.detach().cpu().double(), self.resolution, fill)


def _face_id(index: int) -> str:
    return f"procfaces-{index:06d}"


def procfaces_source(arg: str, *, resolution: int, n: int | None = None, seed: int = 0, generator: object = None,
                     on_error: Callable[[str], None] = print) -> ProcFacesSource:
    """Open ``procfaces:N``: the first N held-out faces, ids ``procfaces-000000`` onwards.

    Face i is the same image whatever N is. With ``n`` (``procfaces:N:n`` in a spec), a seeded random
    subset of n of the N faces is kept in id order (``bench.data.select_subset``, numpy ``default_rng(seed)``).

    Args:
        arg: N, the number of faces, as text.
        resolution: image side R in pixels (>= 16).
        n: optional subset size.
        seed: source seed: picks the subset and, with the id, each item's seed (``bench.data.item_seed``).
        generator: unused; part of the common source-factory signature.
        on_error: receives warnings (n larger than N).

    Returns:
        The source; its items carry images (3, R, R) float32 in [-1, 1] and ``meta["labels"]``, a dict of
        attribute name -> value in [0, 1].

    Raises:
        ValueError: if N is not a positive integer or the resolution is below 16.
    """
    from bench.data import select_subset

    text = arg.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"procfaces:{arg}: N must be a positive integer number of faces, e.g. procfaces:100")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"procfaces:{arg}: resolution must be an int >= 16, got {resolution!r}")
    total = int(text)
    if total >= HELDOUT_SEED_OFFSET:
        raise ValueError(f"procfaces:{arg}: N must be below {HELDOUT_SEED_OFFSET}")
    chosen = select_subset(range(total), n, seed, on_error, what=f"procfaces:{total}")
    return ProcFacesSource(chosen, resolution=resolution, seed=seed, total=total, on_error=on_error)
