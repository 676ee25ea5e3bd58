"""Problems with a hand-written gradient (``loss_and_grad``, used by the engine instead of autograd):
losses and gradients equal to autograd's on the same problem (the oracle), for stacked and grouped
batches and every way runs can share minibatches, compiled and eager; the fast evaluation equal to
the forward pass it replaces; the rational tanh within float32 rounding of torch.tanh."""

from __future__ import annotations

import pytest
import torch

from optarena import compiled, problems
from optarena.problems import _mlp
from optarena.problems.base import seed_generator

HAND = sorted(n for n in problems.names() if hasattr(problems.get(n), "loss_and_grad"))
MLPS = ["digits_mlp", "mnist_mlp"]
MODES = {"eager": compiled.eager, "compiled": compiled.always}
# Each run's seed: blocks of equal size (gcd 2), stretches of unequal size (gcd 1), one seed for all.
SEED_PATTERNS = {"blocks": [3, 3, 7, 7, 11, 11, 7, 7], "uneven": [3, 7, 7, 3, 3, 3, 11, 7], "one seed": [5] * 6}


def test_the_built_in_classifiers_have_one():
    assert HAND == ["breast_cancer_logreg", "digits_mlp", "mnist_mlp"]


def _params(p, seeds):
    g = torch.Generator().manual_seed(123)
    start = p.init_params(torch.tensor(seeds))
    return {k: (v + 0.05 * torch.randn(v.shape, generator=g)).requires_grad_(True) for k, v in start.items()}


def _autograd(p, params, batch, **kwargs):
    losses = p.loss(params, batch, **kwargs)
    grads = torch.autograd.grad(losses.sum(), list(params.values()))
    return losses.detach(), dict(zip(params, grads))


def _close(hand, auto):
    losses_h, grads_h = hand
    losses_a, grads_a = auto
    torch.testing.assert_close(losses_h, losses_a, rtol=1e-6, atol=1e-6)
    assert grads_h.keys() == grads_a.keys()
    for k in grads_a:
        assert grads_h[k].shape == grads_a[k].shape and not grads_h[k].requires_grad
        scale = grads_a[k].abs().max().item()
        assert scale > 0, k  # a zero gradient would make the comparison vacuous
        torch.testing.assert_close(grads_h[k], grads_a[k], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pattern", SEED_PATTERNS)
@pytest.mark.parametrize("name", HAND)
def test_grouped_batches_give_autograds_gradient(name, pattern, mode):
    p = problems.get(name)
    seeds = SEED_PATTERNS[pattern]
    unique = sorted(set(seeds))
    rows = torch.stack([p.batch(0, seed_generator(s, "batches"))[0] for s in unique])
    slot = torch.tensor([unique.index(s) for s in seeds])
    params = _params(p, seeds)
    with MODES[mode]():
        hand = p.loss_and_grad(params, (rows,), slot=slot)
    _close(hand, _autograd(p, params, (rows,), slot=slot))


@pytest.mark.parametrize("chunk", [1, 3, 4])
@pytest.mark.parametrize("pattern", SEED_PATTERNS)
def test_runs_in_chunks_give_autograds_gradient(pattern, chunk, monkeypatch):
    """The chunks of runs of `_mlp.loss_and_grad` (a budget of `chunk` runs here), across and
    inside blocks of runs sharing a minibatch, with a short last chunk."""
    p = problems.get("digits_mlp")
    monkeypatch.setattr(_mlp, "TRAIN_BUDGET", chunk * (p.hidden + p.n_classes) * p.batch_size)
    seeds = SEED_PATTERNS[pattern]
    unique = sorted(set(seeds))
    rows = torch.stack([p.batch(1, seed_generator(s, "batches"))[0] for s in unique])
    slot = torch.tensor([unique.index(s) for s in seeds])
    params = _params(p, seeds)
    _close(p.loss_and_grad(params, (rows,), slot=slot), _autograd(p, params, (rows,), slot=slot))


@pytest.mark.parametrize(("size", "target", "chunk"), [(2, 3, 2), (2, 8, 8), (1, 5, 5), (6, 4, 3), (6, 1, 1), (7, 4, 1)])
def test_chunks_cut_no_block_unevenly(size, target, chunk):
    assert _mlp.Blocks(size, None).chunk(42, target) == chunk


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", HAND)
def test_stacked_batches_give_autograds_gradient(name, mode):
    p = problems.get(name)
    seeds = SEED_PATTERNS["uneven"]
    batch = (torch.stack([p.batch(2, seed_generator(s, "batches"))[0] for s in seeds]),)
    params = _params(p, seeds)
    with MODES[mode]():
        hand = p.loss_and_grad(params, batch)
    _close(hand, _autograd(p, params, batch))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MLPS)
