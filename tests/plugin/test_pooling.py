"""Pooling under right and left padding: padding never leaks into the result."""

import pytest
import torch

from plugin.pooling import pool

H = torch.tensor([[[1.0, 5.0], [3.0, 1.0], [9.0, 9.0]],     # row 0: 2 real tokens + 1 pad
                  [[2.0, 2.0], [4.0, 0.0], [6.0, -2.0]]])   # row 1: 3 real tokens
RIGHT = torch.tensor([[1, 1, 0], [1, 1, 1]])


def left_padded():
    # same real tokens, padding moved to the front of row 0
    h = H.clone()
    h[0] = torch.tensor([[9.0, 9.0], [1.0, 5.0], [3.0, 1.0]])
    return h, torch.tensor([[0, 1, 1], [1, 1, 1]])


@pytest.mark.parametrize("strategy, expected", [
    ("cls", [[1.0, 5.0], [2.0, 2.0]]),
    ("mean", [[2.0, 3.0], [4.0, 0.0]]),
    ("max", [[3.0, 5.0], [6.0, 2.0]]),
    ("last", [[3.0, 1.0], [6.0, -2.0]]),
    ("cls_avg", [[1.5, 4.0], [3.0, 1.0]]),
])
def test_pooling_both_padding_sides(strategy, expected):
    assert pool(H, RIGHT, strategy).tolist() == expected
    h, mask = left_padded()
    assert pool(h, mask, strategy).tolist() == expected


def test_max_pool_padding_never_wins_with_negative_states():
    h = torch.tensor([[[-3.0], [-1.0], [0.0]]])
    assert pool(h, torch.tensor([[1, 1, 0]]), "max").item() == -1.0  # not the padded 0


def test_unknown_strategy():
    with pytest.raises(ValueError, match="pooling_strategy must be one of"):
        pool(H, RIGHT, "median")


def test_set_dropout_reaches_every_dropout_and_the_saved_config(tiny_bert: str) -> None:
    from plugin.llm import load_backbone
    from plugin.model import set_dropout

    backbone = load_backbone(tiny_bert)
    assert set_dropout(backbone, 0.0) > 0
    assert all(m.p == 0.0 for m in backbone.modules() if isinstance(m, torch.nn.Dropout))
    assert backbone.config.hidden_dropout_prob == 0.0 and backbone.config.attention_probs_dropout_prob == 0.0
    backbone.train()  # no dropout left: two training-mode passes agree exactly
    ids = torch.tensor([[101, 2000, 2001, 102]])
    with torch.no_grad():
        a, b = (backbone(input_ids=ids).last_hidden_state for _ in range(2))
    assert torch.equal(a, b)
