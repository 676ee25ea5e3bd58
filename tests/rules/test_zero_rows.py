"""Rule.leaves_zero_rows: the property that the sparse paths rely on (the drop-ins' sparse
gradients, the engine's column updates on sparse problems), checked on the formulas themselves:
where it is claimed, a step with a zero gradient changes neither the parameter nor the state; every
rule that does not claim it is left out of those paths."""

from __future__ import annotations

import pytest
import torch

from optarena import rules

CASES = [(n, c) for n in rules.names() for c in rules.entry(n).conventions]


def _warm(rule, param, steps=3):
    gen = torch.Generator().manual_seed(0)
    state = rule.init_state(param)
    for t in range(1, steps + 1):
        rule.update_(param, torch.randn(param.shape, generator=gen, dtype=param.dtype), state, t)
    return state


@pytest.mark.parametrize("name,convention", CASES)
def test_a_zero_gradient_leaves_what_is_claimed(name, convention):
    rule = rules.build(name, convention)
    shape = (1, 6, 5) if not rule.elementwise else (6, 5)
    param = torch.zeros(shape, dtype=torch.float64) if name == "ftrl" else torch.randn(shape, dtype=torch.float64)
    state = _warm(rule, param)
    before = param.clone(), {k: v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    rule.update_(param, torch.zeros_like(param), state, 4)
    unchanged = torch.equal(param, before[0]) and all(torch.equal(state[k], v) for k, v in before[1].items())
    if rule.leaves_zero_rows():
        assert unchanged
    assert rule.leaves_zero_rows() == type(rule).supports_sparse


@pytest.mark.parametrize("name,convention,decay", [
    ("adagrad", "pytorch", {"weight_decay": 0.1}), ("adagrad", "keras", {"weight_decay": 0.1}),
    ("ftrl", "keras", {"l2_shrinkage": 0.1}), ("adagrad", "article", {"decoupled_weight_decay": 0.1}),
])
def test_weight_decay_takes_a_rule_off_the_sparse_paths(name, convention, decay):
    rule = rules.build(name, convention, **decay)
    assert not rule.leaves_zero_rows()
    param = torch.randn(4, 3, dtype=torch.float64) if name != "ftrl" else torch.zeros(4, 3, dtype=torch.float64)
    state = _warm(rule, param)
    before = param.clone(), {k: v.clone() for k, v in state.items()}
    rule.update_(param, torch.zeros_like(param), state, 4)
    assert not (torch.equal(param, before[0]) and all(torch.equal(state[k], v) for k, v in before[1].items()))
