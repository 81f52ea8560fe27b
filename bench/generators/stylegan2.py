"""StyleGAN2 generator (mapping + synthesis) at any resolution and width, with the F/W+ split.

The forward pass follows the StyleGAN2 paper (config-e/f, skip generator) and the rosinality layout:
ws index assignment per layer is ``conv1 <- ws[0]``, ``to_rgb1 <- ws[1]``, and for the block at
resolution 2^(j+3): ``convs[2j] <- ws[2j+1]`` (up-conv), ``convs[2j+1] <- ws[2j+2]``,
``to_rgbs[j] <- ws[2j+3]``. Noise maps are constant buffers (``noises.noise_i``), so the same ws always
give the same image.

F/W+ (BDInvert) split at base resolution s = 2^n (reference/methods.md §1.1): ``features(ws, s)`` is the
output of the up-conv at s (after noise, bias and activation); ``synthesis_from(f, ws, s)`` replaces that
output by f and runs the rest, with the coarse RGB skip at s replaced by zero. The first ws used from
there on is M = 2n - 4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bench.compiling import Compilable
from bench.generators.layers import ConstantInput, EqualLinear, PixelNorm, StyledConv, ToRGB


def default_channels(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """NVIDIA-style channel schedule: ``min(channel_base // res, channel_max)`` per resolution."""
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


def rosinality_channels(resolution: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Channel schedule of rosinality's ``Generator(size, 512, 8, channel_multiplier)``."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: c for r, c in table.items() if r <= resolution}


class ChannelsDict:
    """``to_dict`` / ``from_dict`` of a generator configuration dataclass with a ``channels`` {res: n} field."""

    def to_dict(self) -> dict:
        """JSON-ready dict (channel keys as strings)."""
        d = asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["channels"] = {int(k): int(v) for k, v in d["channels"].items()}
        return cls(**d)


@dataclass(frozen=True)
class GeneratorConfig(ChannelsDict):
    """Architecture of a StyleGAN2 generator.

    Attributes:
        resolution: output side in pixels, a power of two >= 8.
        w_dim: w dimension (also the width of the hidden mapping layers).
        n_mlp: number of mapping layers.
        channels: feature channels per resolution, keys 4..resolution.
        lr_mlp: mapping network learning-rate multiplier (0.01 in StyleGAN2).
        z_dim: z dimension (``None``: the same as ``w_dim``; NVIDIA's models may differ).
        conv_clamp: clamp every layer's output to [-conv_clamp, conv_clamp] (NVIDIA StyleGAN2-ADA's
            ``conv_clamp``, 256 in its configurations); ``None`` clamps nothing (rosinality, genforce).
    """

    resolution: int
    w_dim: int = 512
    n_mlp: int = 8
    channels: dict[int, int] = field(default_factory=dict)
    lr_mlp: float = 0.01
    z_dim: int | None = None
    conv_clamp: float | None = None

    def __post_init__(self) -> None:
        log = math.log2(self.resolution) if self.resolution > 0 else -1
        if log != int(log) or self.resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if not self.channels:
            object.__setattr__(self, "channels", rosinality_channels(self.resolution))
        if self.z_dim is None:
            object.__setattr__(self, "z_dim", self.w_dim)
        missing = [2**i for i in range(2, int(log) + 1) if 2**i not in self.channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}: {self.channels}")



class StyleGAN2Generator(Compilable, nn.Module):
    """StyleGAN2 generator implementing the benchmark's generator interface.

    Interface: ``mapping(z) -> w``, ``w_avg``, ``num_ws``, ``synthesis(ws) -> image``,
    ``features(ws, res) -> f``, ``synthesis_from(f, ws, res) -> image``. Images are (N, 3, R, R) float32,
    nominally in [-1, 1] (not clamped: the raw generator output, as in the reference implementations).
    """

    family = "stylegan2"

    def __init__(self, config: GeneratorConfig, *, noise_seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.w_dim, self.z_dim = config.w_dim, int(config.z_dim)
        self.log_size = int(math.log2(config.resolution))
        self.num_ws = 2 * self.log_size - 2
        self.num_layers = 2 * (self.log_size - 2) + 1
        ch = config.channels
        widths = [self.z_dim] + [config.w_dim] * config.n_mlp
        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(widths[i], widths[i + 1], lr_mul=config.lr_mlp, activate=True)
                           for i in range(config.n_mlp)])
        clamp = config.conv_clamp
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], config.w_dim, clamp=clamp)
        self.to_rgb1 = ToRGB(ch[4], config.w_dim, upsample=False, clamp=clamp)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for i in range(3, self.log_size + 1):
            self.convs.append(StyledConv(ch[2 ** (i - 1)], ch[2**i], config.w_dim, upsample=True, clamp=clamp))
            self.convs.append(StyledConv(ch[2**i], ch[2**i], config.w_dim, clamp=clamp))
            self.to_rgbs.append(ToRGB(ch[2**i], config.w_dim, clamp=clamp))
        self.noises = nn.Module()
        gen = torch.Generator().manual_seed(noise_seed)
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r, generator=gen))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        # activations in NHWC (set by bench.accel on CUDA): tensor-core convolutions want that layout
        self.channels_last = False
        # torch.compile the synthesis blocks (set by bench.accel with --compile): fuses the elementwise work
        # around the convolutions (modulation, epilogue, pixel shuffle) into few kernels
        self.compiled = False
        self.compile_label = "the generator"
        self.description = f"StyleGAN2 {config.resolution}px, w_dim {config.w_dim}"

    # ----------------------------------------------------------------------------------- mapping
    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Map z (N, z_dim) to w (N, w_dim), with optional truncation towards ``w_avg``."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg + truncation_psi * (w - self.w_avg)
        return w

    @torch.no_grad()
    def compute_w_avg(self, n: int = 10_000, seed: int = 0) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``mapping(z)`` over n seeded samples and return it."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed))
        self.w_avg.copy_(self.mapping(z.to(self.w_avg.device)).mean(0))
        return self.w_avg

    # --------------------------------------------------------------------------------- synthesis
    def _noise(self, i: int) -> torch.Tensor:
        return getattr(self.noises, f"noise_{i}")

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")

    def _block_index(self, res: int) -> int:
        """Index j of the block at ``res`` (8 px: 0); -1 for the 4x4 layer."""
        j = int(math.log2(res)) - 3 if res > 0 else -2
        if 2 ** (j + 3) != res or not -1 <= j < len(self.to_rgbs):
            raise ValueError(f"base resolution must be a power of two in [4, {self.resolution}], got {res}")
        return j

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run_blocks(self, x: torch.Tensor, skip: torch.Tensor | None, ws: torch.Tensor,
                    start: int) -> torch.Tensor:
        if not (self.compiled and torch.is_grad_enabled()):  # the optimisation steps; one-off renders run eager
            return self._blocks(x, skip, ws, start)
        # W's codes are one w expanded over the layers (stride 0); a contiguous copy (a few kB) lets it share
        # Im2S's and P-norm+'s graph instead of compiling its own (about a minute each on the GPU)
        return self.run_compiled("blocks", self._blocks, x, skip, ws.contiguous(), start)

    def _blocks(self, x: torch.Tensor, skip: torch.Tensor | None, ws: torch.Tensor, start: int) -> torch.Tensor:
        for j in range(start, len(self.to_rgbs)):
            x = self.convs[2 * j](x, ws[:, 2 * j + 1], self._noise(2 * j + 1))
            x = self.convs[2 * j + 1](x, ws[:, 2 * j + 2], self._noise(2 * j + 2))
            skip = self.to_rgbs[j](x, ws[:, 2 * j + 3], skip)
        return skip

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render ws (N, num_ws, w_dim) to images (N, 3, R, R) with the constant noise maps."""
        self._check_ws(ws)
        x = self.conv1(self._layout(self.input(ws.shape[0])), ws[:, 0], self._noise(0))
        skip = self.to_rgb1(x, ws[:, 1])
        return self._run_blocks(x, skip, ws, 0)

    def features(self, ws: torch.Tensor, res: int) -> torch.Tensor:
        """Output of the up-conv at resolution ``res`` (the F/W+ base code f), (N, C_res, res, res).

        At 4x4, where there is no up-conv, f is the output of the 4x4 styled conv (``conv1``): the
        constant input before it is the same for every image, so it could not serve as a base code.
        """
        self._check_ws(ws)
        j_base = self._block_index(res)
        x = self.conv1(self._layout(self.input(ws.shape[0])), ws[:, 0], self._noise(0))
        if j_base < 0:
            return x
        for j in range(j_base):
            x = self.convs[2 * j](x, ws[:, 2 * j + 1], self._noise(2 * j + 1))
            x = self.convs[2 * j + 1](x, ws[:, 2 * j + 2], self._noise(2 * j + 2))
        return self.convs[2 * j_base](x, ws[:, 2 * j_base + 1], self._noise(2 * j_base + 1))

    def synthesis_from(self, f: torch.Tensor, ws: torch.Tensor, res: int) -> torch.Tensor:
        """Render from a base code f at ``res``; only ws[M:] are used, M = first_ws_index(res).

        The RGB skip arriving at ``res`` from coarser layers is replaced by zero (BDInvert).
        """
        self._check_ws(ws)
        j = self._block_index(res)
        expected = (self.config.channels[res], res, res)
        if f.ndim != 4 or tuple(f.shape[1:]) != expected or f.shape[0] != ws.shape[0]:
            raise ValueError(f"f must have shape (N, {expected}) with N = {ws.shape[0]}, got {tuple(f.shape)}")
        if j < 0:  # 4x4: f is conv1's output, so only the 4x4 RGB layer and the blocks above run
            x = self._layout(f)
            return self._run_blocks(x, self.to_rgb1(x, ws[:, 1]), ws, 0)
        x = self.convs[2 * j + 1](self._layout(f), ws[:, 2 * j + 2], self._noise(2 * j + 2))
        skip = self.to_rgbs[j](x, ws[:, 2 * j + 3], None)
        return self._run_blocks(x, skip, ws, j + 1)

    def first_ws_index(self, res: int) -> int:
        """M, the first ws row that ``synthesis_from(f, ws, res)`` uses (2*log2(res) - 4; 1 at 4x4)."""
        j = self._block_index(res)
        return 1 if j < 0 else 2 * (j + 3) - 4

    def feature_shape(self, res: int) -> tuple[int, int, int]:
        """(C, res, res) of the base code at ``res``."""
        self._block_index(res)
        return (self.config.channels[res], res, res)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Sample images from z (N, z_dim): one w broadcast to all layers."""
        w = self.mapping(z, truncation_psi)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1))
