"""Invalid hyperparameters raise a ValueError that names the parameter and the value; valid
boundary values are accepted as given (no silent clamping)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import _oracle as O
from optarena import optim, rules

CASES = [(name, conv) for name in O.CLASS_NAMES for conv in O.conventions_of(name)]
CASE_IDS = [f"{n}-{c}" for n, c in CASES]
WITH_BETAS = ("adam", "adamw", "nadam")
WITH_EPS = ("adagrad", "rmsprop", "adam", "adamw", "adadelta", "nadam")
HYPOTHESIS = settings(max_examples=15, deadline=None)


def _params():
    return [torch.zeros(3, dtype=torch.float64, requires_grad=True)]


def _spellings(value: float) -> set[str]:
    return {repr(value), str(value), f"{value:g}", f"{value:.6g}"}


def _assert_names(exc: pytest.ExceptionInfo, name: str, value: float | None = None):
    msg = str(exc.value)
    assert re.search(rf"\b{re.escape(name)}\b", msg), f"{name!r} not named in: {msg}"
    if value is not None:
        assert any(s in msg for s in _spellings(value)), f"{value!r} not shown in: {msg}"


bad_lr = st.one_of(
    st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=True),  # negative, -inf
    st.sampled_from([math.nan, math.inf, -1e-3, -1.0]),
)


@pytest.mark.parametrize("name,convention", CASES, ids=CASE_IDS)
@HYPOTHESIS
@given(lr=bad_lr)
def test_bad_lr_is_rejected_naming_lr_and_value(name, convention, lr):
    with pytest.raises(ValueError) as exc:
        O.optimizer_class(name)(_params(), lr=lr, convention=convention)
    _assert_names(exc, "lr", lr)
    with pytest.raises(ValueError) as exc:
        rules.get(name, convention=convention, lr=lr)
    _assert_names(exc, "lr", lr)


bad_beta = st.one_of(
    st.floats(max_value=-1e-300, allow_nan=False),
    st.floats(min_value=1.0, allow_nan=False),  # 1.0 itself is out: [0, 1)
    st.just(math.nan),
)


@pytest.mark.parametrize("name,convention", [c for c in CASES if c[0] in WITH_BETAS],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in WITH_BETAS])
@HYPOTHESIS
@given(bad=bad_beta, good=st.floats(0.0, 0.999), which=st.sampled_from([0, 1]))
def test_betas_outside_unit_interval_are_rejected(name, convention, bad, good, which):
    betas = (bad, good) if which == 0 else (good, bad)
    with pytest.raises(ValueError) as exc:
        O.optimizer_class(name)(_params(), betas=betas, convention=convention)
    _assert_names(exc, "betas")
    with pytest.raises(ValueError) as exc:
        rules.get(name, convention=convention, betas=betas)
    _assert_names(exc, "betas")


@pytest.mark.parametrize("name,convention", [c for c in CASES if c[0] in WITH_EPS],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in WITH_EPS])
@HYPOTHESIS
@given(eps=st.one_of(st.just(0.0), st.floats(max_value=0.0, allow_nan=False)))
def test_non_positive_eps_is_rejected(name, convention, eps):
    with pytest.raises(ValueError) as exc:
        O.optimizer_class(name)(_params(), eps=eps, convention=convention)
    _assert_names(exc, "eps", eps)
    with pytest.raises(ValueError) as exc:
        rules.get(name, convention=convention, eps=eps)
    _assert_names(exc, "eps", eps)


@pytest.mark.parametrize("name,convention", [c for c in CASES if c[0] in WITH_EPS],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in WITH_EPS])
def test_nan_eps_is_rejected(name, convention):
    with pytest.raises(ValueError) as exc:
        O.optimizer_class(name)(_params(), eps=math.nan, convention=convention)
    _assert_names(exc, "eps")


def test_nesterov_without_momentum_is_rejected_in_the_pytorch_convention():
    with pytest.raises(ValueError) as exc:
        optim.SGD(_params(), lr=0.1, momentum=0.0, nesterov=True, convention="pytorch")
    _assert_names(exc, "nesterov")
    with pytest.raises(ValueError) as exc:
        rules.get("sgd", convention="pytorch", lr=0.1, momentum=0.0, nesterov=True)
    _assert_names(exc, "nesterov")


@pytest.mark.parametrize("name", list(O.CLASS_NAMES))
@pytest.mark.parametrize("convention", ["tensorflow", "jax", ""])
def test_unknown_convention_lists_the_valid_ones(name, convention):
    for make in (lambda: O.optimizer_class(name)(_params(), convention=convention),
                 lambda: rules.get(name, convention=convention)):
        with pytest.raises(ValueError) as exc:
            make()
        msg = str(exc.value)
        assert all(c in msg for c in O.CONVENTIONS), msg


@pytest.mark.parametrize("bad", ["adamax", "Adam", "sgd_momentum", ""])
def test_unknown_rule_name_lists_the_valid_ones(bad):
    with pytest.raises(ValueError) as exc:
        rules.get(bad, convention="article")
    msg = str(exc.value)
    assert all(n in msg for n in O.CLASS_NAMES), msg


def test_rule_names():
    assert list(rules.names()) == list(O.CLASS_NAMES)


def test_ftrl_has_no_pytorch_convention():
    for make in (lambda: optim.FTRL(_params(), convention="pytorch"),
                 lambda: rules.get("ftrl", convention="pytorch")):
        with pytest.raises(ValueError) as exc:
            make()
        msg = str(exc.value)
        assert "torch" in msg.lower(), msg
        assert re.search(r"\b(no|not|none|without)\b", msg, re.IGNORECASE), msg


@pytest.mark.parametrize("name,convention", [c for c in CASES if c[0] in WITH_BETAS],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] in WITH_BETAS])
def test_zero_betas_are_accepted_as_given(name, convention):
    p = _params()
    opt = O.optimizer_class(name)(p, lr=0.1, betas=(0.0, 0.0), convention=convention)
    assert tuple(opt.defaults["betas"]) == (0.0, 0.0)
    assert tuple(opt.param_groups[0]["betas"]) == (0.0, 0.0)
    p[0].grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt.step()
    assert torch.isfinite(p[0]).all()
    rules.get(name, convention=convention, betas=(0.0, 0.0))


@pytest.mark.parametrize("name,convention", [c for c in CASES if c[0] != "ftrl"],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[0] != "ftrl"])
def test_zero_lr_is_accepted_and_leaves_params_unchanged(name, convention):
    # (FTRL divides by its learning rate, (beta + sqrt(n)) / alpha, so lr = 0 is not a boundary
    # value there.)
    p = [torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64, requires_grad=True)]
    opt = O.optimizer_class(name)(p, lr=0.0, convention=convention)
    assert opt.defaults["lr"] == 0.0
    for _ in range(3):
        p[0].grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        opt.step()
    assert torch.equal(p[0].detach(), torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    rules.get(name, convention=convention, lr=0.0)
