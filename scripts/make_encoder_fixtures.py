"""Build the encoder fixtures under ``tests/encoders_fixtures`` by running the official network definitions.

The official code is not part of this project: export the files it needs from each repository into a
scratch folder outside the repository, one sub-folder per repository (``git --git-dir=DIR show
HEAD:path``), and point ``--official`` at that folder::

    OFFICIAL/bdinvert  kkang831/BDInvert_Release    models/stylegan_basecode_encoder.py BDInvert/pca_p_space.py
    OFFICIAL/psp       eladrich/pixel2style2pixel   models/{__init__,encoders/*,stylegan2/*,stylegan2/op/*}.py
    OFFICIAL/e4e       omertov/encoder4editing      (the same files)
    OFFICIAL/idinvert  genforce/idinvert_pytorch    models/{stylegan_encoder_network,perceptual_model,model_settings}.py
    OFFICIAL/sefa      genforce/sefa                utils.py models/*.py

    python scripts/make_encoder_fixtures.py --official /work/scratch/enc_official --out tests/encoders_fixtures

For each network the script instantiates the official class, fills it with
:func:`bench.encoders.reference.seeded_state_dict` weights (float32), runs it on seeded images and writes
``NAME.json`` (official keys and shapes, weight checksums, settings, the repository commit) and
``NAME_expected.safetensors`` (inputs are rebuilt from their seed; the outputs are stored, float32). The
tests rebuild the weights, write them in the released file layout, load them through the project's
loaders and compare: no official code is needed there. The CUDA ops of the pSp/e4e StyleGAN2 module are
stubbed (the encoders never call them) and ``cv2`` is stubbed for SeFa's ``utils`` (unused by
``factorize_weight``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.encoders.reference import seeded_images, seeded_state_dict, state_checksums

REPOS = {"bdinvert": "kkang831/BDInvert_Release", "psp": "eladrich/pixel2style2pixel",
         "e4e": "omertov/encoder4editing", "idinvert": "genforce/idinvert_pytorch", "sefa": "genforce/sefa"}
COMMITS = {"bdinvert": "8bbd373fd2f394d24e704880923e3238b380745f", "psp": "5cfff385beb7b95fbce775662b48fcc80081928d",
           "e4e": "99ea50578695d2e8a1cf7259d8ee89b23eea942b", "idinvert": "ce866b05f13ff0466e26f1641292b456315a75a0",
           "sefa": "0d16060208506f5a68df8826bd581a7e0cf0cb4c"}
PSP_UNIT_STD = (r"styles\.\d+\.linear\.weight$",)  # EqualLinear scales its weight by 1/sqrt(in) at run time


@contextlib.contextmanager
def official(root: Path) -> Iterator[None]:
    """Import from ``root`` (an exported official repository); forget its ``models`` package afterwards."""
    import torch.utils.cpp_extension as cpp

    saved_load, saved_path = cpp.load, list(sys.path)
    cpp.load = lambda *a, **k: types.SimpleNamespace()  # pSp/e4e compile CUDA ops at import; unused here
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        cpp.load, sys.path[:] = saved_load, saved_path
        for name in [n for n in sys.modules if n == "models" or n.startswith("models.") or n == "utils"]:
            del sys.modules[name]


def fill(net: torch.nn.Module, seed: int, unit_std: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Load seeded weights into an official network (strict) and return them."""
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    state = seeded_state_dict(shapes, seed, unit_std)
    net.load_state_dict(state, strict=True)
    return state


