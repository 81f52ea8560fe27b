"""IDinvert's released encoder (``styleganinv_ffhq256_encoder.pth``) and perceptual VGG16 (``vgg16.pth``).

Encoder (reference/methods.md §4.2; idinvert_pytorch ``StyleGANEncoderNet``), a plain state dict: for an
input side R there are log2(R) blocks. ``block0``: conv3x3 (no bias) + BN + LReLU(0.2) at ``base``
channels. ``block1`` .. ``block{n-2}``, each after an AvgPool(2): a residual block whose width doubles up
to ``max`` (conv3x3 -> +bias (``wscale1``) -> BN -> LReLU, the same again, plus a conv1x1 + BN + LReLU
shortcut when the width changes). ``block{n-1}``: a dense layer (no bias, weight scaled by 1/sqrt(in)) to
``w_dim * num_ws`` values + BN, with num_ws = 2 (n - 1) (14 at 256 px). BN layers keep their weights
under ``bn.bn.*``. The output is the W+ code (N, num_ws, w_dim) of IDinvert's own StyleGAN v1 generator.
Widths, resolution, w_dim and whether BN is used are read from the shapes, then every key and shape is
checked (``num_batches_tracked`` may be absent, as PyTorch allows). ``use_wscale`` is not visible in the
weights; the released model does not use it (``models/model_settings.py``), and neither does this loader.

VGG16 (``models/perceptual_model.py``): torchvision-style convs named ``layer{i}`` (13 convs, i = 0 ..
28); the feature is the ReLU after conv4_3 (the first 23 layers), computed on inputs mapped from [-1, 1]
to [0, 255], RGB -> BGR, minus (103.939, 116.779, 123.68). IDinvert's perceptual term is the mean squared
difference of these features (weight 5e-5).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.encoders.files import EncoderFileError, load_checked, read_torch_file

FORMAT = "IDinvert encoder state dict (StyleGANEncoderNet)"
VGG_FORMAT = "IDinvert perceptual VGG16 state dict (layer{i}.weight/bias)"
GAIN = math.sqrt(2.0)


class _BN(nn.Module):
    """BatchNorm kept under ``bn`` (IDinvert's ``BatchNormLayer``), eps 1e-5."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class _Bias(nn.Module):
    """The bias that IDinvert's ``WScaleLayer`` adds after rescaling by gain / sqrt(fan_in)."""

    def __init__(self, channels: int, fan_in: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = GAIN / math.sqrt(fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias.view(1, -1, 1, 1)


def _bn(channels: int, use_bn: bool) -> nn.Module:
    return _BN(channels) if use_bn else nn.Identity()


class FirstBlock(nn.Module):
    """conv3x3 (no bias) -> BN -> LReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, use_bn: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn = _bn(c_out, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), 0.2)


class ResBlock(nn.Module):
    """Two conv3x3 + bias + BN + LReLU (hidden width min(in, out)) plus an identity or conv1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, use_bn: bool) -> None:
        super().__init__()
        hidden = min(c_in, c_out)
        self.add_shortcut = c_in != c_out
        if self.add_shortcut:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
            self.bn = _bn(c_out, use_bn)
        self.conv1 = nn.Conv2d(c_in, hidden, 3, 1, 1, bias=False)
        self.wscale1 = _Bias(hidden, c_in * 9)
        self.bn1 = _bn(hidden, use_bn)
        self.conv2 = nn.Conv2d(hidden, c_out, 3, 1, 1, bias=False)
        self.wscale2 = _Bias(c_out, hidden * 9)
        self.bn2 = _bn(c_out, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn(self.conv(x)), 0.2) if self.add_shortcut else x
        # the released code divides by the scale that wscale multiplies back (use_wscale=False)
        h = F.leaky_relu(self.bn1(self.wscale1(self.conv1(x) / self.wscale1.scale)), 0.2)
        h = F.leaky_relu(self.bn2(self.wscale2(self.conv2(h) / self.wscale2.scale)), 0.2)
        return h + y


class LastBlock(nn.Module):
    """Dense layer (no bias) scaled by 1/sqrt(in), then BN over the outputs."""

    def __init__(self, c_in: int, c_out: int, use_bn: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out, bias=False)
        self.scale = 1.0 / math.sqrt(c_in)
        self.bn = _bn(c_out, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x.flatten(1)) * self.scale
        return self.bn(x[:, :, None, None]).flatten(1)


class ReleasedIDInvertEncoder(nn.Module):
    """IDinvert's encoder: (N, 3, R, R) images in [-1, 1] -> W+ codes (N, num_ws, w_dim)."""

    def __init__(self, resolution: int, w_dim: int = 512, base: int = 64, max_channels: int = 1024,
                 use_bn: bool = True) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"IDinvert encoder resolution must be a power of two >= 8, got {resolution}")
        self.resolution, self.w_dim, self.base, self.max_channels, self.use_bn = (
            resolution, w_dim, base, max_channels, use_bn)
        self.num_blocks = int(math.log2(resolution))
        self.num_ws = 2 * (self.num_blocks - 1)
        c_in, c_out = 3, base
        for i in range(self.num_blocks):
            if i == 0:
                block: nn.Module = FirstBlock(c_in, c_out, use_bn)
            elif i == self.num_blocks - 1:
                c_in, c_out = c_in * 16, w_dim * self.num_ws
                block = LastBlock(c_in, c_out, use_bn)
            else:
                block = ResBlock(c_in, c_out, use_bn)
            self.add_module(f"block{i}", block)
            c_in, c_out = c_out, min(c_out * 2, max_channels)

    def config(self) -> dict[str, int | bool]:
        """Architecture (recorded in results)."""
        return {"num_ws": self.num_ws, "w_dim": self.w_dim, "resolution": self.resolution, "base": self.base,
                "max_channels": self.max_channels, "use_bn": self.use_bn, "layout": "idinvert release"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, self.resolution, self.resolution):
            side = self.resolution
            raise ValueError(f"encoder input must be (N, 3, {side}, {side}), got {tuple(x.shape)}")
        for i in range(self.num_blocks):
            if 0 < i < self.num_blocks - 1:
                x = F.avg_pool2d(x, 2)
            x = getattr(self, f"block{i}")(x)
        return x.view(-1, self.num_ws, self.w_dim)


def is_idinvert_encoder(obj: object) -> bool:
    """Whether a loaded ``.pth`` object looks like IDinvert's encoder state dict."""
    return isinstance(obj, dict) and "block0.conv.weight" in obj and any(
        re.fullmatch(r"block\d+\.fc\.weight", str(k)) for k in obj)


def encoder_from_state(state: object, path: str | Path, device: torch.device | str = "cpu") -> ReleasedIDInvertEncoder:
    """Build the encoder from an already loaded state dict (strict keys and shapes).

    Raises:
        EncoderFileError: naming the file if it is not IDinvert's encoder layout.
    """
    path = Path(path)
    if not is_idinvert_encoder(state):
        raise EncoderFileError(f"{path}: not an {FORMAT}")
    n = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"block(\d+)\.", str(k))))
    fc = state.get(f"block{n - 1}.fc.weight")
    num_ws = 2 * (n - 1)
    if fc is None or fc.ndim != 2 or fc.shape[0] % num_ws:
        raise EncoderFileError(f"{path}: {FORMAT}: block{n - 1}.fc.weight missing or not divisible into {num_ws} ws")
    widths = [int(v.shape[0]) for k, v in state.items() if re.fullmatch(r"block\d+\.conv2?\.weight", str(k))]
    enc = ReleasedIDInvertEncoder(2**n, int(fc.shape[0]) // num_ws, int(state["block0.conv.weight"].shape[0]),
                                  max(widths), use_bn="block0.bn.bn.weight" in state)
    optional = [k for k in enc.state_dict() if k.endswith("num_batches_tracked")]
    enc = load_checked(enc, state, path, FORMAT, device, optional)
    enc.family, enc.source = "idinvert", f"{path.name} (IDinvert release format)"
    return enc


