"""pSp (Richardson et al., CVPR 2021): a feature-pyramid encoder that maps an image to W+ in one pass.

Architecture (reference/methods.md §5.1, scaled to the generator): a residual IR-SE backbone (stem conv
+ BN + PReLU, then four stages whose first unit has stride 2), feature taps after stages 2, 3 and 4
(strides 4, 8 and 16, as pSp's 64/32/16 maps of a 256 input), an FPN that merges them top-down
(bilinear upsampling, align_corners=True, plus 1x1 lateral convs), and one map2style head per ws row:
stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1, then a linear layer to ``w_dim``. Coarse rows read
the coarsest map, middle rows the middle map, fine rows the finest, in pSp's 3/4/11-of-18 proportions
(:func:`style_split`). The output is added to the latent average stored with the encoder
(``--start_from_latent_avg``).

Deviations, stated: the backbone is trained from scratch (pSp starts from ArcFace IR-SE-50 weights, which
neither exist for this domain nor could be downloaded); widths are scaled down (defaults: stem 16, stages
24/32/48/48 with 1/2/3/2 units, FPN and heads 48 wide, about 1.1M parameters for the 64 px world) and the
SE reduction is 8 (pSp: 16) because the channel counts are small. The encoder sees the target at its own
``input_size`` (antialiased bilinear resize if the generator's resolution differs; pSp resizes to 256).

Inversion is a single forward pass (no optimisation, ``steps`` 0); editing adds the direction in W+.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import GeneratorLike, Inversion, Method, PerceptualLike, Preset, check_targets, register_preset
from methods.optim import perceptual_note, reconstruction_loss


def style_split(num_ws: int) -> tuple[int, int, int]:
    """Rows read from the (coarse, middle, fine) maps, in pSp's 3/4/11-of-18 proportions.

    Args:
        num_ws: the generator's number of ws rows (>= 3).

    Returns:
        Counts summing to ``num_ws``: ``(3, 4, 11)`` for 18 rows, ``(2, 2, 6)`` for 10, ``(1, 2, 5)`` for 8.
    """
    if num_ws < 3:
        raise ValueError(f"pSp needs at least 3 ws rows (coarse, middle, fine), got num_ws={num_ws}")
    coarse = max(1, round(num_ws * 3 / 18))
    middle = max(1, round(num_ws * 7 / 18) - coarse)
    return coarse, middle, num_ws - coarse - middle


class SqueezeExcite(nn.Module):
    """Channel gating from the globally pooled features (per image)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class IRSEUnit(nn.Module):
    """pSp's ``bottleneck_IR_SE``: BN, conv3x3, PReLU, conv3x3 (stride), BN, SE, plus a shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            SqueezeExcite(c_out))
        if c_in == c_out:
            self.shortcut: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(x) + self.shortcut(x)


class Map2Style(nn.Module):
    """pSp's ``GradualStyleBlock``: log2(side) stride-2 convs + LeakyReLU(0.01) to 1x1, then a linear layer."""

    def __init__(self, channels: int, side: int, w_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(side))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


@dataclass(frozen=True)
class PSPConfig:
    """Architecture of a :class:`PSPEncoder` (stored in its file's metadata).

    Attributes:
        num_ws: generator ws rows.
        w_dim: generator w dimension.
        input_size: side of the encoder's input image (a power of two >= 32).
        stem_width: channels of the full-resolution stem.
        stage_widths: channels of the four backbone stages; the last is also the FPN and head width.
        stage_units: IR-SE units per stage.
        repeat_last: trailing ws rows that repeat the last head's code instead of having heads of their own
            (an encoder trained for a generator with fewer layers, lifted to one that adds finer layers on
            the same W space: ``bench.world.world256.lift_encoder``); ``num_ws`` counts them.
    """

    num_ws: int
    w_dim: int
    input_size: int = 64
    stem_width: int = 16
    stage_widths: tuple[int, int, int, int] = (24, 32, 48, 48)
    stage_units: tuple[int, int, int, int] = (1, 2, 3, 2)
    repeat_last: int = 0

    def __post_init__(self) -> None:
        side = self.input_size
        if side < 32 or side & (side - 1):
            raise ValueError(f"pSp encoder input_size must be a power of two >= 32, got {side}")
        if len(self.stage_widths) != 4 or len(self.stage_units) != 4 or min(self.stage_units) < 1:
            raise ValueError(f"pSp encoder needs 4 stages with >= 1 unit each, got widths {self.stage_widths} "
                             f"and units {self.stage_units}")
        if not 0 <= self.repeat_last <= self.num_ws - 3:
            raise ValueError(f"pSp encoder repeat_last must be in [0, num_ws - 3], got {self.repeat_last}")
        style_split(self.num_ws - self.repeat_last)


