"""GAN objectives of TGANv2 (tgan2 Eq. 1, 4, 7, 10; DESIGN §4).

Each function takes the per-level logit lists that MultiLevelDiscriminator returns.
"""
from typing import List

import torch
from torch.nn import functional as F


def _check_combine(combine: str) -> None:
    if combine not in ("sum", "mean"):
        raise ValueError(f"loss.combine='{combine}': allowed values are sum, mean")


def d_loss(real_logits: List[torch.Tensor], fake_logits: List[torch.Tensor],
           combine: str = "sum") -> torch.Tensor:
    """Non-saturating logistic D loss: E softplus(-D(real)) + E softplus(D(fake)).

    "sum": Eq. (7), D' = sigmoid(sum_l D'_l(x_l)), one loss on the summed logits (the paper).
    "mean": the official code, the loss of every level's logit, averaged over levels.
    """
    _check_combine(combine)
    if combine == "sum":
        return F.softplus(-sum(real_logits)).mean() + F.softplus(sum(fake_logits)).mean()
    per_level = [F.softplus(-r).mean() + F.softplus(f).mean()
                 for r, f in zip(real_logits, fake_logits)]
    return sum(per_level) / len(per_level)


def g_loss(fake_logits: List[torch.Tensor], combine: str = "sum") -> torch.Tensor:
    """Non-saturating G loss: E softplus(-D(G(z)))."""
    _check_combine(combine)
    if combine == "sum":
        return F.softplus(-sum(fake_logits)).mean()
    return sum(F.softplus(-f).mean() for f in fake_logits) / len(fake_logits)


def r1_penalty(real_inputs: List[torch.Tensor], real_logits: List[torch.Tensor]) -> torch.Tensor:
    """sum_l sum_i ||grad_x D'_l(x'_i)||^2 over the real inputs of every level (Eq. 10).

    Summed over the batch, not averaged, as Eq. (10) writes it; multiply by lambda outside.
    D'_l only sees x'_l, so one backward through sum of all logits gives every gradient.
    """
    grads = torch.autograd.grad(sum(l.sum() for l in real_logits), real_inputs,
                                create_graph=True)
    return sum(g.float().pow(2).sum() for g in grads)
