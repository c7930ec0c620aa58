import pytest

from .interpreter import INTERPRET


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    """TRITON_INTERPRET=1 during each kernels test only (see interpreter.py for why)."""
    if INTERPRET:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