def test_the_fast_evaluation_is_the_forward_pass(name, mode):
    p = problems.get(name)
    seeds = SEED_PATTERNS["blocks"]
    params = {k: v.detach() for k, v in _params(p, seeds).items()}
    with MODES[mode]():
        metrics = p.evaluate(params)
    for split, x, y in (("val", p.x_val, p.y_val), ("train", p.x_train, p.y_train)):
        logits = p.forward(params, x.expand(len(seeds), *x.shape))
        torch.testing.assert_close(metrics[f"{split}_loss"], p.example_loss(logits, y).mean(-1), rtol=1e-5, atol=1e-6)
        if split == "val":
            torch.testing.assert_close(metrics["val_accuracy"], p.correct(logits, y).mean(-1), rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "per_chunk"), [(37, 2048), (37, 16), (48, 16), (5, 2048)])
def test_evaluation_in_padded_chunks_of_examples_counts_each_example_once(n, per_chunk, mode):
    """Examples padded to a multiple of `EXAMPLES_MULTIPLE` and cut into chunks: the sums are those
    of the n examples, no padding row counted."""
    g = torch.Generator().manual_seed(0)
    layers = [(torch.randn(3, 8, 4, generator=g), torch.randn(3, 8, generator=g)),
              (torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, generator=g))]
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 5, (n,), generator=g)
    with MODES[mode]():
        loss_sum, correct = _mlp.evaluate_sums(layers, x, y, "tanh", examples_per_chunk=per_chunk)
    (w1, b1), (w2, b2) = layers
    logits = torch.tanh(x @ w1.transpose(1, 2) + b1[:, None]) @ w2.transpose(1, 2) + b2[:, None]  # (3, n, 5)
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y.expand(3, n), reduction="none").sum(-1)
    torch.testing.assert_close(loss_sum, expected, rtol=1e-5, atol=1e-5)
    assert correct.tolist() == (logits.argmax(-1) == y).sum(-1).float().tolist()


@pytest.mark.parametrize("mode", MODES)
def test_correct_counts_ties_as_argmax_does(mode):
    """A prediction is correct where argmax (the first of equal maxima) is the label."""
    logits = torch.tensor([[[1.0, 2.0, 2.0, 0.0], [2.0, 2.0, 1.0, 2.0], [0.0, 1.0, 1.0, 2.0]]])  # (1, C=3, N=4)
    labels = torch.tensor([1, 2, 0, 0])
    expected = (logits.argmax(1) == labels).sum()
    with MODES[mode]():
        _, correct = _mlp.loss_and_correct_sums(logits.expand(2, 3, 4), labels.float(), True)
    assert correct.tolist() == [expected.item()] * 2


@pytest.mark.parametrize(("seeds", "size"), [([0, 0, 1, 1, 2, 2], 2), ([0, 0, 0, 1, 1, 1], 3), ([0, 1, 1, 0], 1),
                                             ([4, 4, 4, 4], 4)])
def test_blocks_are_the_longest_equal_stretches_of_shared_inputs(seeds, size):
    slot = torch.tensor(seeds)
    blocks = _mlp.Blocks.of(slot, len(seeds), max(seeds) + 1)
    assert blocks.size == size
    rows = list(range(len(seeds) // size)) if blocks.rows is None else blocks.rows.tolist()
    assert [seeds[k * size] for k in range(len(seeds) // size)] == rows
    assert all(seeds[i] == seeds[(i // size) * size] for i in range(len(seeds)))


def test_the_rational_tanh_is_torch_tanh_to_float32_rounding():
    x = torch.cat([torch.linspace(-12, 12, 200_001), torch.logspace(-12, 1, 10_001), -torch.logspace(-12, 1, 10_001)])
    with compiled.always():
        fast = _mlp.ACTIVATIONS["tanh"][0](x)
    exact = torch.tanh(x.double())
    relative = ((fast.double() - exact).abs() / exact.abs().clamp(min=1e-38)).max().item()
    assert relative < 5e-7  # measured 3.9e-7, about 7 float32 ulp
    assert fast.abs().max().item() == 1.0  # saturates at exactly +-1, never beyond
