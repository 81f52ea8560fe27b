"""LPIPS (v0.1, AlexNet and VGG16) computed only with real backbone weights.

The ``lpips`` package ships its linear layers, but takes the AlexNet/VGG16 backbones from torchvision's
download, which cannot happen offline. Here the backbone comes from a local file in torchvision's
format: a path given by the user, else torch hub's cache (``torch.hub.get_dir()/checkpoints``, which
follows ``TORCH_HOME``). Without one the metric is built but marked unavailable, with the file it looked
for; it is never computed with random weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
from torch import nn

from bench.compiling import Compilable
from bench.metrics.base import LPIPS_NETS, Metric, MetricInfo, MetricOptions, register_metric
from bench.metrics.pixel import masked_mean
from bench.metrics.resize import compiled_distance, resize_antialiased

BACKBONE_FILES: dict[str, str] = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
"""torchvision's file names for the ImageNet weights (``*_Weights.IMAGENET1K_V1``) that LPIPS uses."""

LPIPS_RESOLUTION = 256
"""Images are resized to this square size (bilinear, antialias) before LPIPS."""

_ARCH = {"alex": "AlexNet", "vgg": "VGG16"}

LPIPS_INFO: dict[str, MetricInfo] = {
    net: MetricInfo(
        name=f"lpips-{net}", higher_is_better=False, value_range=(0.0, float("inf")),
        description=(f"LPIPS v0.1, {_ARCH[net]} backbone (torchvision ImageNet weights), on [-1,1] images "
                     f"resized to {LPIPS_RESOLUTION}x{LPIPS_RESOLUTION} (bilinear, antialias); masked: each "
                     "layer's map averaged with the valid fraction of its cells"),
    )
    for net in LPIPS_NETS
}


def _check_net(net: str) -> None:
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {LPIPS_NETS}")


def find_backbone_weights(net: str, path: str | Path | None = None) -> Path | None:
    """Locate the ImageNet backbone weights for an LPIPS net.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        path: Explicit weight file (from configuration); when given, the cache is not searched.

    Returns:
        The explicit path, else ``torch.hub.get_dir()/checkpoints/<torchvision file name>`` if that file
        exists, else None.

    Raises:
        ValueError: For an unknown net.
        FileNotFoundError: If an explicit ``path`` is not a file.
    """
    _check_net(net)
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise FileNotFoundError(f"LPIPS-{net} backbone weights: {explicit} does not exist "
                                    "or is not a file")
        return explicit
    cached = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    return cached if cached.is_file() else None


def _missing_reason(net: str) -> str:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    return (f"LPIPS-{net} needs torchvision's ImageNet {_ARCH[net]} weights and none were found: "
            f"looked for {cached} (torch.hub.get_dir()/checkpoints, set by TORCH_HOME). "
            f"Copy {BACKBONE_FILES[net]} there, or pass its path with lpips_weights={{'{net}': PATH}}.")


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to the user
        raise ValueError(f"{path}: cannot be read as a torch state dict "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (mapping of names to tensors), "
                         f"got {type(state).__name__}")
    return state


