"""The method contract: what an inversion method is handed, what it returns, and the preset registry.

A method is a leaf: it never imports ``bench``, ``transforms`` or ``reports``. It is handed a generator
and (optionally) a perceptual distance, both described here as small protocols, so that every method can
be tested alone with a tiny fake.

Images are float32 tensors (N, 3, R, R), RGB, in [-1, 1], at the generator's resolution.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import typing
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch

from methods.overrides import check_params, param_kind


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Float32 without autocast, for one-off passes inside a reduced-precision fast path.

    An encoder's initial code, the final loss (``methods.optim.run_adam``) and the returned reconstructions
    (:meth:`Method._finish`) are computed this way, so that the precision of the fast path (``bench.accel``)
    changes only the optimisation's trajectory, not how its start and result are measured. On CUDA the
    convolutions and matrix products of these passes run at TF32 (float32 accumulation) whatever the fast
    path's setting: in strict float32, cuDNN picks FFT convolutions for StyleGAN2's 1024-px layers whose
    workspaces take 65 GB (``benchmarks/RESULTS.md``).
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = device.type == "cuda"
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@runtime_checkable
class GeneratorLike(Protocol):
    """What methods need from a generator (satisfied by ``bench.generators.StyleGAN2Generator``)."""

    resolution: int
    w_dim: int
    z_dim: int
    num_ws: int
    w_avg: torch.Tensor

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor: ...
    def synthesis(self, ws: torch.Tensor) -> torch.Tensor: ...
    def features(self, ws: torch.Tensor, res: int) -> torch.Tensor: ...
    def synthesis_from(self, f: torch.Tensor, ws: torch.Tensor, res: int) -> torch.Tensor: ...
    def first_ws_index(self, res: int) -> int: ...


class PerceptualLike(Protocol):
    """A differentiable perceptual distance: ``d(x, y) -> (N,)`` on [-1, 1] images, with a ``name``."""

    name: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Inversion:
    """Result of inverting a batch.

    Attributes:
        method: preset name.
        latents: named latent tensors, batch first (e.g. ``{"wp": (N, num_ws, w_dim)}``, F/W+ adds ``"f"``).
        images: (N, 3, R, R) reconstructions in [-1, 1] (clamped), detached.
        loss: (N,) final objective per image (NaN where failed).
        failed: per image, ``None`` or the reason it failed (e.g. the loss diverged).
        info: method settings and notes worth recording (steps, perceptual network used...).
    """

    method: str
    latents: dict[str, torch.Tensor]
    images: torch.Tensor
    loss: torch.Tensor
    failed: tuple[str | None, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EditDirection:
    """A unit direction in W (``(w_dim,)``) or per-layer W+ (``(num_ws, w_dim)``).

    Attributes:
        name: attribute name (e.g. ``"smile"``).
        vector: the direction; a W vector is applied to every selected layer.
        layers: ws rows it applies to (``None``: all rows the method uses).
    """

    name: str
    vector: torch.Tensor
    layers: tuple[int, ...] | None = None

    def offset(self, num_ws: int, strength: float, allowed: Sequence[int] | None = None) -> torch.Tensor:
        """(num_ws, w_dim) offset to add to a W+ code: ``strength * vector`` on the selected rows."""
        rows = set(range(num_ws)) if self.layers is None else set(self.layers)
        if allowed is not None:
            rows &= set(allowed)
        vec = self.vector if self.vector.ndim == 2 else self.vector.expand(num_ws, -1)
        if vec.shape[0] != num_ws:
            raise ValueError(f"direction {self.name!r} has {vec.shape[0]} rows, generator has {num_ws} ws")
        mask = torch.zeros(num_ws, 1, dtype=vec.dtype, device=vec.device)
        mask[sorted(rows)] = 1.0
        return strength * vec * mask


def check_targets(x: torch.Tensor, resolution: int) -> None:
    """Raise ValueError unless x is a float32 (N, 3, R, R) batch in [-1, 1] at ``resolution``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (resolution,) * 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"targets must be (N, 3, {resolution}, {resolution}), got {shape}")
    if x.dtype != torch.float32:
        raise ValueError(f"targets must be float32, got {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= -1.001 and hi <= 1.001):
        raise ValueError(f"targets must lie in [-1, 1], got range [{lo:.3f}, {hi:.3f}]")


NO_PERCEPTUAL = "none"
"""Pass ``perceptual="none"`` (or ``None``) to :meth:`Method.invert` to run without a perceptual term on purpose."""
_NOT_GIVEN = object()


class PerceptualDroppedWarning(UserWarning):
    """``invert`` was called without a perceptual distance, so the loss's perceptual term is dropped."""


def _guard_perceptual(invert: Any) -> Any:
    """Wrap a subclass's ``invert`` so that leaving ``perceptual`` out is never silent.

    Omitting it while the method's ``perceptual_weight`` is above zero warns (:class:`PerceptualDroppedWarning`);
    ``perceptual="none"`` or ``perceptual=None`` says that the term is dropped on purpose; any other text raises.
    """

    @functools.wraps(invert)
    def guarded(self: Method, *args: Any, perceptual: Any = _NOT_GIVEN, **kwargs: Any) -> Inversion:
        weight = getattr(self.params, "perceptual_weight", 0.0) or 0.0
        if perceptual is _NOT_GIVEN:
            if weight > 0:
                warnings.warn(f"{self.name}.invert: no perceptual distance given, so its perceptual term (weight "
                              f"{weight:g}) is dropped from the loss; pass perceptual=... or perceptual='none'",
                              PerceptualDroppedWarning, stacklevel=2)
            perceptual = None
        elif isinstance(perceptual, str):
            if perceptual != NO_PERCEPTUAL:
                raise ValueError(f"{self.name}.invert: perceptual={perceptual!r}: expected a perceptual distance, "
                                 f"None or {NO_PERCEPTUAL!r}")
            perceptual = None
        return invert(self, *args, perceptual=perceptual, **kwargs)

    return guarded


class Method(ABC):
    """Base class of inversion methods. Subclasses define ``Params`` (a dataclass) and the three verbs.

    A subclass's ``invert`` is wrapped so that a call without ``perceptual`` warns when the method has a
    perceptual term (:func:`_guard_perceptual`): pass the distance, or ``perceptual="none"`` to drop it on purpose.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "invert" in cls.__dict__ and not getattr(cls.__dict__["invert"], "__isabstractmethod__", False):
            cls.invert = _guard_perceptual(cls.__dict__["invert"])

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters; subclasses replace this with their own dataclass."""

        steps: int = 0

    def __init__(self, name: str, params: Any) -> None:
        self.name = name
        self.params = params

    @abstractmethod
    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | str | None = None) -> Inversion:
        """Invert a batch (N, 3, R, R) in [-1, 1]; ``seeds`` has one seed per image.

        ``perceptual``: the distance of the loss's perceptual term; ``None`` or ``"none"`` drops the term on
        purpose, and leaving it out warns (:class:`PerceptualDroppedWarning`) when the method has one.
        """

    def render(self, inversion: Inversion, generator: GeneratorLike) -> torch.Tensor:
        """Re-render the inversion's latents to (N, 3, R, R) images (not clamped).

        The default serves W and W+ methods, whose latent is ``latents["wp"]`` (N, num_ws, w_dim).
        """
        return generator.synthesis(inversion.latents["wp"])

    def edit(self, inversion: Inversion, generator: GeneratorLike, direction: EditDirection,
             strength: float) -> torch.Tensor:
        """Render the inversion moved by ``strength`` along ``direction``.

        The default adds the offset to the W+ code ``latents["wp"]`` on the direction's rows.
        """
        wp = inversion.latents["wp"]
        return generator.synthesis(wp + direction.offset(generator.num_ws, strength).to(wp))

    def _finish(self, latents: dict[str, torch.Tensor], loss: torch.Tensor, failed: tuple[str | None, ...],
                info: dict[str, Any], generator: GeneratorLike) -> Inversion:
        """Build the :class:`Inversion`, rendering the (clamped, detached) reconstructions once."""
        inv = Inversion(self.name, {k: v.detach() for k, v in latents.items()}, torch.empty(0), loss, failed, info)
        with torch.no_grad(), full_precision(loss.device):
            images = self.render(inv, generator).float().clamp(-1, 1)
        return replace(inv, images=images)


