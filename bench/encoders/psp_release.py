"""pSp and e4e checkpoints: the encoder, and the decoder as the benchmark's generator.

File (reference/methods.md §7.4): ``{'state_dict': net.state_dict(), 'opts': vars(opts), 'latent_avg':
(n_styles, 512)}``, read with ``weights_only=True``. ``state_dict`` holds ``encoder.*`` (the encoder) and
``decoder.*`` (a rosinality StyleGAN2 ``Generator``, the layout of ``bench.generators.checkpoints``).
``opts['encoder_type']`` picks the forward pass over the same keys:

- ``GradualStyleEncoder`` (pSp, §5.1): IR-SE-50 backbone (stem conv3x3 + BN + PReLU; 24 units in stages of
  3/4/14/3 at 64/128/256/512 channels, each ``BN, conv3x3, PReLU, conv3x3(stride), BN, SE(16)`` plus a
  max-pool or conv1x1 + BN shortcut); taps after units 6, 20 and 23; FPN ``p2 = up(c3) + lat1(c2)``,
  ``p1 = up(p2) + lat2(c1)`` (bilinear, align_corners=True); one map2style head per style (stride-2
  conv3x3 + LeakyReLU(0.01), log2(16 / 32 / 64) times, then an ``EqualLinear``); styles 0-2 read c3, 3-6
  p2, 7.. p1.
- ``Encoder4Editing`` (e4e): the same network; style 0 gives w, repeated on every row, and each further
  head adds its delta to its own row (the inference stage: all deltas).

``codes + latent_avg`` when ``opts['start_from_latent_avg']``. The number of styles is
``2 * log2(size) - 2`` with ``size`` = ``opts['output_size']`` (pSp) or ``opts['stylegan_size']`` (e4e)
and must match the heads in the file. The encoder sees 256 x 256 images in [-1, 1] (pSp's transforms);
the method resizes its targets to that side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.encoders.files import EncoderFileError, check_keys, load_checked, read_torch_file

FORMAT = "pSp/e4e checkpoint ({'state_dict': encoder.* + decoder.*, 'opts', 'latent_avg'})"
ENCODER_TYPES = ("GradualStyleEncoder", "Encoder4Editing")
IR_SE50 = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))  # (in, depth, units) per stage
TAPS = (6, 20, 23)  # units whose outputs are c1, c2, c3
COARSE, MIDDLE = 3, 7  # first middle and first fine style


class SqueezeExcite(nn.Module):
    """Channel gate: global average, 1x1 conv down by ``reduction``, ReLU, 1x1 conv up, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class IRSEUnit(nn.Module):
    """One IR-SE unit (key names ``shortcut_layer`` and ``res_layer`` as in the released files)."""

    def __init__(self, c_in: int, depth: int, stride: int) -> None:
        super().__init__()
        if c_in == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(c_in, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.Conv2d(c_in, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SqueezeExcite(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """Linear layer whose weight is scaled by 1/sqrt(in) at run time (StyleGAN2's equalised learning rate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim_out, dim_in))
        self.bias = nn.Parameter(torch.zeros(dim_out))
        self.scale = 1 / math.sqrt(dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class Map2Style(nn.Module):
    """map2style head: log2(spatial) x [stride-2 conv3x3 + LeakyReLU(0.01)], flatten, EqualLinear."""

    def __init__(self, channels: int, spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class GradualStyleNet(nn.Module):
    """The pSp / e4e encoder network over the released keys (``input_layer``, ``body``, ``styles``, ``latlayer*``)."""

    def __init__(self, n_styles: int, e4e: bool) -> None:
        super().__init__()
        self.e4e = e4e
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = [IRSEUnit(c_in if u == 0 else depth, depth, 2 if u == 0 else 1)
                 for c_in, depth, count in IR_SE50 for u in range(count)]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList([Map2Style(512, 16 if i < COARSE else 32 if i < MIDDLE else 64)
                                     for i in range(n_styles)])
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The feature maps (c3, p2, p1) that the coarse, middle and fine heads read."""
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in TAPS:
                taps.append(x)
        c1, c2, c3 = taps
        p2 = F.interpolate(c3, size=c2.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer1(c2)
        p1 = F.interpolate(p2, size=c1.shape[-2:], mode="bilinear", align_corners=True) + self.latlayer2(c1)
        return c3, p2, p1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.pyramid(x)
        codes = [head(maps[0] if i < COARSE else maps[1] if i < MIDDLE else maps[2])
                 for i, head in enumerate(self.styles)]
        if not self.e4e:
            return torch.stack(codes, dim=1)
        w = codes[0][:, None].repeat(1, len(codes), 1)
        deltas = torch.stack([torch.zeros_like(codes[0]), *codes[1:]], dim=1)
        return w + deltas


@dataclass(frozen=True)
class ReleasedPSPConfig:
    """What ``methods.psp`` reads from an encoder: its W+ shape and input side."""

    num_ws: int
    w_dim: int = 512
    input_size: int = 256
    encoder_type: str = "GradualStyleEncoder"


class ReleasedPSPEncoder(nn.Module):
    """A released pSp / e4e encoder: ``codes = net(x) (+ latent_avg)``, (N, 3, S, S) -> (N, n_styles, 512)."""

    def __init__(self, net: GradualStyleNet, latent_avg: torch.Tensor | None, config: ReleasedPSPConfig) -> None:
        super().__init__()
        self.net, self.config = net, config
        self.register_buffer("latent_avg", torch.zeros(config.num_ws, config.w_dim) if latent_avg is None
                             else latent_avg.float().expand(config.num_ws, config.w_dim).clone())
        self.add_latent_avg = latent_avg is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.net(x)
        return codes + self.latent_avg if self.add_latent_avg else codes


def is_psp_checkpoint(obj: object) -> bool:
    """Whether a loaded ``.pt`` object looks like a pSp / e4e checkpoint."""
    return (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "opts" in obj
            and any(k.startswith("encoder.") for k in obj["state_dict"]))


def _part(obj: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in obj["state_dict"].items() if k.startswith(prefix + ".")}


def _n_styles(opts: dict, path: Path, e4e: bool) -> int:
    key = "stylegan_size" if e4e else "output_size"
    size = opts.get(key, 1024)
    if not isinstance(size, int) or size < 8 or size & (size - 1):
        raise EncoderFileError(f"{path}: {FORMAT}: opts[{key!r}] = {size!r} is not a power of two >= 8")
    return 2 * int(math.log2(size)) - 2


def _latent_avg(obj: dict, opts: dict, n_styles: int, path: Path) -> torch.Tensor | None:
    if not opts.get("start_from_latent_avg", False):
        return None
    avg = obj.get("latent_avg")
    if not isinstance(avg, torch.Tensor) or avg.shape not in ((512,), (1, 512), (n_styles, 512)):
        shape = tuple(avg.shape) if isinstance(avg, torch.Tensor) else type(avg).__name__
        raise EncoderFileError(f"{path}: {FORMAT}: start_from_latent_avg is set but latent_avg is {shape}, "
                               f"expected (512,) or ({n_styles}, 512)")
    return avg


def encoder_from_checkpoint(obj: object, path: str | Path, device: torch.device | str = "cpu") -> ReleasedPSPEncoder:
    """Build the encoder of an already loaded pSp / e4e checkpoint (strict keys and shapes).

    Raises:
        EncoderFileError: naming the file if the layout, ``opts`` or any key or shape does not fit.
    """
    path = Path(path)
    if not is_psp_checkpoint(obj):
        raise EncoderFileError(f"{path}: not a {FORMAT}")
    opts = obj["opts"] if isinstance(obj["opts"], dict) else {}
    kind = opts.get("encoder_type")
    if kind not in ENCODER_TYPES:
        raise EncoderFileError(f"{path}: {FORMAT}: opts['encoder_type'] is {kind!r}; supported: {ENCODER_TYPES}")
    e4e = kind == "Encoder4Editing"
    n_styles = _n_styles(opts, path, e4e)
    if opts.get("input_nc", 3) != 3:
        raise EncoderFileError(f"{path}: {FORMAT}: input_nc {opts.get('input_nc')} (not an RGB inversion encoder)")
    state = _part(obj, "encoder")
    heads = {int(k.split(".")[1]) for k in state if k.startswith("styles.")}
    if heads and len(heads) != n_styles:  # checked first: building the network costs 100M+ weights
        raise EncoderFileError(f"{path}: {FORMAT}: {len(heads)} map2style heads in encoder.styles, but opts give "
                               f"{n_styles} styles")
    net = load_checked(GradualStyleNet(n_styles, e4e), state, path, f"{FORMAT} {kind}", device)
    enc = ReleasedPSPEncoder(net, _latent_avg(obj, opts, n_styles, path), ReleasedPSPConfig(n_styles, 512, 256, kind))
    enc = enc.to(device).eval().requires_grad_(False)
    enc.family, enc.source = "psp", f"{path.name} ({'e4e' if e4e else 'pSp'} release format, {kind})"
    return enc


def load_psp_encoder(path: str | Path, device: torch.device | str = "cpu") -> ReleasedPSPEncoder:
    """Load the encoder of a pSp / e4e ``.pt`` checkpoint (weights only), frozen and in eval mode."""
    return encoder_from_checkpoint(read_torch_file(path, "pSp/e4e checkpoint"), path, device)


def generator_from_checkpoint(obj: object, path: str | Path):
    """The checkpoint's ``decoder.*`` as a :class:`~bench.generators.stylegan2.StyleGAN2Generator` (strict).

    ``w_avg`` is ``latent_avg`` (its first row: pSp stores the generator's latent_avg repeated per style).
    """
    from bench.generators.checkpoints import infer_rosinality_config
    from bench.generators.stylegan2 import StyleGAN2Generator

    path = Path(path)
    if not is_psp_checkpoint(obj):
        raise EncoderFileError(f"{path}: not a {FORMAT}")
    sd = {k: v.float() for k, v in _part(obj, "decoder").items()}
    if not sd:
        raise EncoderFileError(f"{path}: {FORMAT}: no decoder.* weights")
    gen = StyleGAN2Generator(infer_rosinality_config(sd, str(path)))
    check_keys({k: v for k, v in gen.state_dict().items() if k != "w_avg"}, sd, path, f"{FORMAT} decoder")
    gen.load_state_dict({**sd, "w_avg": gen.w_avg}, strict=True)
    avg = obj.get("latent_avg")
    if isinstance(avg, torch.Tensor) and avg.shape[-1] == gen.w_dim:
        gen.w_avg.copy_(avg.float().reshape(-1, gen.w_dim)[0])
        note = "latent_avg from file"
    else:
        gen.compute_w_avg(10_000, seed=0)
        note = "w_avg = mean of 10000 mapped samples (file has no latent_avg)"
    gen.description = f"StyleGAN2 {gen.resolution}px, the decoder of {path.name} (pSp/e4e .pt; {note})"
    return gen.eval().requires_grad_(False)


def load_generator_file(path: str | Path):
    """Load a generator: a world by name (``world256``, ``world64``), a pSp / e4e decoder, or ``load_generator``'s."""
    from bench.generators.checkpoints import load_generator, load_rosinality

    if str(path) == "world256" and not Path(path).exists():
        from bench.world import world256

        return world256.load()
    if str(path) == "world64" and not Path(path).exists():
        from bench.world.defaults import default_generator

        return default_generator()
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth") and path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not ours to judge: load_generator reports the file's problem
            obj = None
        if is_psp_checkpoint(obj):
            return generator_from_checkpoint(obj, path)
        if isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict):
            return load_rosinality(path)
    return load_generator(path)
