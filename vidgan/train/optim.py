"""The optimizers of a run: Adam as the official TGANv2 code runs it (Chainer's
``optimizers.Adam``), and RMSprop as the official TGAN code runs it.

Chainer adds eps to sqrt(v) before the bias correction:

    p <- p - alpha * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

PyTorch adds it after: p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps').
The two are the same update when eps' = eps / sqrt(1 - beta2^t), so ``Adam`` is
``torch.optim.Adam`` with that eps set before every step (its state, its state-dict layout and
its fast paths unchanged: checkpoints of either form load into the other).
"""
import math
from typing import Iterable, Tuple

import torch

from vidgan.config import CHOICES, TrainConfig

ADAM_FORMS = CHOICES["train.adam"]
# Chainer's RMSprop defaults, which the official TGAN code keeps: ms <- alpha ms + (1 - alpha)
# g^2, p <- p - lr g / (sqrt(ms) + eps), the update torch.optim.RMSprop makes.
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8


def chainer_eps(eps: float, beta2: float, t: int) -> float:
    """PyTorch's eps that makes its step t equal Chainer's with ``eps``."""
    return eps / math.sqrt(1.0 - beta2 ** t)


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` with eps in the form ``form`` (train.adam): "chainer" (the official
    code's, eps added to sqrt(v) before the bias correction) or "torch" (eps added after).

    The eps of every step comes from the constructor, not from a loaded state dict, so a run
    resumed with another train.adam or train.adam_eps uses the one it was given.
    """

    def __init__(self, params: Iterable, lr: float, betas: Tuple[float, float], eps: float,
                 form: str = "chainer"):
        if form not in ADAM_FORMS:
            raise ValueError(f"train.adam='{form}': expected one of {ADAM_FORMS}")
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.form, self.base_eps = form, eps

    def _next_step(self, group: dict) -> int:
        """The step number t the coming update has (Adam's per-parameter count; every
        parameter of a group steps together in training)."""
        for p in group["params"]:
            if p.grad is not None:
                return int(self.state[p].get("step", 0)) + 1  # a CPU tensor: no device sync
        return 1

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["eps"] = (self.base_eps if self.form == "torch" else
                            chainer_eps(self.base_eps, group["betas"][1], self._next_step(group)))
        return super().step(closure)


def lazy_r1_ratio(interval: int) -> float:
    """StyleGAN2's mb_ratio k / (k + 1) for R1 every k D steps: k + 1 Adam steps take the
    place of k, so D's lr is scaled by it and its betas raised to it (1.0 for k = 1)."""
    return interval / (interval + 1) if interval > 1 else 1.0


def lazy_r1_adam(adam: dict, interval: int) -> dict:
    """D's Adam settings for ``loss.r1_interval`` (unchanged for 1, the paper)."""
    if interval == 1:
        return adam
    ratio = lazy_r1_ratio(interval)
    return {**adam, "lr": adam["lr"] * ratio, "betas": tuple(b ** ratio for b in adam["betas"])}


def make_optimizer(params: Iterable, t: TrainConfig,
                   r1_interval: int = 1) -> torch.optim.Optimizer:
    """train.optimizer over ``params``: Adam (with D's lazy-R1 settings for ``r1_interval``)
    or RMSprop (TGAN)."""
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=t.lr, alpha=RMSPROP_ALPHA, eps=RMSPROP_EPS)
    adam = dict(lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps, form=t.adam)
    return Adam(params, **lazy_r1_adam(adam, r1_interval))
def linear_decay(base_lr: float, step: int, decay_iterations: int) -> float:
    """lr decays linearly from base_lr to 0 over decay_iterations (tgan2 §5.2); 0: no decay
    (the official TGAN and VGAN code keep their lr)."""
    if decay_iterations == 0:
        return base_lr
    return base_lr * max(0.0, 1.0 - step / decay_iterations)