def load_idinvert_encoder(path: str | Path, device: torch.device | str = "cpu") -> ReleasedIDInvertEncoder:
    """Load ``styleganinv_*_encoder.pth`` (weights only), frozen and in eval mode."""
    return encoder_from_state(read_torch_file(path, "IDinvert encoder"), path, device)


VGG_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
             17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
VGG_POOLS = (4, 9, 16, 23, 30)
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


class IDInvertVGG16(nn.Module):
    """IDinvert's perceptual VGG16 features (the ReLU after conv4_3) of [-1, 1] RGB images.

    ``__call__(x, y)`` is the perceptual distance: per image, the mean squared feature difference.
    """

    name = "idinvert-vgg16-conv4_3"
    output_layer = 23

    def __init__(self) -> None:
        super().__init__()
        for i, (c_in, c_out) in VGG_CONVS.items():
            self.add_module(f"layer{i}", nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.register_buffer("mean_bgr", torch.tensor(VGG_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 512, R/8, R/8) features of (N, 3, R, R) images in [-1, 1]."""
        x = (x + 1) * 127.5
        x = x[:, [2, 1, 0]] - self.mean_bgr
        for i in range(self.output_layer):
            if i in VGG_CONVS:
                x = getattr(self, f"layer{i}")(x)
            elif i in VGG_POOLS:
                x = F.max_pool2d(x, 2, 2)
            else:
                x = F.relu(x)
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.features(y)).square().flatten(1).mean(1)


def load_idinvert_vgg16(path: str | Path, device: torch.device | str = "cpu") -> IDInvertVGG16:
    """Load IDinvert's ``vgg16.pth`` (weights only, all 13 convs, strict), frozen and in eval mode."""
    state = read_torch_file(path, "IDinvert VGG16")
    if not isinstance(state, dict):
        raise EncoderFileError(f"{path}: not an {VGG_FORMAT}; got {type(state).__name__}")
    return load_checked(IDInvertVGG16(), state, path, VGG_FORMAT, device)
