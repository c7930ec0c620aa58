"""Per-request token constraints: masking, batching with unconstrained rows, dead ends, the server."""
from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from moe_engine.serving import BatchingEngine
from tests.engine.conftest import CFG


class OnlyIds:
    """Allows a fixed set of ids; records what it was shown."""

    def __init__(self, ids: Sequence[int], as_mask: bool = False):
        self.ids, self.as_mask, self.seen = list(ids), as_mask, []

    def allowed(self, generated):
        self.seen.append(list(generated))
        if self.as_mask:
            m = torch.zeros(CFG["vocab_size"], dtype=torch.bool)
            m[self.ids] = True
            return m
        return self.ids


class Sequence_:
    """Forces one exact token sequence, then allows nothing (the request ends with "constraint")."""

    def __init__(self, seq: Sequence[int]):
        self.seq = list(seq)

    def allowed(self, generated):
        n = len(generated)
        assert generated == self.seq[:n]  # the engine appended exactly what was allowed
        return self.seq[n : n + 1]


class Unrestricted:
    def allowed(self, generated):
        return None


def test_only_allowed_ids_are_emitted(model):
    free = model.generate([[4, 9, 2, 33]], max_new_tokens=20, eos=False).tokens[0]
    allowed = sorted(set(range(40, 48)) - set(free))  # ids the free run did not pick on its own
    c = OnlyIds(allowed)
    out = model.generate([[4, 9, 2, 33]], max_new_tokens=20, eos=False, constraints=[c])
    assert len(out.tokens[0]) == 20 and set(out.tokens[0]) <= set(allowed)
    # asked once per step with the tokens generated so far
    assert c.seen == [out.tokens[0][:k] for k in range(20)]
    sampled = model.generate([[4, 9, 2, 33]], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3, eos=False,
                             constraints=[OnlyIds(allowed, as_mask=True)])
    assert set(sampled.tokens[0]) <= set(allowed)


def test_mask_and_id_list_agree_and_none_is_free(model):
    p = [[1, 2, 3, 4]]
    ids = model.generate(p, max_new_tokens=12, eos=False, constraints=[OnlyIds([7, 9, 11, 30])]).tokens
    mask = model.generate(p, max_new_tokens=12, eos=False, constraints=[OnlyIds([7, 9, 11, 30], True)]).tokens
    assert ids == mask
    free = model.generate(p, max_new_tokens=12, eos=False).tokens
    assert model.generate(p, max_new_tokens=12, eos=False, constraints=[Unrestricted()]).tokens == free


def test_forced_sequence_then_dead_end(model):
    seq = [10, 20, 30, 40, 50]
    out = model.generate([[3, 3, 3]], max_new_tokens=12, eos=False, constraints=[Sequence_(seq)])
    assert out.tokens[0] == seq
    assert out.finish_reasons == ["constraint"]
    assert out.usage[0].completion_tokens == len(seq)


def test_batch_mixing_constrained_and_free_rows_equals_solo_runs(model):
    prompts = [[1, 2], [3, 4, 5, 6, 7, 8], [9], [10, 11, 12], [13, 14]]
    cons = [OnlyIds([7, 9, 11]), None, Sequence_([21, 22, 23]), None, OnlyIds(range(50, 60))]
    solo = [
        model.generate([p], max_new_tokens=9, eos=False, constraints=[c]) for p, c in zip(prompts, cons, strict=True)
    ]
    # fresh constraint objects: the ones above are stateless, but a real one may keep state per request
    cons2 = [OnlyIds([7, 9, 11]), None, Sequence_([21, 22, 23]), None, OnlyIds(range(50, 60))]
    both = model.generate(prompts, max_new_tokens=9, eos=False, constraints=cons2, max_batch=3)  # rows refill
    assert both.tokens == [s.tokens[0] for s in solo]
    assert both.finish_reasons == [s.finish_reasons[0] for s in solo]
    assert both.finish_reasons[2] == "constraint" and both.finish_reasons[1] == "length"
    free = model.generate([prompts[1], prompts[3]], max_new_tokens=9, eos=False)
    assert [both.tokens[1], both.tokens[3]] == free.tokens


def test_bad_constraint_arguments(model):
    with pytest.raises(ValueError, match="2 constraints for 1 prompts"):
        model.generate([[1, 2]], constraints=[None, None])
    with pytest.raises(ValueError, match="allowed"):
        model.generate([[1, 2]], constraints=[object()])


def test_batching_engine_applies_each_requests_constraint(model):
    prompts = [[1, 2, 3], [5, 6], [8, 8, 8, 8]]
    ref = model.generate(prompts, max_new_tokens=10, eos=False,
                         constraints=[OnlyIds([12, 13]), None, Sequence_([40, 41])])
    with BatchingEngine(model, max_batch=2, max_len=64) as eng:
        futs = [eng.submit(prompts[0], max_new_tokens=10, eos=False, constraint=OnlyIds([12, 13])),
                eng.submit(prompts[1], max_new_tokens=10, eos=False),
                eng.submit(prompts[2], max_new_tokens=10, eos=False, constraint=Sequence_([40, 41]))]
        got = [f.result(timeout=60) for f in futs]
        blocking = eng.generate(prompts, max_new_tokens=10, eos=False,
                                constraints=[OnlyIds([12, 13]), None, Sequence_([40, 41])])
    assert [g.tokens for g in got] == ref.tokens
    assert [g.finish_reason for g in got] == ref.finish_reasons
    assert blocking.tokens == ref.tokens
