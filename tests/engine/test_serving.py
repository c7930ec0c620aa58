"""BatchingEngine: several threads share one model; requests join between decode steps."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from moe_engine import build_model
from moe_engine.serving import BatchingEngine
from tests.engine.test_generation import CFG


@pytest.fixture(scope="module")
def model():
    return build_model(CFG, seed=3)


def test_threads_get_the_same_tokens_as_solo_generation(model):
    prompts = [[1 + i, 2 + i, 3, 4 + 2 * i][: 1 + i % 4] for i in range(10)]
    lengths = [4 + 3 * (i % 5) for i in range(10)]
    solo = [model.generate([p], max_new_tokens=n, eos=False).tokens[0] for p, n in zip(prompts, lengths, strict=True)]
    with BatchingEngine(model, max_batch=4, max_len=64) as eng:
        def call(i):
            time.sleep(0.002 * (i % 3))  # stagger so requests arrive while others decode
            return eng.submit(prompts[i], max_new_tokens=lengths[i], eos=False).result(timeout=60)

        with ThreadPoolExecutor(max_workers=6) as pool:
            outs = list(pool.map(call, range(10)))
        assert [o.tokens for o in outs] == solo
        assert all(o.finish_reason == "length" for o in outs)
        assert eng.max_rows_seen > 1  # requests really were batched together
        st = eng.stats()
        assert st["active"] == 0 and st["queued"] == 0 and st["steps"] > 0 and st["max_batch"] == 4
        for o, p in zip(outs, prompts, strict=True):
            assert o.routing.shape[1] == len(p) + len(o.tokens) - 1
            assert o.usage.device_seconds > 0 and o.usage.flops > 0


def test_new_request_joins_a_running_batch(model):
    with BatchingEngine(model, max_batch=4, max_len=256) as eng:
        long = eng.submit([1, 2, 3], max_new_tokens=200, eos=False)
        while eng.steps < 5:
            time.sleep(0.001)
        short = eng.submit([4, 5], max_new_tokens=3, eos=False)
        res = short.result(timeout=30)
        assert not long.done()  # the short one joined and left while the long one kept decoding
        assert res.tokens == model.generate([[4, 5]], max_new_tokens=3, eos=False).tokens[0]
        assert len(long.result(timeout=60).tokens) == 200


def test_generate_facade_and_errors(model):
    with BatchingEngine(model, max_batch=2, max_len=32) as eng:
        out = eng.generate([[1, 2], [3], [4, 5, 6]], max_new_tokens=5, eos=False)
        ref = model.generate([[1, 2], [3], [4, 5, 6]], max_new_tokens=5, eos=False)
        assert out.tokens == ref.tokens
        with pytest.raises(ValueError, match="max_len"):
            eng.submit([1] * 30, max_new_tokens=10)
        with pytest.raises(ValueError, match="empty"):
            eng.submit([])
    with pytest.raises(RuntimeError, match="closed"):
        eng.submit([1])


def test_close_fails_pending_requests(model):
    eng = BatchingEngine(model, max_batch=1, max_len=512)
    futs = [eng.submit([1, 2], max_new_tokens=400, eos=False) for _ in range(3)]
    eng.close()
    assert all(f.done() for f in futs)
    assert sum(f.exception() is not None for f in futs) >= 2
    # only this engine's thread: other tests' engines (e.g. the agents' shared one) may still run
    assert eng._thread is not None and not eng._thread.is_alive()
