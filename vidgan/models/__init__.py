"""Model builders. Each returns a plain nn.Module assembled from the config."""
from torch import nn

from vidgan.config import ModelConfig
from vidgan.models.discriminator import MultiLevelDiscriminator
from vidgan.models.generator import Generator

__all__ = ["build_generator", "build_discriminator", "link_memory", "Generator",
           "MultiLevelDiscriminator"]


def _model_cfg(cfg) -> ModelConfig:
    return cfg.model if hasattr(cfg, "model") else cfg


def build_generator(cfg) -> Generator:
    """Generator for ``cfg`` (a Config or its ModelConfig)."""
    return Generator(_model_cfg(cfg))


def build_discriminator(cfg) -> nn.Module:
    """Discriminator for ``cfg`` (a Config or its ModelConfig), chosen by model.discriminator."""
    m = _model_cfg(cfg)
    if m.discriminator == "multi3d":
        return MultiLevelDiscriminator(m)
    raise ValueError(f"model.discriminator='{m.discriminator}' is not implemented")


def link_memory(G: Generator, D: nn.Module) -> None:
    """A memory-conditional generator (MCGN) samples the keys of D's memory: give it D's."""
    if G.temporal.cond_dim:
        G.attach_memory(D.frame.memory)
