"""benchmarks/kernels_gpu.py cannot be timed here (no GPU); its --dry-run mode must keep working:
it runs every method once on tiny shapes and exits non-zero if any disagrees with the reference."""

import importlib.util
from pathlib import Path

import pytest

from .interpreter import needs_interpreter

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("kernels_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_interpreter
def test_dry_run_all_methods_agree(bench, capsys):
    assert bench.main(["--device", "cpu", "--dry-run", "--models", "olmoe", "--tokens", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| olmoe | 3 |"))
    assert "failed" not in row and row.count("ran") == 7


def test_cuda_mode_without_gpu_says_so(bench, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert bench.main(["--models", "olmoe"]) == 2
    assert "No CUDA device" in capsys.readouterr().out