def write(out: Path, name: str, state: dict, settings: dict, outputs: dict[str, torch.Tensor]) -> None:
    """Write ``NAME.json`` and ``NAME_expected.safetensors``."""
    repo = name.split("_")[0]
    record = {"repository": REPOS[repo], "commit": COMMITS[repo], "settings": settings,
              "shapes": {k: list(v.shape) for k, v in state.items()}, "checksums": state_checksums(state),
              "made_by": "python scripts/make_encoder_fixtures.py --official OFFICIAL --out tests/encoders_fixtures",
              "project_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                               text=True).stdout.strip()}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    path = out / f"{name}_expected.safetensors"
    save_file({k: v.detach().float().contiguous() for k, v in outputs.items()}, str(path))
    path.chmod(0o644)
    print(f"{name}: {sum(v.numel() for v in state.values()):,} weights; outputs "
          f"{ {k: tuple(v.shape) for k, v in outputs.items()} }")


def _function_from(path: Path, name: str, namespace: dict) -> object:
    """Compile one top-level function of an official file (its module imports the whole repository)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102 - official code
    return namespace[name]


@torch.no_grad()
def bdinvert(root: Path, out: Path) -> None:
    """encoder_simple at reduced widths through its own arguments, and project_w2pN."""
    with official(root / "bdinvert"):
        from models.stylegan_basecode_encoder import encoder_simple

        settings = {"encoder_input_shape": [3, 64, 64], "encoder_output_shape": [24, 8, 8], "filter_min": 16,
                    "filter_max": 64, "seed": 1, "images_seed": 2, "images": 2}
        net = encoder_simple(settings["encoder_input_shape"], settings["encoder_output_shape"],
                             filter_min=settings["filter_min"], filter_max=settings["filter_max"]).eval()
        state = fill(net, settings["seed"])
        x = seeded_images(settings["images"], 64, settings["images_seed"])
        released = encoder_simple([3, 128, 128], [512, 16, 16])  # the FFHQ-1024 16x16 release: shapes only
        settings["released_shapes"] = {k: list(v.shape) for k, v in released.state_dict().items()}
        settings["images_checksum"] = float(x.double().sum())
        write(out, "bdinvert_encoder", state, settings, {"f": net(x)})
    import torch.nn.functional as F

    project = _function_from(root / "bdinvert/BDInvert/pca_p_space.py", "project_w2pN", {"torch": torch, "F": F})
    d, gen = 32, torch.Generator().manual_seed(3)
    vecs = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    stats = {"mean_latent": torch.randn(d, generator=gen), "eigen_values": torch.rand(d, generator=gen) + 0.05,
             "eigen_vectors": vecs.contiguous(), "w": torch.randn(18, d, generator=gen) * 2}
    v = project(stats["w"], stats["mean_latent"], stats["eigen_values"], stats["eigen_vectors"])
    save_file({**stats, "projected": v.contiguous()}, str(out / "bdinvert_pnorm_expected.safetensors"))
    (out / "bdinvert_pnorm_expected.safetensors").chmod(0o644)
    print(f"bdinvert_pnorm: w_dim {d}, projected {tuple(v.shape)}")


def _meta_shapes(build) -> dict[str, list[int]]:
    """Key -> shape of a network built on the meta device (no memory): the released full-size layouts."""
    with torch.device("meta"):
        return {k: list(v.shape) for k, v in build().state_dict().items()}


@torch.no_grad()
def psp(root: Path, out: Path) -> None:
    """The encoders of pSp (GradualStyleEncoder) and e4e (Encoder4Editing): full widths, 8 styles, same weights."""
    settings = {"n_styles": 8, "output_size": 32, "seed": 5, "images_seed": 6, "images": 2, "side": 64,
                "unit_std": list(PSP_UNIT_STD)}
    x = seeded_images(settings["images"], settings["side"], settings["images_seed"])
    settings["images_checksum"] = float(x.double().sum())
    latent_avg = torch.randn(settings["n_styles"], 512, generator=torch.Generator().manual_seed(7))
    for name, folder in (("psp", "psp"), ("e4e", "e4e")):
        with official(root / folder):
            from models.encoders import psp_encoders

            opts = types.SimpleNamespace(input_nc=3, n_styles=settings["n_styles"],
                                         stylegan_size=settings["output_size"])
            cls = psp_encoders.GradualStyleEncoder if name == "psp" else psp_encoders.Encoder4Editing
            net = cls(50, "ir_se", opts).eval()
            state = fill(net, settings["seed"], PSP_UNIT_STD)
            codes = net(x)
            full = types.SimpleNamespace(input_nc=3, n_styles=18, stylegan_size=1024)
            settings["released_shapes"] = _meta_shapes(lambda c=cls, o=full: c(50, "ir_se", o))
            # pSp.forward with start_from_latent_avg: codes + latent_avg.repeat(N, 1, 1)
            write(out, f"{name}_encoder", state, settings,
                  {"codes": codes, "latent_avg": latent_avg, "with_avg": codes + latent_avg.repeat(len(x), 1, 1)})
            del net, state


@torch.no_grad()
def idinvert(root: Path, out: Path) -> None:
    """StyleGANEncoderNet at 32 px and reduced widths through its own arguments, and the VGG16 features."""
    with official(root / "idinvert"):
        from models.perceptual_model import VGG16
        from models.stylegan_encoder_network import StyleGANEncoderNet

        settings = {"resolution": 32, "w_space_dim": 16, "encoder_channels_base": 8, "encoder_channels_max": 32,
                    "use_bn": True, "seed": 11, "images_seed": 12, "images": 2}
        kwargs = {k: settings[k] for k in ("resolution", "w_space_dim", "encoder_channels_base",
                                           "encoder_channels_max", "use_bn")}
        net = StyleGANEncoderNet(**kwargs).eval()
        state = fill(net, settings["seed"])
        x = seeded_images(settings["images"], settings["resolution"], settings["images_seed"])
        settings["images_checksum"] = float(x.double().sum())
        settings["released_shapes"] = _meta_shapes(lambda: StyleGANEncoderNet(256, use_bn=True))
        write(out, "idinvert_encoder", state, settings, {"codes": net(x).view(len(x), -1, settings["w_space_dim"])})
        vgg = VGG16().eval()
        vsettings = {"seed": 13, "images_seed": 14, "images": 2, "side": 32}
        vstate = fill(vgg, vsettings["seed"])
        y = seeded_images(vsettings["images"], vsettings["side"], vsettings["images_seed"])
        write(out, "idinvert_vgg16", vstate, vsettings, {"features": vgg(y)})


def _tiny_generator():
    """The project's StyleGAN2 at 32 px, w_dim 32, seeded random weights (the SeFa fixture's generator)."""
    from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator

    torch.manual_seed(21)
    gen = StyleGAN2Generator(GeneratorConfig(32, w_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 16}))
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(0.1 * torch.randn_like(p))  # modulation biases start at 1: make every weight random
    return gen


@torch.no_grad()
def sefa(root: Path, out: Path) -> None:
    """factorize_weight on a genforce StyleGAN2 whose style weights are the tiny generator's, per ws row."""
    from bench.generators.checkpoints import save_rosinality

    gen = _tiny_generator()
    save_rosinality(gen, out / "tiny_rosinality.pt")
    rows = [gen.conv1, *gen.convs]  # ws row i feeds conv1 (i = 0) or convs[i - 1]; the last row feeds to_rgbs[-1]
    with official(root / "sefa"):
        from models.stylegan2_generator import StyleGAN2Generator
        from utils import factorize_weight

        ref = StyleGAN2Generator(32, z_space_dim=32, w_space_dim=32, mapping_layers=2, mapping_fmaps=32,
                                 fmaps_base=512, fmaps_max=32)
        for i in range(ref.num_layers):
            name = f"output{i // 2}" if i == ref.num_layers - 1 else f"layer{i}"
            src = rows[i] if i < len(rows) else gen.to_rgbs[-1]
            getattr(ref.synthesis, name).style.weight.copy_(src.conv.modulation.weight)
        outputs = {}
        for label, layers in (("all", "all"), ("rows0_3", "0-3")):
            picked, vecs, vals = factorize_weight(ref, layers)
            outputs[f"{label}_vectors"] = torch.from_numpy(vecs.real.copy())
            outputs[f"{label}_values"] = torch.from_numpy(vals.real.copy())
            outputs[f"{label}_rows"] = torch.tensor(picked)
    path = out / "sefa_expected.safetensors"
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(path))
    path.chmod(0o644)
    print(f"sefa: {ref.num_layers} rows, vectors {tuple(outputs['all_vectors'].shape)}")


def main() -> None:
    """CLI entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="scratch folder with the exported repositories")
    ap.add_argument("--out", type=Path, default=Path("tests/encoders_fixtures"))
    ap.add_argument("--only", nargs="*", default=None, help="subset of: bdinvert psp idinvert sefa")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for name, fn in (("bdinvert", bdinvert), ("psp", psp), ("idinvert", idinvert), ("sefa", sefa)):
        if args.only is None or name in args.only:
            fn(args.official, args.out)


if __name__ == "__main__":
    main()
