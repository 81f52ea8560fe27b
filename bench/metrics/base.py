"""Metric contract, perceptual-distance protocol and the metric registry.

Every metric takes two batches of images (float32, NCHW, RGB, values in [-1, 1], square) and an
optional validity mask, and returns one float32 value per image. Metrics whose network weights are
missing are still built, marked unavailable with the reason, so that results can say so; they are
never computed with random weights.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from bench.data.images import check_images, describe_tensor

MASKED_SUFFIX = "@valid"
"""Suffix under which the runner records a metric computed over the valid (masked) pixels only."""

DEFAULT_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "lpips-alex", "lpips-vgg", "effnet-lpips")

LPIPS_NETS: tuple[str, ...] = ("alex", "vgg")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and how to read it.

    Attributes:
        name: Registry name, e.g. ``"psnr"`` or ``"lpips-alex"``.
        higher_is_better: Direction of improvement (``True`` for PSNR and SSIM).
        value_range: Smallest and largest value the metric can return (``inf`` allowed).
        description: One line stating value range, peak, window or working resolution.
        unit: Unit of the value, e.g. ``"dB"``; empty when unitless.
    """

    name: str
    higher_is_better: bool
    value_range: tuple[float, float]
    description: str
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or MASKED_SUFFIX in self.name:
            raise ValueError(f"invalid metric name {self.name!r}")
        low, high = self.value_range
        if not low <= high:
            raise ValueError(f"metric {self.name!r}: value_range {self.value_range} has low > high")


@runtime_checkable
class PerceptualDistance(Protocol):
    """A differentiable image distance for optimisation losses.

    Attributes:
        name: Name recorded in results, e.g. ``"lpips-vgg"``.
    """

    name: str

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per image.

        Args:
            x: (N, 3, H, W) float32 images in [-1, 1].
            y: (N, 3, H, W) float32 images in [-1, 1].

        Returns:
            (N,) distances, differentiable with respect to ``x`` and ``y``.
        """
        ...


def check_image_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Check two image batches against the image contract (``bench.data.images.check_images``).

    Args:
        pred: (N, 3, H, W) float32 images in [-1, 1] (1e-3 rounding slack), H == W, N >= 1.
        target: Same shape and device as ``pred``.

    Raises:
        ValueError: If either batch breaks the contract; the message prints shape, dtype and range.
    """
    check_images(pred, "pred")
    check_images(target, "target")
    if pred.shape[0] == 0:
        raise ValueError(f"pred: empty batch ({describe_tensor(pred)})")
    if pred.shape != target.shape or pred.device != target.device:
        raise ValueError(f"pred and target differ: pred {describe_tensor(pred)} on {pred.device}, "
                         f"target {describe_tensor(target)} on {target.device}")


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Check a validity mask against its images and return it as float32.

    Args:
        mask: (N, 1, H, W) tensor of zeros and ones (bool, integer or float), 1 = valid pixel.
        images: (N, 3, H, W) images the mask belongs to.

    Returns:
        (N, 1, H, W) float32 mask with values in {0, 1}, on the images' device.

    Raises:
        ValueError: If the shape does not match or values other than 0 and 1 occur.
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
    n, _, h, w = images.shape
    if tuple(mask.shape) != (n, 1, h, w):
        raise ValueError(f"mask: expected shape {(n, 1, h, w)} to match the images, got {describe_tensor(mask)}")
    if mask.device != images.device:
        raise ValueError(f"mask is on {mask.device}, images are on {images.device}")
    mask = mask.to(torch.float32)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask: expected values in {{0, 1}}, got {describe_tensor(mask)}")
    return mask


