"""Weight initialisation shared by generator and discriminator, as the official TGANv2 code
does it (Chainer's initialisers)."""
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


def lecun_normal_(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """LeCun-normal weights, std scale/sqrt(fan_in), zero bias: Chainer's default for
    ``Linear`` and ``Convolution2D`` (``initialW=None``), so the official code's FC, ConvLSTM
    and rendering convolutions. ``scale`` sqrt(2) is Chainer's HeNormal (the same fan_in)."""
    fan_in = module.weight[0].numel()  # in_features, or in_ch * kh * kw
    nn.init.normal_(module.weight, 0.0, scale / math.sqrt(fan_in))
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def init_layer_(module: nn.Module, init: str) -> nn.Module:
    """model.init for a layer that the official code leaves at Chainer's default: LeCun normal
    ("official"); "legacy" keeps what it was built with (PyTorch's default, vidgan < 0.2)."""
    if init == "official":
        return lecun_normal_(module)
    if init != "legacy":
        raise ValueError(f"model.init='{init}': expected official or legacy")
    return module


RESIDUAL_GAIN = math.sqrt(2.0)
