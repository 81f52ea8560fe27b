import pytest
import torch

from bench.generators.stylegan2 import GeneratorConfig, StyleGAN2Generator, default_channels


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (run on the GPU machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _hide_perceptual_extra():
    """Switch the ``perceptual`` extra (effnet-lpips, the distribution features) off in every test by default.

    Its EfficientNet pass at 224 px on every batch would make each run in the tests several times slower and
    change their fixed metric sets. An environment variable, so that runs in child processes see it too; tests
    of the network itself use ``real_perceptual_extra``.
    """
    import os

    from bench.metrics.effnet import OFF_ENV

    old = os.environ.get(OFF_ENV)
    os.environ[OFF_ENV] = "1"
    yield
    if old is None:
        os.environ.pop(OFF_ENV, None)
    else:
        os.environ[OFF_ENV] = old


@pytest.fixture(scope="module")
def real_perceptual_extra():
    """The installed ``perceptual`` extra, switched on for the tests of a module."""
    import os

    from bench.metrics.effnet import OFF_ENV

    old = os.environ.pop(OFF_ENV, None)
    yield
    if old is not None:
        os.environ[OFF_ENV] = old


@pytest.fixture(scope="session")
def device():
    """Tests run on the CPU unless BENCH_TEST_DEVICE says otherwise."""
    import os

    return torch.device(os.environ.get("BENCH_TEST_DEVICE", "cpu"))


def make_tiny_generator(resolution=32, w_dim=32, seed=0):
    torch.manual_seed(seed)
    cfg = GeneratorConfig(resolution, w_dim, n_mlp=2, channels=default_channels(resolution, 256, 16))
    gen = StyleGAN2Generator(cfg, noise_seed=seed)
    gen.compute_w_avg(256)
    return gen.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_generator_path(tmp_path_factory):
    """The 32 px tiny generator saved as a rosinality-layout checkpoint (for --generator in run tests)."""
    from bench.generators.checkpoints import save_rosinality

    path = tmp_path_factory.mktemp("gen") / "tiny32.pt"
    save_rosinality(make_tiny_generator(), path)
    return path


@pytest.fixture(scope="session")
def tiny_generator():
    """A 32 px random-weight StyleGAN2 for contract tests."""
    return make_tiny_generator()


class BlurPerceptual:
    """Test fake of a perceptual distance: MSE between 4x average-pooled images (differentiable, per image)."""

    name = "test-fake-pooled-mse"

    def __call__(self, x, y):
        px, py = torch.nn.functional.avg_pool2d(x, 4), torch.nn.functional.avg_pool2d(y, 4)
        return (px - py).square().flatten(1).mean(1)


@pytest.fixture
def fake_perceptual():
    return BlurPerceptual()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Small convolutions on a shared 2-core machine: with 2 OpenMP threads, a preempted thread stalls the other
    at every barrier (measured 28 s vs 1.8 s for the same F/W+ runs); one thread is steadier.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
