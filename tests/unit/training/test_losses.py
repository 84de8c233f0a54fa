"""The training losses against their torch definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unetflow.training.losses import loss_value, soft_dice_loss


def test_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 5)
    target = (torch.rand(2, 5, 5) > 0.5).to(torch.uint8)
    ce = F.cross_entropy(logits, target.long())
    assert loss_value("ce", logits, target) == pytest.approx(ce.item())
    weight = torch.full((2, 5, 5), 3.0)
    assert loss_value("ce", logits, target, weight) == pytest.approx(3 * ce.item())
    one = logits[:, 1:] - logits[:, :1]
    bce = F.binary_cross_entropy_with_logits(
        one[:, 0], target.float(), pos_weight=torch.tensor(2.0)
    )
    assert loss_value("bce", one, target, pos_weight=torch.tensor(2.0)) == pytest.approx(bce.item())
    prob = torch.softmax(logits, 1)[:, 1]
    both = ce + soft_dice_loss(prob, target.float())
    assert loss_value("dice_ce", logits, target) == pytest.approx(both.item())
    perfect = torch.where(target.bool(), 20.0, -20.0)[:, None]
    assert loss_value("dice", perfect, target) == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(torch.zeros(1, 4, 4), torch.ones(1, 4, 4)) == pytest.approx(1 - 1 / 17)