class Metric(abc.ABC):
    """Base class of every metric: validates inputs and returns one float32 value per image.

    Subclasses set ``info`` and implement ``_compute``. A metric whose weights are missing sets
    ``available = False`` and ``reason``; calling it raises ``RuntimeError`` with that reason.

    Attributes:
        info: Name, direction, range and description.
        available: False when the metric's network weights are missing.
        reason: Why the metric is unavailable ("" when available).
    """

    info: MetricInfo
    available: bool = True
    reason: str = ""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """Score each image of a batch.

        Args:
            pred: (N, 3, H, W) float32 images in [-1, 1], H == W.
            target: (N, 3, H, W) float32 images in [-1, 1], same shape as ``pred``.
            mask: Optional (N, 1, H, W) validity mask in {0, 1}; when given, only valid pixels count
                (the ``name@valid`` variant). An image whose mask is all zero scores NaN.

        Returns:
            (N,) float32 values on the inputs' device, computed without gradients.

        Raises:
            RuntimeError: If the metric is unavailable.
            ValueError: If the inputs break the image or mask contract.
        """
        if not self.available:
            raise RuntimeError(f"metric {self.info.name!r} is unavailable: {self.reason}")
        check_image_pair(pred, target)
        fmask = None if mask is None else check_mask(mask, pred)
        with torch.no_grad():
            values = self._compute(pred.clamp(-1, 1), target.clamp(-1, 1), fmask)
        return values.to(device=pred.device, dtype=torch.float32)

    def item_failures(self) -> list[str | None]:
        """Per image of the last call: why it got no value (NaN), or None where it was scored.

        Empty for metrics that score every valid image (the default). A metric that can fail on single
        images (e.g. ``identity``, when no face is detected) overrides it, so that the runner records those
        items as failed rows with the reason instead of dropping them.
        """
        return []

    @abc.abstractmethod
    def _compute(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """Per-image values for validated inputs (mask float32 in {0, 1} or None)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"{type(self).__name__}({self.info.name!r}, {state})"


@dataclass(frozen=True)
class MetricOptions:
    """What a metric factory may need when it is built.

    Attributes:
        device: Device for metrics that hold networks.
        lpips_weights: Backbone weight files by LPIPS net (``"alex"``, ``"vgg"``); nets not listed
            are looked up in the torch hub cache.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    lpips_weights: Mapping[str, str | Path] = field(default_factory=dict)


MetricFactory = Callable[[MetricOptions], Metric]


@dataclass(frozen=True)
class _Entry:
    info: MetricInfo
    factory: MetricFactory


_REGISTRY: dict[str, _Entry] = {}


def register_metric(name: str, info: MetricInfo | None = None) -> Callable[[MetricFactory], MetricFactory]:
    """Register a metric factory under ``name``; use as a decorator.

    Args:
        name: Registry name; must equal the metric's ``info.name``.
        info: The metric's info, so that ``list_metrics`` needs no construction. When omitted the
            factory must carry it as ``factory.info`` (a ``Metric`` subclass with a class attribute).

    Returns:
        A decorator that registers the factory (called as ``factory(options)``) and returns it.

    Raises:
        ValueError: If the name is taken, the info is missing or names another metric.
    """

    def decorator(factory: MetricFactory) -> MetricFactory:
        entry_info = info if info is not None else getattr(factory, "info", None)
        if not isinstance(entry_info, MetricInfo):
            raise ValueError(f"register_metric({name!r}): no MetricInfo given and factory has no .info")
        if entry_info.name != name:
            raise ValueError(f"register_metric({name!r}): info names {entry_info.name!r}")
        if isinstance(factory, type) and not issubclass(factory, Metric):
            raise ValueError(f"register_metric({name!r}): {factory.__name__} is not a Metric subclass")
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered")
        _REGISTRY[name] = _Entry(entry_info, factory)
        return factory

    return decorator


def list_metrics() -> list[MetricInfo]:
    """Info of every registered metric, sorted by name; builds nothing."""
    return [_REGISTRY[name].info for name in sorted(_REGISTRY)]


def _unknown_name_error(name: str) -> ValueError:
    known = sorted(_REGISTRY)
    hint = ""
    if name.endswith(MASKED_SUFFIX):
        hint = (f" Masked variants are not built separately: build {name[:-len(MASKED_SUFFIX)]!r} "
                f"and pass a mask; results record them as {name!r}.")
    else:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return ValueError(f"unknown metric {name!r}; available: {', '.join(known)}.{hint}")


def build_metrics(names: Sequence[str] | None, *, device: str | torch.device,
                  lpips_weights: Mapping[str, str | Path] | None = None) -> list[Metric]:
    """Build metrics by name, in the order given.

    Args:
        names: Registry names; ``None`` builds the defaults (mse, psnr, ssim, lpips-alex, lpips-vgg, effnet-lpips).
        device: Device for metrics that hold networks (LPIPS).
        lpips_weights: Optional backbone weight files keyed by LPIPS net, ``{"alex": PATH, "vgg": PATH}``.

    Returns:
        One metric per name. Metrics whose weights are missing are included with
        ``available=False`` and a ``reason``.

    Raises:
        ValueError: For an unknown or repeated name (with the available names and a suggestion), or
            an ``lpips_weights`` key that is not an LPIPS net.
    """
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of metric names, not the string {names!r}")
    wanted = list(DEFAULT_METRICS if names is None else names)
    for name in wanted:
        if name not in _REGISTRY:
            raise _unknown_name_error(name)
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if repeated:
        raise ValueError(f"metric names repeated: {', '.join(repeated)}")
    unknown_nets = sorted(set(lpips_weights or {}) - set(LPIPS_NETS))
    if unknown_nets:
        raise ValueError(f"lpips_weights: unknown LPIPS net(s) {unknown_nets}; "
                         f"expected keys among {LPIPS_NETS}")
    options = MetricOptions(device=torch.device(device), lpips_weights=dict(lpips_weights or {}))
    return [_REGISTRY[name].factory(options) for name in wanted]
