"""Exponential moving average of the generator's weights, used for sampling."""
import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval().requires_grad_(False)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float, step: int) -> None:
    """ema <- beta_t * ema + (1 - beta_t) * model, beta_t = min(beta, (1+step)/(10+step)).

    The warm-up of beta_t (as TensorFlow's ExponentialMovingAverage with num_updates) keeps
    the first samples of a run from being dominated by the random initial weights. Buffers
    (BatchNorm running statistics) are copied.
    """
    beta_t = min(beta, (1.0 + step) / (10.0 + step))
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1.0 - beta_t)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
