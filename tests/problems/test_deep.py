"""Deep and residual MLPs: depth counted from the params, forward against a plain per-run transcription."""

from __future__ import annotations

import pytest
import torch


def test_deep_mlp_has_at_least_8_hidden_layers(build):
    p = build("deep_mlp")
    params = p.init_params(torch.tensor([0, 1]))
    hidden_layers = 1 + params["hidden_w"].shape[1]  # the input layer, then the stacked 64 -> 64 layers
    assert hidden_layers >= 8
    assert params["in_w"].shape == (2, 784, 64) and params["hidden_w"].shape == (2, 7, 64, 64)
    assert params["out_w"].shape == (2, 64, 10)
    assert build("deep_mlp", depth=3, width=16).init_params(torch.tensor([0]))["hidden_w"].shape == (1, 2, 16, 16)


def test_residual_mlp_has_at_least_16_blocks(build):
    p = build("residual_mlp")
    params = p.init_params(torch.tensor([0, 1]))
    assert params["block_w1"].shape[1] >= 16 and params["block_w2"].shape == (2, 16, 64, 64)
    assert build("residual_mlp", blocks=2).init_params(torch.tensor([0]))["block_b2"].shape == (1, 2, 64)


def _deep_oracle(params, r, x):
    h = torch.relu(x @ params["in_w"][r] + params["in_b"][r])
    for w, b in zip(params["hidden_w"][r], params["hidden_b"][r]):
        h = torch.relu(h @ w + b)
    return h @ params["out_w"][r] + params["out_b"][r]


def _residual_oracle(params, r, x):
    h = x @ params["in_w"][r] + params["in_b"][r]
    for l in range(params["block_w1"].shape[1]):
        inner = torch.relu(torch.relu(h) @ params["block_w1"][r, l] + params["block_b1"][r, l])
        h = h + inner @ params["block_w2"][r, l] + params["block_b2"][r, l]
    return torch.relu(h) @ params["out_w"][r] + params["out_b"][r]


@pytest.mark.parametrize(("name", "oracle"), [("deep_mlp", _deep_oracle), ("residual_mlp", _residual_oracle)])
def test_forward_matches_a_per_run_transcription(build, name, oracle):
    p = build(name)
    g = torch.Generator().manual_seed(0)
    params = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in p.init_params(torch.tensor([3, 8])).items()}
    x = p.x_val[:40]
    logits = p.forward(params, x.expand(2, *x.shape))
    for r in range(2):
        torch.testing.assert_close(logits[r], oracle(params, r, x), rtol=1e-4, atol=1e-5)


def test_residual_init_keeps_the_stream_bounded(build):
    p = build("residual_mlp")
    params = p.init_params(torch.tensor([0]))
    logits = p.forward(params, p.x_val[None, :200])
    assert logits.abs().max() < 50  # 2**16 growth without the 1/sqrt(blocks) scaling would show here
    assert p.evaluate(params)["val_loss"].item() < 5.0
