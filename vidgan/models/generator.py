"""The multi-level TGANv2 generator (tgan2 §3.3, Eq. 5-6, Fig. 1 and 3)."""
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.config import ModelConfig
from vidgan.models.image import RenderBlock, UpBlock
from vidgan.models.subsample import FrameSubsampler
from vidgan.models.latent_de import LatentDE, build_latent_de
from vidgan.models.temporal import (ConvLSTMTemporalGenerator, LatentDETemporalGenerator,
                                    MoCoGANTemporalGenerator, TGANFrameCodeTemporalGenerator)
from vidgan.models.tgan import TGANLatentDE, TGANTemporalGenerator

# Up blocks per level: three at level 1 (x8), one each at levels 2-4 (tgan2 Fig. 3).
BLOCKS_PER_LEVEL = (3, 1, 1, 1)


def blocks_per_level(resolution: int) -> Tuple[int, ...]:
    """tgan2 Fig. 3's (3, 1, 1, 1) from a resolution/64 map. Below 64 px (an extension for
    CPU-sized runs, not in the paper) the map stays 1x1 and level 1 has fewer Up blocks:
    32 px -> (2, 1, 1, 1), levels at 4, 8, 16, 32 px."""
    if resolution >= 64:
        return BLOCKS_PER_LEVEL
    return (BLOCKS_PER_LEVEL[0] - (64 // resolution).bit_length() + 1,) + BLOCKS_PER_LEVEL[1:]


def fc_map_size(resolution: int) -> int:
    """Side of the temporal generator's maps: resolution/64 (tgan2 §4.1), at least 1."""
    return max(1, resolution // 64)


def channel_plan(clstm_ch: int, ch: int, resolution: int = 64) -> List[int]:
    """Widths along the Up blocks: clstm_ch -> 16ch -> 8ch -> 4ch | 2ch | ch | ch; below 64 px
    the first Up blocks are the ones left out (32 px: clstm_ch -> 8ch -> 4ch | ...)."""
    widths = [16 * ch, 8 * ch, 4 * ch, 2 * ch, ch, ch]
    return [clstm_ch] + widths[len(widths) - sum(blocks_per_level(resolution)):]


def tgan_dynamics(cfg: ModelConfig) -> Optional[LatentDE]:
    """TGAN's G_0 as model.latent_de's ODE/SDE on z_1 (TGAN-ODE), or None (1D deconvs)."""
    if cfg.latent_de == "none":
        return None
    return build_latent_de(cfg.latent_de, cfg.de, (cfg.z_dim,), cfg.n_frames)


def build_temporal_generator(cfg: ModelConfig) -> nn.Module:
    """model.temporal: convlstm (TGANv2), gru (MoCoGAN) or tgan (TGAN's G_0), each with
    model.latent_de's ODE/SDE in place of its recurrence; all emit clstm_ch maps of
    resolution/64 pixels (1x1 below 64 px)."""
    map_size, cond = fc_map_size(cfg.resolution), cfg.memory_condition_dim
    kind = cfg.latent_de
    if cfg.temporal == "convlstm" and kind != "none":
        dynamics = build_latent_de(kind, cfg.de, (cfg.clstm_ch, map_size, map_size),
                                   cfg.n_frames)
        return LatentDETemporalGenerator(cfg.z_dim, cfg.n_classes, cfg.clstm_ch, map_size,
                                         dynamics, cfg.n_frames, cond, cfg.init)
    if cfg.temporal == "convlstm":
        return ConvLSTMTemporalGenerator(cfg.z_dim, cfg.n_classes, cfg.clstm_ch, map_size,
                                         cfg.clstm_layers, cond, cfg.init,
                                         condition_every_step=cfg.memory.condition == "every",
                                         step_noise=cfg.step_noise, n_frames=cfg.n_frames)
    if cfg.temporal == "gru":
        dynamics = None if kind == "none" else build_latent_de(
            kind, cfg.de, (cfg.motion_dim,), cfg.n_frames)
        return MoCoGANTemporalGenerator(cfg.content_dim, cfg.motion_dim, cfg.n_classes,
                                        cfg.clstm_ch, map_size, cfg.n_frames, cond, dynamics)
    if cfg.temporal == "tgan":
        dynamics = tgan_dynamics(cfg)
        frame_latents = (TGANTemporalGenerator(cfg.z_dim) if dynamics is None
                         else TGANLatentDE(cfg.z_dim, dynamics))
        return TGANFrameCodeTemporalGenerator(cfg.z_dim, cfg.n_classes, cfg.clstm_ch, map_size,
                                              frame_latents, cfg.n_frames, cfg.init)
    raise ValueError(f"model.temporal='{cfg.temporal}' is not implemented")


def random_unit_keys(n: int, dim: int, generator: Optional[torch.Generator],
                     like: torch.Tensor) -> torch.Tensor:
    """n keys uniform on the unit sphere S^(dim-1) (normalised Gaussians), as ``like``'s device
    and dtype; drawn on the generator's device so CPU and GPU runs see the same keys. Memory
    keys are unit vectors too (memoryGAN §3.1), so the control keeps their norm."""
    device = generator.device if generator is not None else like.device
    keys = F.normalize(torch.randn(n, dim, generator=generator, device=device), dim=1)
    return keys.to(like.device, like.dtype)


class Generator(nn.Module):
    """Temporal generator, then four levels of Up blocks with a renderer per judged level.

    ``train()``: returns the per-level videos x'_1..x'_L of Eq. (6), frames subsampled between
    levels. ``eval()``: subsampling off, every block sees all frames and only one level is
    rendered (Eq. 5), giving a dense (B, 3, T, H, W) video in [-1, 1].
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_classes, self.n_frames = cfg.n_classes, cfg.n_frames
        self.levels_rendered = list(cfg.dis_levels)
        self.batch_stride = 2 if cfg.subsample_batch else 1
        self.condition_keys = cfg.memory.condition_keys
        self.temporal = build_temporal_generator(cfg)
        widths = channel_plan(cfg.clstm_ch, cfg.ch, cfg.resolution)
        self.levels = nn.ModuleList()
        first = 0
        for n_blocks in blocks_per_level(cfg.resolution):
            self.levels.append(nn.ModuleList(
                UpBlock(widths[i], widths[i + 1], cfg.n_classes)
                for i in range(first, first + n_blocks)))
            first += n_blocks
        level_widths = [level[-1].c2.out_channels for level in self.levels]
        # Only judged levels get a renderer: the naive baseline has none at levels 1-3 (§5.3).
        self.renderers = nn.ModuleDict({
            str(l): RenderBlock(level_widths[l - 1], cfg.n_classes, init=cfg.init)
            for l in self.levels_rendered})
        self.subsamplers = nn.ModuleList(FrameSubsampler(s, self.batch_stride)
                                         for s in cfg.subsample)

    @property
    def z_dim(self) -> int:
        """Width of ``sample_z(B)``: z_dim for the ConvLSTM, dC + dM * (1 + T) for the GRU,
        plus the memory key's M with MCGN."""
        return self.temporal.z_dim

    @property
    def memory(self):
        """The vMF memory whose keys condition this generator (MCGN), or None."""
        return self.__dict__.get("_memory")

    def attach_memory(self, memory) -> None:
        """Condition on ``memory`` (memoryGAN §3.2). It stays the discriminator's: a plain
        reference, not a submodule, so G's state_dict and device moves never include it."""
        object.__setattr__(self, "_memory", memory)

    def sample_z(self, batch_size: int, generator: Optional[torch.Generator] = None,
                 n_frames: Optional[int] = None,
                 slots: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The temporal generator's latent for ``batch_size`` videos, on the generator's device.

        ConvLSTM: z ~ U[-1, 1]^z_dim (tgan2 §4.1), good for any length. GRU: content and motion
        noise for ``n_frames`` frames (default T); draw it with the length you will render.
        MCGN: plus the key K_c of a slot c ~ p(c) = h v / sum h v per video (memoryGAN §3.2),
        or of the given ``slots`` (B,), drawn after the noise from the same ``generator``.
        With model.memory.condition_keys=random, a random unit vector in its place.
        """
        z = self.temporal.sample_z(batch_size, generator, n_frames)
        if self.temporal.cond_dim == 0:
            return z
        if self.condition_keys == "random":
            if slots is not None:
                raise ValueError("slots were given, but this generator is conditioned on random "
                                 "keys (model.memory.condition_keys=random), not on the memory's")
            return self.temporal.with_condition(z, random_unit_keys(
                batch_size, self.temporal.cond_dim, generator, z))
        if self.memory is None:
            raise ValueError("this generator is memory-conditional (MCGN): it samples the keys "
                             "of the discriminator's memory; attach it with "
                             "G.attach_memory(D.frame.memory) (load_generator does this from "
                             "the checkpoint)")
        if slots is None:
            slots = self.memory.sample_slots(batch_size, generator)
        keys = self.memory.keys[slots.to(self.memory.keys.device)]
        return self.temporal.with_condition(z, keys.to(z.device, z.dtype))

    def memory_condition(self, z: torch.Tensor) -> Optional[torch.Tensor]:
        """The memory keys K_c (B, M) in latent ``z``, None without MCGN."""
        return self.temporal.condition(z) if self.temporal.cond_dim else None

    def _latent_frames(self, z: torch.Tensor, y: Optional[torch.Tensor], n_frames: int):
        label = None
        if self.n_classes > 0:
            if y is None:
                raise ValueError(f"this generator is conditional (n_classes={self.n_classes}): "
                                 f"pass labels y of shape (B,)")
            # tgan2 §4.6 / MoCoGAN: the one-hot label joins the latent before the FC.
            label = F.one_hot(y, self.n_classes).to(z.dtype)
        maps = self.temporal(z, n_frames, label)  # (B, C, T, h0, w0)
        b, c, t, hh, ww = maps.shape
        return maps.transpose(1, 2).reshape(b * t, c, hh, ww)  # frames folded: (B*T, C, h0, w0)

    @staticmethod
    def _frame_labels(y: Optional[torch.Tensor], n_frames: int) -> Optional[torch.Tensor]:
        return None if y is None else y.repeat_interleave(n_frames)

    def _render(self, level: int, h: torch.Tensor, b: int, t: int, y_frames) -> torch.Tensor:
        x = self.renderers[str(level)](h, y_frames)  # (B*T, 3, H, W)
        return x.view(b, t, *x.shape[1:]).transpose(1, 2)  # (B, 3, T, H, W)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                n_frames: Optional[int] = None, render_level: Optional[int] = None):
        if self.training:
            return self.forward_levels(z, y)
        return self.forward_dense(z, y, n_frames, render_level)

    def forward_levels(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Eq. (6): x'_l = g_l^R(g_l^A(S_{l-1}(... S_1(g_1^A(z))))) for every judged level l."""
        b, t = z.shape[0], self.n_frames
        h = self._latent_frames(z, y, t)
        y_frames = self._frame_labels(y, t)
        videos = []
        for index, blocks in enumerate(self.levels):
            level = index + 1
            if index > 0:
                h5 = self.subsamplers[index - 1](h.view(b, t, *h.shape[1:]), time_dim=1)
                b, t = h5.shape[:2]
                h = h5.reshape(b * t, *h5.shape[2:])
                if y is not None:
                    y = y[::self.batch_stride]
                    y_frames = self._frame_labels(y, t)
            for block in blocks:
                h = block(h, y_frames)
            if str(level) in self.renderers:
                videos.append(self._render(level, h, b, t, y_frames))
        return videos

    def forward_dense(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                      n_frames: Optional[int] = None,
                      render_level: Optional[int] = None) -> torch.Tensor:
        """Eq. (5): all frames through g_1^A..g_l^A, rendered by g_l^R (default: last level).

        ``n_frames`` may exceed the training length: the ConvLSTM rolls on; the GRU needs a z
        drawn with ``sample_z(B, n_frames=...)`` for that length.
        """
        level = render_level if render_level is not None else self.levels_rendered[-1]
        if str(level) not in self.renderers:
            raise ValueError(f"render_level={level}: this generator renders levels "
                             f"{self.levels_rendered}")
        b, t = z.shape[0], n_frames if n_frames is not None else self.n_frames
        h = self._latent_frames(z, y, t)
        y_frames = self._frame_labels(y, t)
        for blocks in self.levels[:level]:
            for block in blocks:
                h = block(h, y_frames)
        return self._render(level, h, b, t, y_frames)
