"""Run our Triton kernels on CPU through the interpreter, for this test directory only.

Triton decides interpreted-vs-compiled when @triton.jit runs, i.e. when kernels.triton_* is
imported. So TRITON_INTERPRET=1 is set just for that import and then put back: the rest of a
whole-suite run (engine, models, pipeline) must keep the fast torch path, and the interpreter
computes bf16 wrongly. kernels' dispatcher also reads the variable per call, so the tests here
set it again per test (conftest). With CUDA present the kernels are compiled instead, and the
CPU-tensor kernel tests are skipped in favour of the gpu-marked ones.
"""

import os

import pytest
import torch

INTERPRET = not torch.cuda.is_available()

if INTERPRET:
    _prior = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import kernels.triton_gating
        import kernels.triton_moe
        import kernels.triton_norm  # noqa: F401
    finally:
        if _prior is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _prior

needs_interpreter = pytest.mark.skipif(
    not INTERPRET, reason="Triton on CPU tensors needs the interpreter; gpu tests cover the kernels here"
)
