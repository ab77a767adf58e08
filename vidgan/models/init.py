"""Weight initialisation shared by generator and discriminator (tgan2 §4.2)."""
import math

from torch import nn


def glorot_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Glorot-uniform weights (Chainer's GlorotUniform(scale=gain)), zero bias.

    tgan2 §4.2: gain sqrt(2) in the residual paths of Up/Down blocks, gain 1 in shortcuts.
    """
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


RESIDUAL_GAIN = math.sqrt(2.0)