def _copy_strict(target: nn.Module, source: Mapping[str, torch.Tensor], source_key: Callable[[str], str],
                 path: Path) -> None:
    """Load every tensor of ``target`` from ``source`` (renamed by ``source_key``); extras are ignored."""
    new_state, missing = {}, []
    for key, current in target.state_dict().items():
        name = source_key(key)
        if name not in source:
            missing.append(name)
            continue
        tensor = source[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != current.shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{path}: tensor {name!r} has shape {got}, expected {tuple(current.shape)}")
        new_state[key] = tensor
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {', '.join(repr(m) for m in missing)}")
    target.load_state_dict(new_state, strict=True)


def _backbone_source_key(key: str) -> str:
    # lpips splits torchvision's `features` into slices but keeps each layer's index:
    # `slice2.3.weight` is torchvision's `features.3.weight`.
    return "features." + key.split(".", 1)[1]


def load_lpips(net: str, weights_path: str | Path | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module | None, str]:
    """Build an LPIPS v0.1 module with real backbone weights, or say why not.

    The backbone is loaded strictly from a torchvision-format file (every ``features.N`` tensor
    present with the right shape; classifier tensors ignored) and the linear layers strictly from the
    ``lpips`` package's own ``weights/v0.1/<net>.pth``.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        weights_path: Explicit backbone weight file; default: torch hub's cache (see
            ``find_backbone_weights``).
        device: Device to put the module on.

    Returns:
        ``(module, "")`` with the module in eval mode and no parameter requiring grad, or
        ``(None, reason)`` when the backbone or linear weights are missing; the reason names the file(s)
        searched and how to provide one.

    Raises:
        ValueError: For an unknown net, or a weight file that is unreadable or has a missing tensor or a
            tensor of the wrong shape (the message names the file and the tensor).
        FileNotFoundError: If an explicit ``weights_path`` does not exist.
    """
    backbone_path = find_backbone_weights(net, weights_path)
    if backbone_path is None:
        return None, _missing_reason(net)
    lin_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not lin_path.is_file():
        return None, f"LPIPS-{net}: the lpips package has no linear-layer weights at {lin_path}"
    with warnings.catch_warnings():
        # torchvision warns that lpips uses the deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        # pretrained=False: load the linear layers below strictly instead of lpips's strict=False load.
        module = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    _copy_strict(module.net, _read_state_dict(backbone_path), _backbone_source_key, backbone_path)
    lin_state = _read_state_dict(lin_path)
    for k, layer in enumerate(module.lins):
        _copy_strict(layer, lin_state, lambda key, k=k: f"lin{k}.{key}", lin_path)
    module.eval().requires_grad_(False)
    return module.to(device), ""


def resize_for_lpips(x: torch.Tensor, size: int = LPIPS_RESOLUTION) -> torch.Tensor:
    """Resize images to the LPIPS working resolution.

    Args:
        x: (N, 3, H, W) images in [-1, 1].
        size: Output side length.

    Returns:
        (N, 3, size, size) images, bilinear with antialiasing (unchanged if already that size).
    """
    return resize_antialiased(x, size)


def lpips_features(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The unit-normalised backbone features of ``x`` (N, 3, S, S in [-1, 1]), one per LPIPS layer."""
    return [lpips.normalize_tensor(f) for f in module.net(module.scaling_layer(x))]


def lpips_layer_maps(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer LPIPS distance maps (after the linear layers), as lpips v0.1 computes them.

    Args:
        module: An ``lpips.LPIPS`` v0.1 module with linear layers.
        x: (N, 3, S, S) images in [-1, 1].
        y: (N, 3, S, S) images in [-1, 1].

    Returns:
        One (N, 1, h_l, w_l) map per layer; the sum over layers of their spatial means is LPIPS.
    """
    return _maps(module, lpips_features(module, x), lpips_features(module, y))


def _maps(module: nn.Module, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> list[torch.Tensor]:
    return [lin((a - b) ** 2) for lin, a, b in zip(module.lins, fx, fy, strict=True)]


class LPIPSMetric(Metric):
    """LPIPS v0.1 (lower is better) on images resized to 256x256; unavailable without backbone weights.

    Masked variant: each layer's distance map is averaged with weights equal to the fraction of valid
    pixels under each of its cells (adaptive average pooling of the mask), then the layers are summed.
    A full mask gives the unmasked value; an all-zero mask gives NaN.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        weights_path: Explicit backbone weight file; default: torch hub's cache.
        device: Device the network runs on; inputs are moved there and results moved back.
    """

    def __init__(self, net: str, weights_path: str | Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        _check_net(net)
        self.info = LPIPS_INFO[net]
        self.net = net
        self.device = torch.device(device)
        self.module, self.reason = load_lpips(net, weights_path, self.device)
        self.available = self.module is not None
        self.weights_path = find_backbone_weights(net, weights_path) if self.available else None

    def _compute(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        x = resize_for_lpips(pred.to(self.device))
        y = resize_for_lpips(target.to(self.device))
        if mask is None:
            return self.module(x, y).reshape(-1)
        mask = mask.to(self.device)
        total = torch.zeros(x.shape[0], device=self.device)
        for layer_map in lpips_layer_maps(self.module, x, y):
            total = total + masked_mean(layer_map, F.adaptive_avg_pool2d(mask, layer_map.shape[-2:]))
        return total


class LPIPSDistance(Compilable):
    """Differentiable LPIPS distance for optimisation losses (satisfies ``PerceptualDistance``).

    Args:
        module: A module returned by ``load_lpips`` (parameters frozen).
        net: ``"alex"`` or ``"vgg"``; the distance is named ``"lpips-<net>"``.
        resolution: Working size; inputs are resized to it (bilinear, antialias) like the metric.
        name: The distance's name (default ``lpips-<net>``).
    """

    compile_label = "the perceptual network"

    def __init__(self, module: nn.Module, net: str, resolution: int = LPIPS_RESOLUTION,
                 name: str | None = None) -> None:
        _check_net(net)
        self.module = module
        self.name = name or f"lpips-{net}"
        self.resolution = resolution

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"{self.name}: expected two (N, 3, H, W) batches of the same shape, "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS per image, with gradients to ``x`` and ``y``.

        Args:
            x: (N, 3, H, W) images in [-1, 1]; not range-checked, since images under optimisation
                may overshoot slightly.
            y: Images of the same shape.

        Returns:
            (N,) distances (>= 0).

        Raises:
            ValueError: If the shapes are not matching (N, 3, H, W) batches.
        """
        self._check(x, y)
        x, y = resize_for_lpips(x, self.resolution), resize_for_lpips(y, self.resolution)
        return self.module(x, y).reshape(-1)

    def against(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> d(x, y)`` with y's features computed once, for optimisation loops.

        The same values as ``self(x, y)``; with ``compiled`` the step's part runs through ``torch.compile``.
        """
        with torch.no_grad():
            fy = lpips_features(self.module, resize_for_lpips(y, self.resolution))

        def distance(x: torch.Tensor) -> torch.Tensor:
            self._check(x, y)
            return compiled_distance(self, self._distance_to, x, self.resolution, fy)

        return distance

    def _distance_to(self, x: torch.Tensor, fy: list[torch.Tensor]) -> torch.Tensor:
        total = 0  # summed layer by layer in lpips's order
        for m in _maps(self.module, lpips_features(self.module, x), fy):
            total = total + m.mean([2, 3], keepdim=True)
        return total.reshape(-1)

    def __repr__(self) -> str:
        return f"LPIPSDistance({self.name!r}, resolution={self.resolution})"


def _lpips_factory(net: str) -> Callable[[MetricOptions], Metric]:
    def factory(options: MetricOptions) -> Metric:
        return LPIPSMetric(net, options.lpips_weights.get(net), options.device)

    return factory


for _net in LPIPS_NETS:
    register_metric(f"lpips-{_net}", info=LPIPS_INFO[_net])(_lpips_factory(_net))
