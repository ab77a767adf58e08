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
    """Discriminator for ``cfg`` (a Config or its ModelConfig): one 3D ResNet per judged level
    (tgan2 §3.4), plus the frame head of model.frame_discriminator."""
    return MultiLevelDiscriminator(_model_cfg(cfg))


def link_memory(G: Generator, D: nn.Module) -> None:
    """A memory-conditional generator (MCGN) samples the keys of D's memory: give it D's."""
    if G.temporal.cond_dim:
        G.attach_memory(D.frame.memory)