@dataclass(frozen=True)
class Preset:
    """A named configuration of a method class, with metadata for listings and tables."""

    name: str
    cls: type[Method]
    params: dict[str, Any]
    latent_space: str
    description: str
    needs_encoder: bool = False
    supports_editing: bool = True
    reference: str = ""
    # Reduced GPU precisions ("tf32", "bf16") at which this preset held the quality-parity test on the GPU
    # (tests/accel/test_parity.py; figures in benchmarks/RESULTS.md). `--precision auto` on CUDA runs the preset
    # at the fastest of them, or in float32 if there is none: an untested preset stays float32.
    gpu_precisions: tuple[str, ...] = ()

    @property
    def default_steps(self) -> int:
        """Optimisation steps by default (0 for feed-forward methods)."""
        return int(self.params.get("steps", self.cls.Params().steps))


REDUCED_PRECISIONS = ("tf32", "bf16")  # the GPU precisions below float32 (bench.accel), slowest first
_PRESETS: dict[str, Preset] = {}
_ALIASES: dict[str, tuple[str, ...]] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (its class must subclass :class:`Method`; names are unique)."""
    if not (isinstance(preset.cls, type) and issubclass(preset.cls, Method)):
        raise TypeError(f"preset {preset.name!r}: {preset.cls!r} is not a subclass of methods.base.Method")
    if preset.name in _PRESETS or preset.name in _ALIASES:
        raise ValueError(f"method preset {preset.name!r} is already registered")
    known = {f.name for f in fields(preset.cls.Params)}
    unknown = set(preset.params) - known
    if unknown:
        raise ValueError(f"preset {preset.name!r}: unknown parameters {sorted(unknown)}; known: {sorted(known)}")
    if not set(preset.gpu_precisions) <= set(REDUCED_PRECISIONS):
        raise ValueError(f"preset {preset.name!r}: gpu_precisions {preset.gpu_precisions} must be drawn from "
                         f"{REDUCED_PRECISIONS}")
    _PRESETS[preset.name] = preset
    return preset


def register_alias(name: str, targets: tuple[str, ...]) -> None:
    """Register a name that expands to several presets (e.g. ``fwplus`` -> ``fwplus8, fwplus16``)."""
    _ALIASES[name] = targets


def _unknown(name: str) -> ValueError:
    names = sorted([*_PRESETS, *_ALIASES])
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown method {name!r}.{hint} Available: {', '.join(names)}")


def get_preset(name: str) -> Preset:
    """Look a preset up by name; unknown names raise with the available names and a suggestion."""
    _load_builtin()
    if name not in _PRESETS:
        raise _unknown(name)
    return _PRESETS[name]


def list_presets() -> list[Preset]:
    """All registered presets, in registration order."""
    _load_builtin()
    return list(_PRESETS.values())


def expand_method_names(names: str | Sequence[str]) -> list[str]:
    """Split a comma list, expand aliases, check every name, drop duplicates (order kept)."""
    _load_builtin()
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    out: list[str] = []
    for n in items:
        for m in _ALIASES.get(n, (n,)):
            get_preset(m)
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError("no method given; use e.g. --methods im2s,w")
    return out


def check_overrides(name: str, overrides: dict[str, Any]) -> None:
    """Refuse hyper-parameter overrides that a preset does not have or that do not fit the parameter.

    Every parameter's type is the one its ``Params`` field declares (a whole number for ``int``, a finite
    number for ``float``, a pair for ``tuple[float, float]``); numbers must not be negative, a learning
    rate must be positive and Adam's betas lie in [0, 1) (:mod:`methods.overrides`).

    Raises:
        ValueError: naming the method, the parameter, the value and what was expected.
    """
    check_params(name, overrides, param_kinds(name))


def param_kinds(name: str) -> dict[str, str]:
    """Each parameter of preset ``name`` and its kind (:func:`methods.overrides.param_kind`)."""
    return {k: param_kind(h) for k, h in typing.get_type_hints(get_preset(name).cls.Params).items()}


def build_method(name: str, overrides: dict[str, Any] | None = None, **resources: Any) -> Method:
    """Instantiate a preset, applying hyper-parameter overrides (checked by :func:`check_overrides`).

    ``resources`` are handed to the constructor (e.g. ``encoder=`` for methods that need one).
    """
    preset = get_preset(name)
    params = replace(preset.cls.Params(), **preset.params)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_overrides(name, overrides)
    hints = typing.get_type_hints(preset.cls.Params)
    overrides = {k: int(v) if hints[k] is int else tuple(v) if isinstance(v, list) else v
                 for k, v in overrides.items()}
    return preset.cls(name, replace(params, **overrides), **resources)


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    """Import the built-in method modules once (they register their presets on import)."""
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    import importlib

    for module in ("methods.wplus", "methods.projector", "methods.fwplus", "methods.idinvert",
                   "methods.psp"):
        importlib.import_module(module)