class PSPEncoder(nn.Module):
    """pSp's GradualStyleEncoder scaled down (see the module docstring); from-scratch backbone.

    ``forward`` maps (N, 3, S, S) images in [-1, 1] (S = ``config.input_size``) to W+ codes
    (N, num_ws, w_dim): the heads' output plus the buffer ``latent_avg`` (num_ws, w_dim), which the
    trainer sets to the generator's ``w_avg`` (pSp's ``start_from_latent_avg``).
    """

    def __init__(self, config: PSPConfig) -> None:
        super().__init__()
        self.config = c = config
        self.input_layer = nn.Sequential(nn.Conv2d(3, c.stem_width, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(c.stem_width), nn.PReLU(c.stem_width))
        stages, c_in = [], c.stem_width
        for width, units in zip(c.stage_widths, c.stage_units, strict=True):
            stages.append(nn.Sequential(*[IRSEUnit(c_in if u == 0 else width, width, 2 if u == 0 else 1)
                                          for u in range(units)]))
            c_in = width
        self.stages = nn.ModuleList(stages)
        fpn = c.stage_widths[3]
        self.latlayer1 = nn.Conv2d(c.stage_widths[2], fpn, 1)
        self.latlayer2 = nn.Conv2d(c.stage_widths[1], fpn, 1)
        heads = c.num_ws - c.repeat_last
        coarse, middle, _ = style_split(heads)
        sides = [c.input_size // 16] * coarse + [c.input_size // 8] * middle
        sides += [c.input_size // 4] * (heads - coarse - middle)
        self.styles = nn.ModuleList([Map2Style(fpn, s, c.w_dim) for s in sides])
        self.split = (coarse, coarse + middle)
        self.register_buffer("latent_avg", torch.zeros(c.num_ws, c.w_dim))

    def set_latent_avg(self, w_avg: torch.Tensor) -> None:
        """Store the generator's average latent ((w_dim,) or (num_ws, w_dim)) as the output offset."""
        with torch.no_grad():
            self.latent_avg.copy_(w_avg.detach().expand_as(self.latent_avg))

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the FPN maps (c3, p2, p1) at strides 16, 8 and 4."""
        x = self.input_layer(x)
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        c1, c2, c3 = taps[1], taps[2], taps[3]
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer2(c1)
        return c3, p2, p1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.config.input_size
        if x.ndim != 4 or x.shape[1:] != (3, side, side):
            raise ValueError(f"pSp encoder input must be (N, 3, {side}, {side}), got {tuple(x.shape)}")
        maps = self.pyramid(x)
        a, b = self.split
        codes = [head(maps[0] if i < a else maps[1] if i < b else maps[2]) for i, head in enumerate(self.styles)]
        codes += codes[-1:] * self.config.repeat_last
        return torch.stack(codes, dim=1) + self.latent_avg


def encoder_input(images: torch.Tensor, side: int) -> torch.Tensor:
    """Resize (N, 3, R, R) images to the encoder's input side (antialiased bilinear; identity if R == side)."""
    if images.shape[-1] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


class PSP(Method):
    """pSp inversion: ``wp = E(x)``, one forward pass of the encoder; editing adds directions in W+."""

    @dataclass(frozen=True)
    class Params:
        """Hyper-parameters. The loss weights only define the reported per-image ``loss`` (pSp's objective).

        Attributes:
            steps: always 0 (feed-forward).
            mse_weight: weight of the MSE term (pSp ``l2_lambda`` 1).
            perceptual_weight: weight of the perceptual term (pSp ``lpips_lambda`` 0.8).
        """

        steps: int = 0
        mse_weight: float = 1.0
        perceptual_weight: float = 0.8

    def __init__(self, name: str, params: Params, encoder: nn.Module | None = None) -> None:
        if params.steps != 0:
            raise ValueError(f"method {name!r} is a single encoder forward pass; steps must be 0, got {params.steps}")
        super().__init__(name, params)
        self.encoder = encoder

    def _encode(self, targets: torch.Tensor, generator: GeneratorLike) -> torch.Tensor:
        enc = self.encoder
        if enc is None:
            raise ValueError(f"method {self.name!r} needs a pSp encoder trained for this generator; none was given "
                             "(bench zoo ls, or --encoder psp=PATH)")
        cfg = getattr(enc, "config", None)
        if cfg is not None and (cfg.num_ws, cfg.w_dim) != (generator.num_ws, generator.w_dim):
            raise ValueError(f"pSp encoder outputs ({cfg.num_ws}, {cfg.w_dim}) codes but the generator has "
                             f"num_ws={generator.num_ws}, w_dim={generator.w_dim}: it was trained for another "
                             "generator")
        enc.eval()
        side = cfg.input_size if cfg is not None else generator.resolution
        with torch.no_grad():
            return enc(encoder_input(targets, side)).float()

    def invert(self, targets: torch.Tensor, generator: GeneratorLike, *, seeds: Sequence[int],
               perceptual: PerceptualLike | None = None) -> Inversion:
        """Encode targets (N, 3, R, R) in [-1, 1] to W+ ``latents["wp"]`` (N, num_ws, w_dim); deterministic.

        ``seeds`` are not needed. ``loss`` is pSp's objective per image: ``mse_weight * MSE +
        perceptual_weight * d`` of the reconstruction (d skipped when ``perceptual`` is None). An image whose
        code is not finite is marked failed (loss NaN) and rendered from the mean latent.
        """
        check_targets(targets, generator.resolution)
        p = self.params
        wp = self._encode(targets, generator)
        ok = torch.isfinite(wp).flatten(1).all(1)
        wp = torch.where(ok[:, None, None], wp, generator.w_avg.detach().to(wp).expand_as(wp))
        info = {**asdict(p), "perceptual": perceptual_note(perceptual, p.perceptual_weight),
                "note": "single forward pass of the pSp encoder (start_from_latent_avg)"}
        with torch.no_grad():
            rec = generator.synthesis(wp)
            loss = reconstruction_loss(rec, targets, perceptual, p.mse_weight, p.perceptual_weight)
        loss = torch.where(ok, loss, torch.full_like(loss, float("nan")))
        failed = tuple(None if k else "encoder output is not finite" for k in ok.tolist())
        return Inversion(self.name, {"wp": wp}, rec.clamp(-1, 1), loss, failed, info)


register_preset(Preset(
    name="psp", cls=PSP, params={}, latent_space="W+", needs_encoder=True,
    description="pSp: feature-pyramid encoder with per-style map2style heads, one forward pass to W+ "
                "(start from the mean latent); backbone trained from scratch on procfaces",
    reference="Richardson et al. Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation. CVPR 2021"))
