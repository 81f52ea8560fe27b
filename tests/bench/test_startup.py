"""Start-up: the CLI module and the package import neither torch nor the models (``bench --help`` is instant)."""

import subprocess
import sys

HEAVY = ("torch", "kornia", "lpips", "pandas", "matplotlib", "methods", "transforms")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_cli_loads_no_heavy_module():
    loaded = _loaded_after("import bench.cli")
    assert not [m for m in HEAVY if m in loaded]


def test_importing_bench_loads_no_heavy_module():
    loaded = _loaded_after("import bench; bench.RunConfig(); bench.default_generator; bench.run")
    assert not [m for m in HEAVY if m in loaded]


def test_help_and_option_errors_answer_without_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom bench.cli import main\n"
            "r = CliRunner()\nassert r.invoke(main, ['--help']).exit_code == 0\n"
            "assert r.invoke(main, ['run', '--bogus']).exit_code == 2\n"
            "assert r.invoke(main, ['ls', 'config']).exit_code == 0\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
