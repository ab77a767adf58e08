"""Discriminators: the 3D ResNet of every judged level (tgan2 §3.4, §4.2, Fig. 4), the 2D
ResNet frame head (MoCoGAN's D_I, tgan2 §5.3 "3D+2D"), the memory frame head (memoryGAN's
discriminative memory network, docs/FIDELITY.md), and the set of named heads they form; and
DCGAN's strided 3D convolutions that TGAN's and VGAN's discriminators share.

The same SNGAN-style ResNet serves both: ``dims=3`` (3x3x3 kernels, video) or ``dims=2``
(3x3 kernels, frames).
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from vidgan import distributed
from vidgan.config import CHOICES, LossConfig, ModelConfig
from vidgan.models.conv import FastConv3d
from vidgan.models.init import RESIDUAL_GAIN, glorot_
from vidgan.models.memory import Read, VMFMemory
from vidgan.models.subsample import real_targets

# 3D: nn.Conv3d with derivatives that are plain convolutions (R1's double backward)
_CONV = {2: nn.Conv2d, 3: FastConv3d}
_AVG_POOL = {2: F.avg_pool2d, 3: F.avg_pool3d}


DOWNSAMPLE_RULES = CHOICES["model.downsample"]


def downsample(x: torch.Tensor, rule: str = "official") -> torch.Tensor:
    """DownSample of tgan2 Fig. 4 on (B, C, T, H, W) (or (B, C, H, W) frames).

    Average-pool with kernel 2 along every axis longer than 1, zero-padding 1 on both sides
    where that length is odd (the zeros count in the mean). An axis of length 1 keeps kernel
    1; under ``rule="official"`` it is zero-padded like the other odd axes, growing to 3
    ([0, x, 0]), as the official code's ``average_pooling_nd(x, ksize, pad)`` does, and as
    Table 1's D costs count it (docs/FIDELITY.md); under ``rule="paper"`` it is left alone.
    """
    sizes = x.shape[2:]
    kernel = tuple(2 if s > 1 else 1 for s in sizes)
    pad = tuple(1 if s > 1 and s % 2 else 0 for s in sizes)
    if rule == "official" and 1 in sizes:
        # avg_pool cannot pad more than half its kernel: pad the length-1 axes by hand
        # (F.pad lists the last axis first)
        x = F.pad(x, [p for s in reversed(sizes) for p in ((1, 1) if s == 1 else (0, 0))])
    elif rule not in DOWNSAMPLE_RULES:
        raise ValueError(f"downsample rule '{rule}': expected one of {DOWNSAMPLE_RULES}")
    return _AVG_POOL[len(sizes)](x, kernel, stride=kernel, padding=pad, count_include_pad=True)


def dcgan_video_convs(ch: int) -> nn.ModuleList:
    """DCGAN's discriminator in 3D (TGAN Table 1, VGAN §2.3): four 4x4x4 convolutions of
    stride 2, 3 -> ch -> 2ch -> 4ch -> 8ch, each halving T, H and W."""
    widths = [3, ch, 2 * ch, 4 * ch, 8 * ch]
    return nn.ModuleList(nn.Conv3d(widths[i], widths[i + 1], 4, 2, 1) for i in range(4))


def run_dcgan_video_convs(convs: nn.ModuleList, norms: nn.ModuleList, video: torch.Tensor,
                          slope: float = 0.2) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, 8ch, T/16, H/16, W/16): leaky ReLU after every convolution,
    ``norms`` (one per convolution but the first, which DCGAN leaves unnormalised) before it."""
    h = F.leaky_relu(convs[0](video), slope)
    for conv_, norm in zip(convs[1:], norms):
        h = F.leaky_relu(norm(conv_(h)), slope)
    return h


