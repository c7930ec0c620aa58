"""Session fixtures for the engine tests (no database)."""
from __future__ import annotations

import pytest

from tests.engine.tiny import ARCHS, make_hf, to_fused


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """arch -> (hf model, per-expert dir, fused dir)."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for i, arch in enumerate(ARCHS):
        d = root / arch
        hf = make_hf(arch, d, seed=i)
        out[arch] = (hf, d, to_fused(d, root / f"{arch}_fused"))
    return out


@pytest.fixture(autouse=True)
def _torch_kernels_unless_asked(monkeypatch):
    """Engine tests run the kernels' torch path; the Triton interpreter is opted into per test."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
