import math

import pytest
import torch

from common.diagnostics import term_gradients


def test_norms_and_cosines_match_hand_computed_gradients():
    w = torch.zeros(2, requires_grad=True)
    terms = {
        "seg": w @ torch.tensor([3.0, 4.0]),  # gradient (3, 4), norm 5
        "same": 2 * w @ torch.tensor([3.0, 4.0]),  # (6, 8): the same direction
        "across": w @ torch.tensor([4.0, -3.0]),  # (4, -3): orthogonal
        "against": (w * w).sum() - w @ torch.tensor([1.5, 2.0]),  # at w = 0: (-1.5, -2), opposite
    }
    out = term_gradients(terms, [w], reference="seg")
    assert out["grad_norm_seg"] == pytest.approx(5.0) and out["grad_norm_same"] == pytest.approx(10.0)
    assert out["grad_norm_against"] == pytest.approx(2.5)
    assert out["grad_cos_same"] == pytest.approx(1.0)
    assert out["grad_cos_across"] == pytest.approx(0.0, abs=1e-7)
    assert out["grad_cos_against"] == pytest.approx(-1.0)
    assert "grad_cos_seg" not in out
    assert w.grad is None  # nothing accumulated: the real update is left to the trainer


def test_parameters_a_term_does_not_reach_count_as_zero_and_zero_gradients_give_zero_cosine():
    a, b = torch.ones(3, requires_grad=True), torch.ones(4, requires_grad=True)
    terms = {"seg": a.sum(), "other": 2 * b.sum(), "flat": (a * 0).sum()}
    out = term_gradients(terms, [a, b], reference="seg")
    assert out["grad_norm_seg"] == pytest.approx(math.sqrt(3)) and out["grad_norm_other"] == pytest.approx(4.0)
    assert out["grad_cos_other"] == 0.0 and out["grad_cos_flat"] == 0.0


def test_without_reference_only_norms_and_an_unknown_reference_is_named():
    w = torch.ones(2, requires_grad=True)
    assert term_gradients({"kd": (w * w).sum()}, [w], reference=None) == {"grad_norm_kd": pytest.approx(math.sqrt(8))}
    with pytest.raises(ValueError, match=r"reference term 'seg' is not a loss term; terms: \['kd'\]"):
        term_gradients({"kd": w.sum()}, [w], reference="seg")


def test_label_agreement_matches_hand_counts():
    from common.diagnostics import label_agreement

    # four voxels, three classes; argmax: 0, 1, 2, 2; label: 0, 1, 1, 2
    logits = torch.tensor([[[3.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.5], [0.0, 0.5, 1.5, 4.0]]])
    label = torch.tensor([[[0, 1, 1, 2]]])
    out = label_agreement(logits, label)
    assert out["disagreement"] == pytest.approx(0.25)
    # class 1: predicted {1}, true {1, 2} -> 2/3; class 2: predicted {2, 3}, true {3} -> 2/3
    assert out["dice"] == pytest.approx(2 / 3)
    assert out["margin"] == pytest.approx((2.0 + 1.5 + 1.5 + 3.5) / 4)
    assert out["margin_wrong"] == pytest.approx(1.5)
    perfect = label_agreement(torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]), torch.tensor([[[0, 1]]]))
    assert perfect["disagreement"] == 0.0 and perfect["dice"] == 1.0 and perfect["margin_wrong"] == 0.0
    with pytest.raises(ValueError, match="needs logits"):
        label_agreement(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