def conv(dims: int, in_ch: int, out_ch: int, kernel: int, gain: float) -> nn.Module:
    return glorot_(_CONV[dims](in_ch, out_ch, kernel, padding=kernel // 2), gain)


def spatial_pool(x: torch.Tensor) -> torch.Tensor:
    """AvgPool by 2 over H and W only: (1, 2, 2) on video, (2, 2) on frames."""
    dims = x.dim() - 2
    return _AVG_POOL[dims](x, (1,) * (dims - 2) + (2, 2))


class OptimizedBlock(nn.Module):
    """First block: Conv-ReLU-Conv-AvgPool(1,2,2); shortcut AvgPool(1,2,2)-Conv1x1."""

    def __init__(self, in_ch: int, out_ch: int, dims: int = 3):
        super().__init__()
        self.c1 = conv(dims, in_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c2 = conv(dims, out_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c_sc = conv(dims, in_ch, out_ch, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = spatial_pool(self.c2(F.relu(self.c1(x))))
        return h + self.c_sc(spatial_pool(x))


class DownBlock(nn.Module):
    """ReLU-Conv(C->C)-ReLU-Conv(C->C')-DownSample; shortcut Conv1x1-DownSample.

    The hidden width is the input width, as in SNGAN's discriminator block.
    """

    def __init__(self, in_ch: int, out_ch: int, dims: int = 3, rule: str = "official"):
        super().__init__()
        self.rule = rule  # model.downsample
        self.c1 = conv(dims, in_ch, in_ch, 3, RESIDUAL_GAIN)
        self.c2 = conv(dims, in_ch, out_ch, 3, RESIDUAL_GAIN)
        self.c_sc = conv(dims, in_ch, out_ch, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        return downsample(h, self.rule) + downsample(self.c_sc(x), self.rule)


def resnet_blocks(ch: int, in_ch: int, dims: int, rule: str = "official") -> nn.ModuleList:
    """OptimizedBlock(in_ch -> ch), then DownBlocks ch -> 2ch -> 4ch -> 8ch -> 16ch, whose
    DownSample follows ``rule`` (model.downsample)."""
    widths = [ch, 2 * ch, 4 * ch, 8 * ch, 16 * ch]
    return nn.ModuleList([OptimizedBlock(in_ch, widths[0], dims)] + [
        DownBlock(a, b, dims, rule) for a, b in zip(widths[:-1], widths[1:])])


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x)
    return x


def minibatch_std(h: torch.Tensor, group: int) -> torch.Tensor:
    """Minibatch standard deviation (Karras et al. 2018, ProGAN §3; StyleGAN2's
    MinibatchStdLayer) of features h (B, C) -> (B, 1): samples b, b + B/g, b + 2B/g, ... form a
    group of g = the largest divisor of B that is <= ``group``; each sample gets the mean over
    features of its group's standard deviation (biased, + 1e-8 inside the root).

    Not in TGANv2: an option against mode collapse, since a discriminator that judges one clip
    at a time cannot see that every fake in a batch looks alike (docs/BENCHMARKS.md, demo)."""
    b = h.shape[0]
    g = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = (h if h.dtype == torch.float64 else h.float()).view(g, b // g, -1)  # (G, M, C)
    std = (y - y.mean(dim=0)).pow(2).mean(dim=0).add(1e-8).sqrt().mean(dim=1)  # (M,)
    return std.repeat(g)[:, None].to(h.dtype)  # sample i belongs to group i % M


class ResNetDiscriminator(nn.Module):
    """SNGAN-style ResNet -> ReLU -> global sum pool -> Linear(->1), widths ch..16ch.

    ``dims=3``: one sub-discriminator D'_l of TGANv2 on (B, 3, T, H, W). ``dims=2``: the SNGAN
    image discriminator (tgan2 §5.3) on (B, 3, H, W). Conditional (n_classes > 0): projection
    discriminator, logit += <embed(y), features>. ``mbstd_group`` > 0: the pooled features get
    one more entry, their ``minibatch_std`` (the Linear then takes 16ch + 1 inputs).
    """

    def __init__(self, ch: int = 64, n_classes: int = 0, in_ch: int = 3, dims: int = 3,
                 mbstd_group: int = 0, downsample: str = "official"):
        super().__init__()
        self.mbstd_group = mbstd_group
        self.blocks = resnet_blocks(ch, in_ch, dims, downsample)
        self.fc = glorot_(nn.Linear(16 * ch + (1 if mbstd_group else 0), 1))
        self.embed = glorot_(nn.Embedding(n_classes, 16 * ch)) if n_classes > 0 else None

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = F.relu(run_blocks(self.blocks, x)).flatten(2).sum(dim=2)  # global sum pool: (B, C)
        features = h if not self.mbstd_group else torch.cat(
            [h, minibatch_std(h, self.mbstd_group)], dim=1)
        logit = self.fc(features).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is conditional: pass labels y of shape (B,)")
            logit = logit + (self.embed(y) * h).sum(dim=1)
        return logit


def draw_frames(batch: int, n_frames: int, k: int, device: torch.device) -> torch.Tensor:
    """(batch, k) distinct frame indices per video, uniform without replacement (MoCoGAN's S_1
    for k = 1). Drawn on the CPU, like the subsampling offsets: no device sync, and restored
    with the CPU RNG state on resume."""
    return torch.rand(batch, n_frames).argsort(dim=1)[:, :k].to(device, non_blocking=True)


def select_frames(video: torch.Tensor, k: int) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B * k, 3, H, W), k random distinct frames of each video."""
    b, t = video.shape[0], video.shape[2]
    # drawn for the global batch, this process's rows kept (vidgan.distributed)
    idx = distributed.shard(draw_frames(b * distributed.world_size(), t, k, video.device))
    frames = video.transpose(1, 2)[torch.arange(b, device=video.device)[:, None], idx]
    return frames.flatten(0, 1)  # (B * k, 3, H, W), video-major


class FrameDiscriminator(nn.Module):
    """Per-frame head: ``frames_per_video`` random frames of each video -> 2D ResNet -> the
    video's logit, the mean of its frames' logits (the mean over frames is also how the memory
    head pools). Real and fake videos go through the same draw rule."""

    def __init__(self, ch: int, n_classes: int, frames_per_video: int, mbstd_group: int = 0,
                 downsample: str = "official"):
        super().__init__()
        self.frames_per_video = frames_per_video
        self.net = ResNetDiscriminator(ch, n_classes, dims=2, mbstd_group=mbstd_group,
                                       downsample=downsample)

    def forward(self, video: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        k = self.frames_per_video
        y_frames = None if y is None else y.repeat_interleave(k)
        logits = self.net(select_frames(video, k), y_frames)  # (B * k,)
        return logits.view(-1, k).mean(dim=1)  # (B,)


P_CLIP = 1e-3  # memoryGAN §3.1.1: p(y|x) clipped to [eps, 1 - eps], eps = 0.001


def memory_logit(read: Read, clip: bool) -> torch.Tensor:
    """The memory's verdict on each query as a logit (B,).

    ``clip`` (model.memory.clip, the official code): logit(clip(p, 1e-3, 1 - 1e-3)); a read
    set of one label gives the constant +-6.907 with zero gradient. Otherwise log space:
    log p - log(1 - p) from the read's posterior where the read set holds both labels, and 0
    where it holds one, so a saturated memory adds nothing to a sum of logits.
    """
    if clip:
        return torch.logit(read.p.clamp(P_CLIP, 1 - P_CLIP))
    ratio = read.log_real - read.log_fake
    return torch.where(read.mixed, ratio, torch.zeros_like(ratio))


def memory_nll(read: Read, label: int, clip: bool) -> torch.Tensor:
    """memoryGAN's cross-entropy -log p(label | q) per query (B,), label 1 real, 0 fake.

    ``clip``: -log clip(p) (the official code; a saturated read gives the constant 6.907 or
    ~0.001). Otherwise -log p (or -log(1 - p)) in log space where the read set holds both
    labels and exactly 0 where it holds one: no constant and no gradient from a read that
    cannot say anything.
    """
    if clip:
        p = read.p.clamp(P_CLIP, 1 - P_CLIP)
        return -torch.log(p if label else 1 - p)
    log_p = read.log_real if label else read.log_fake
    return torch.where(read.mixed, -log_p, torch.zeros_like(log_p))


def mean_pairwise_cosine(x: torch.Tensor, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cosine over the distinct pairs of the rows of x (N, M) (of the rows where
    ``keep``), from the norm of the sum of the unit rows: (|sum u|^2 - n) / (n (n - 1)).
    NaN for fewer than two rows."""
    u = F.normalize(x.float(), dim=1)
    if keep is not None:
        u = u * keep[:, None]
    n = u.pow(2).sum()  # rows of norm 1 (a zero key counts for nothing)
    return (u.sum(dim=0).pow(2).sum() - n) / (n * (n - 1))


class MemoryFrameDiscriminator(nn.Module):
    """memoryGAN's discriminative memory network on frames (memoryGAN §3.1).

    The 2D ResNet of the frame head is the inference network mu: its blocks, ReLU, then a
    dedicated 1x1 conv to M channels (no activation, no norm) and a global mean over H, W give
    the raw query q (the official code's last layer); the vMF memory reads q (``Read``: log p
    and log(1 - p)). A frame's logit is ``memory_logit``; a video's logit is the mean over its
    frames.

    As a head (vidgan/train/loss.py) it returns (logits, {"q", "read", "p"}). With
    loss.memory=own (``configure_loss``) its logits stay out of the 3D heads' loss and it adds
    its own term, memoryGAN's cross-entropy ``memory_nll`` (D: -log p_real - log(1 - p_fake);
    G: the non-saturating -log p_fake), weighted by loss.memory_weight; with loss.memory=shared
    its logits join the other heads' (vidgan before 0.3). It adds the MCGN mutual-information
    term mean((q_fake - K_c)^2) (loss.mi_weight) to L_D and L_G; writes the memory in
    ``after_step``, once per applied D step, with the real then the fake queries of that
    step; and with model.memory.g_step_write writes the fake queries of the G step once more
    (``after_generator_step``), as the official code writes in its G step.
    """

    def __init__(self, ch: int, frames_per_video: int, memory: VMFMemory,
                 downsample: str = "official", clip: bool = False, g_step_write: bool = True):
        super().__init__()
        self.frames_per_video = frames_per_video
        self.blocks = resnet_blocks(ch, 3, dims=2, rule=downsample)
        self.query = conv(2, 16 * ch, memory.key_dim, 1, 1.0)
        self.memory = memory
        self.clip, self.g_step_write = clip, g_step_write
        # how the training loss takes this head (configure_loss): its own term, no R1
        self.shared_loss, self.r1 = False, False

    def configure_loss(self, cfg: LossConfig) -> None:
        """loss.memory: own (its own cross-entropy term) or shared (its logits join the other
        heads' loss); loss.memory_r1: whether R1 (Eq. 10) covers this head (the official
        memoryGAN has no gradient penalty)."""
        self.shared_loss, self.r1 = cfg.memory == "shared", cfg.memory_r1

    def queries(self, frames: torch.Tensor) -> torch.Tensor:
        """mu: frames (N, 3, H, W) -> raw queries (N, M)."""
        return self.query(F.relu(run_blocks(self.blocks, frames))).mean(dim=(2, 3))

    def forward(self, video: torch.Tensor, y: Optional[torch.Tensor] = None):
        q = self.queries(select_frames(video, self.frames_per_video))  # (B * k, M)
        read = self.memory.read(q)  # float32
        logits = memory_logit(read, self.clip)
        return logits.view(-1, self.frames_per_video).mean(dim=1), {"q": q, "read": read,
                                                                     "p": read.p}

    def extra_terms(self, phase: str, real_aux, fake_aux, condition) -> Dict[str, torch.Tensor]:
        """With loss.memory=own, memoryGAN's cross-entropy as the term "memory" (times
        loss.memory_weight); with MCGN, the mutual-information term "mi" on the fakes (the
        official code's squared distance of raw q to K_c, where the paper writes a negative
        cosine)."""
        terms = {}
        if not self.shared_loss:
            fake = fake_aux["read"]
            if phase == "D":
                terms["memory"] = (memory_nll(real_aux["read"], 1, self.clip).mean()
                                   + memory_nll(fake, 0, self.clip).mean())
            else:  # non-saturating: G makes its frames read as real
                terms["memory"] = memory_nll(fake, 1, self.clip).mean()
        if condition is not None:
            dtype = self.memory.keys.dtype  # float32 under autocast too
            keys = condition.repeat_interleave(self.frames_per_video, dim=0).to(dtype)
            terms["mi"] = (fake_aux["q"].to(dtype) - keys).pow(2).mean()
        return terms

    def after_step(self, real_aux, fake_aux, condition=None) -> Dict[str, torch.Tensor]:
        """Write the real queries (label 1), then the fake ones (label 0); return diagnostics
        (``read_stats``, the memory's own, the resets).

        Across processes, the queries of the global batch (gathered in rank order) are
        written on every process alike, so the memory stays identical everywhere and equal
        to one process's (vidgan.distributed)."""
        q_real = distributed.gather(real_aux["q"].detach())
        q_fake = distributed.gather(fake_aux["q"].detach())
        stats = self.memory.diagnostics(q_real)
        stats.update(self.read_stats(real_aux["read"], "real"))
        stats.update(self.read_stats(fake_aux["read"], "fake"))
        stats["cos_real_queries"] = mean_pairwise_cosine(q_real)
        stats["cos_fake_queries"] = mean_pairwise_cosine(q_fake)
        stats["cos_real_keys"] = mean_pairwise_cosine(self.memory.keys, self.memory.values > 0.5)
        if condition is not None:
            stats["cos_sampled_keys"] = mean_pairwise_cosine(distributed.gather(condition))
        stats["resets_real"] = self.memory.update(q_real, 1)["resets"]
        stats["resets_fake"] = self.memory.update(q_fake, 0)["resets"]
        return stats

    @staticmethod
    def read_stats(read: Read, side: str) -> Dict[str, torch.Tensor]:
        """Mean p, and the fractions of reads whose set held one label (p exactly 0 or 1)
        and whose p lies outside [1e-3, 1 - 1e-3] (clipped under model.memory.clip), over
        the global batch."""
        log_real = distributed.gather(read.log_real.detach())
        log_fake = distributed.gather(read.log_fake.detach())
        gathered = Read(log_real, log_fake)
        p = gathered.p
        return {f"p_{side}": p.mean(),
                f"single_label_{side}": (~gathered.mixed).float().mean(),
                f"clipped_{side}": ((p < P_CLIP) | (p > 1 - P_CLIP)).float().mean()}

    def after_generator_step(self, fake_aux) -> Dict[str, torch.Tensor]:
        """model.memory.g_step_write: the G step's fake queries (label 0) written once more,
        as the official memoryGAN writes in its G step (docs/FIDELITY.md)."""
        if not self.g_step_write:
            return {}
        q_fake = distributed.gather(fake_aux["q"].detach())
        return {"resets_fake_g": self.memory.update(q_fake, 0)["resets"]}


def build_memory(cfg: ModelConfig) -> VMFMemory:
    m = cfg.memory
    return VMFMemory(m.slots, m.key_dim, m.topk, m.alpha, update_rule=m.update, kappa=m.kappa,
                     read_set=m.read)


class MultiLevelDiscriminator(nn.Module):
    """The discriminator side as named heads: ``L1``..``L4``, one 3D ResNet per judged level
    with its own parameters (tgan2 §3.4), plus ``frame`` when model.frame_discriminator is set.

    Every head judges one level's video and returns logits (B_l,); the training loss
    (vidgan/train/loss.py) treats all heads alike and never counts them. Adding a head = one
    module here + one config key. State-dict keys of the level heads (``discriminators.i``)
    are those of checkpoints written before heads existed.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.levels = list(cfg.dis_levels)
        self.subsample = list(cfg.subsample)
        self.batch_stride = 2 if cfg.subsample_batch else 1
        self.discriminators = nn.ModuleList(
            ResNetDiscriminator(cfg.dis_ch, cfg.n_classes, mbstd_group=cfg.minibatch_std,
                                downsample=cfg.downsample)
            for _ in self.levels)
        # name -> the level whose video the head judges
        self.head_levels: Dict[str, int] = {f"L{l}": l for l in self.levels}
        if cfg.frame_discriminator == "resnet2d":
            self.frame = FrameDiscriminator(cfg.dis_ch, cfg.n_classes, cfg.frames_per_video,
                                            cfg.minibatch_std, cfg.downsample)
        elif cfg.frame_discriminator == "memory":
            self.frame = MemoryFrameDiscriminator(cfg.dis_ch, cfg.frames_per_video,
                                                  build_memory(cfg), cfg.downsample,
                                                  cfg.memory.clip, cfg.memory.g_step_write)
        if cfg.frame_discriminator != "none":
            self.head_levels["frame"] = cfg.frame_level

    def head(self, name: str) -> nn.Module:
        if name == "frame":
            return self.frame
        return self.discriminators[self.levels.index(int(name[1:]))]

    def real_targets(self, video: torch.Tensor) -> List[torch.Tensor]:
        """A real clip (B, 3, T, H, W) reduced like each judged level (``real_targets``),
        aligned with model.dis_levels as G's level videos are."""
        return real_targets(video, self.subsample, self.levels, self.batch_stride)

    def head_inputs(self, videos: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Level videos (aligned with model.dis_levels, as G returns them) -> the video each
        head judges, by head name."""
        if len(videos) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} videos (levels {self.levels}), "
                             f"got {len(videos)}")
        by_level = dict(zip(self.levels, videos))
        return {name: by_level[level] for name, level in self.head_levels.items()}

    def forward(self, videos: Union[Sequence[torch.Tensor], Dict[str, torch.Tensor]],
                y: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Level videos (a list, as G returns them) or per-head inputs (a dict from
        ``head_inputs``) -> {head name: logits (B_l,)}."""
        inputs = videos if isinstance(videos, dict) else self.head_inputs(videos)
        logits = {}
        for name, level in self.head_levels.items():
            # batch subsampling (official option) keeps every 2nd sample per level
            y_l = None if y is None else y[::self.batch_stride ** (level - 1)]
            logits[name] = self.head(name)(inputs[name], y_l)
        return logits
