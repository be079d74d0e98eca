"""Losses against values computed by hand on tiny tensors, and gradients that flow."""

import math

import pytest
import torch

from plugin import losses as L

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_cosine_loss_penalizes_misordered_pairs():
    u, v = t([E1, E1]), t([E1, E2])  # c = [1, 0]
    # pair 0 has the lower label but the higher cosine: log(1 + e^{tau (1 - 0)})
    assert L.cosine_loss(u, v, t([0.0, 1.0]), tau=1.0).item() == pytest.approx(math.log(1 + math.e), abs=1e-6)
    assert L.cosine_loss(u, v, t([1.0, 0.0]), tau=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # equal labels: no ordered pair, loss log(1) = 0
    assert L.cosine_loss(u, v, t([2.0, 2.0]), tau=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_cosine_loss_is_label_scale_free():
    u, v = torch.randn(6, 8), torch.randn(6, 8)
    y = t([0, 1, 2, 3, 4, 5])
    assert L.cosine_loss(u, v, y).item() == pytest.approx(L.cosine_loss(u, v, y / 5).item(), rel=1e-6)


def test_angle_difference_by_hand():
    # u = 1 + 0i; v0 = 1 + 0i -> re 1, im 0, s 1; v1 = 1 + 1i -> re = im-magnitude 1/sqrt2, s = |1/sqrt2 - 1/sqrt2| = 0
    s = L.angle_difference(t([E1, E1]), t([E1, [1.0, 1.0]]))
    assert s.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert L.angle_loss(t([E1, E1]), t([E1, [1.0, 1.0]]), t([0.0, 1.0]), tau=1.0).item() == pytest.approx(
        math.log(1 + math.e), abs=1e-6)


def test_angle_loss_needs_even_width():
    with pytest.raises(ValueError, match="angle loss needs an even embedding size, got 3"):
        L.angle_loss(torch.randn(2, 3), torch.randn(2, 3), t([0, 1]))


def test_ibn_pair_loss_by_hand():
    u, v = t([E1, E2]), t([E1, E2])
    # row 0 logits over [z1, z2', z3'] = [0, 1, 0] (self masked), target its partner (cos 1)
    expected = math.log(2 + math.e) - 1
    assert L.ibn_pair_loss(u, v, torch.tensor([True, False]), tau=1.0).item() == pytest.approx(expected, abs=1e-6)
    # no positives: zero, not NaN, and still differentiable
    u.requires_grad_(True)
    zero = L.ibn_pair_loss(u, v, torch.tensor([False, False]))
    zero.backward()
    assert zero.item() == 0.0 and u.grad is not None


def test_info_nce_by_hand():
    q = t([E1, E2])
    assert L.info_nce(q, q, tau=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # a hard negative identical to the query's positive doubles its competition
    docs = torch.cat([q, q])
    assert L.info_nce(q, docs, tau=1.0).item() == pytest.approx(math.log(2 + 2 * math.e) - 1, abs=1e-6)


def test_distill_zero_when_student_matches_teacher():
    x = torch.randn(8, 16)
    assert L.distill_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert L.distill_loss(torch.randn(8, 16), torch.randn(8, 4)).item() > 0  # teacher may be narrower


@pytest.mark.parametrize("name", ["cosine", "angle", "ibn", "info_nce", "distill"])
def test_gradients_flow(name):
    torch.manual_seed(0)
    u = torch.randn(6, 8, requires_grad=True)
    v = torch.randn(6, 8, requires_grad=True)
    y = t([0, 1, 2, 3, 4, 5])
    loss = {
        "cosine": lambda: L.cosine_loss(u, v, y),
        "angle": lambda: L.angle_loss(u, v, y),
        "ibn": lambda: L.ibn_pair_loss(u, v, y >= 3),
        "info_nce": lambda: L.info_nce(u, v),
        "distill": lambda: L.distill_loss(torch.cat([u, v]), torch.randn(12, 8)),
    }[name]()
    loss.backward()
    assert torch.isfinite(loss)
    assert u.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


def test_losses_compute_in_float32_under_bf16_inputs():
    u, v = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    assert L.cosine_loss(u, v, t([0, 1, 2, 3])).dtype == torch.float32
