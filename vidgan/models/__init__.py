"""Model builders. Each returns a plain nn.Module assembled from the config; model.family
picks the generator and discriminator (``FAMILIES``)."""
from typing import Callable, Dict, Tuple

from torch import nn

from vidgan.config import ModelConfig
from vidgan.models.discriminator import MultiLevelDiscriminator
from vidgan.models.generator import Generator, tgan_dynamics
from vidgan.models.one_head import OneHeadDiscriminator
from vidgan.models.tgan import TGANDiscriminator, TGANGenerator
from vidgan.models.vgan import VGANDiscriminator, VGANGenerator

__all__ = ["build_generator", "build_discriminator", "link_memory", "Generator",
           "MultiLevelDiscriminator", "FAMILIES"]

# model.family -> (generator builder, discriminator builder), each from the ModelConfig
FAMILIES: Dict[str, Tuple[Callable[[ModelConfig], nn.Module],
                          Callable[[ModelConfig], nn.Module]]] = {
    "tganv2": (Generator, MultiLevelDiscriminator),
    "tgan": (lambda m: TGANGenerator(m.z_dim, m.ch, m.resolution, m.init,
                                     tgan_dynamics(m)),
             lambda m: OneHeadDiscriminator(TGANDiscriminator(m.dis_ch, m.resolution, m.init))),
    "vgan": (lambda m: VGANGenerator(m.z_dim, m.ch, m.resolution),
             lambda m: OneHeadDiscriminator(VGANDiscriminator(m.dis_ch, m.resolution))),
}


def _model_cfg(cfg) -> ModelConfig:
    return cfg.model if hasattr(cfg, "model") else cfg


def _family(model: ModelConfig):
    if model.family not in FAMILIES:
        raise ValueError(f"model.family='{model.family}': allowed values are "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[model.family]


def build_generator(cfg) -> nn.Module:
    """Generator for ``cfg`` (a Config or its ModelConfig)."""
    model = _model_cfg(cfg)
    return _family(model)[0](model)


def build_discriminator(cfg) -> nn.Module:
    """Discriminator for ``cfg`` (a Config or its ModelConfig). TGANv2: one 3D ResNet per
    judged level (tgan2 §3.4), plus the frame head of model.frame_discriminator; TGAN, VGAN:
    one network that judges the whole video."""
    model = _model_cfg(cfg)
    return _family(model)[1](model)


def link_memory(G: nn.Module, D: nn.Module) -> None:
    """A memory-conditional generator (MCGN) samples the keys of D's memory: give it D's."""
    if getattr(getattr(G, "temporal", None), "cond_dim", 0):  # TGANv2 with MCGN only
        G.attach_memory(D.frame.memory)
