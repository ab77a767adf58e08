"""Typed experiment configuration: dataclass schema + YAML files + dotlist overrides.

A config file is a YAML mapping with the sections below. A file may name a parent with
``base: other.yaml`` (resolved next to it): the parent is loaded first and the child's keys
are merged over it, as in the official tgan2 config stacks. Overrides ``key=value`` are
merged last. Everything is checked against the schema at load time.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
N_LEVELS = 4  # tgan2 §4.1: four sub-generators (levels), three subsampling layers


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def n_frames_after(n_frames: int, subsample: List[int]) -> List[int]:
    """Frame count of every level: T, ceil(T/s_1), ceil(ceil(T/s_1)/s_2), ... (tgan2 Eq. 8)."""
    counts = [n_frames]
    for s in subsample:
        counts.append(-(-counts[-1] // s))
    return counts


@dataclass
class MemoryConfig:
    """The vMF memory of model.frame_discriminator=memory (memoryGAN §3, docs/FIDELITY.md).
    Defaults are the official CIFAR-10 settings."""
    slots: int = 16384  # N
    key_dim: int = 512  # M, the query/key dimension
    topk: int = 256  # k slots read and written per query
    alpha: float = 0.5  # histogram decay of the EM step
    # MCGN (memoryGAN §3.2): the generator also takes the key K_c of a slot c ~ h v / sum h v
    condition_generator: bool = True
    # How K_c reaches the ConvLSTM (the GRU takes it in every frame's code either way):
    # "first", joined to z before the FC, the input of t = 0 only (memoryGAN's MCGN is an
    # image model: both papers are silent); "every", also the FC's K_c part (no bias) as the
    # input of every later step, so the key reaches late frames directly. No new parameter.
    condition: str = "every"
    # Where K_c comes from: "memory", a slot's key (MCGN); "random", a control that is not in
    # memoryGAN: a uniformly random unit vector of width M per video, so G gets an input of
    # the same width and norm that carries nothing of the memory (docs/BENCHMARKS.md)
    condition_keys: str = "memory"
    update: str = "em"  # em | kaiser (memoryGAN's "-EM" ablation: K <- normalize(K + q))
    # vMF concentration: similarities are kappa * s in the read and the EM step (official: 1)
    kappa: float = 1.0
    # Which slots a query reads (its read set S of Eq. 3): "topk", the k best slots of either
    # label (official); "per_label", the k/2 best real and the k/2 best fake slots (not in
    # memoryGAN), so p always weighs both labels and every read has a gradient
    # (docs/FIDELITY.md, "Memory discriminator and MCGN").
    read: str = "topk"
    # true: p clipped to [1e-3, 1 - 1e-3] as the official code, so a read set of one label
    # gives a constant logit (+-6.907) and loss; false: log p and log(1 - p) in log space from
    # the read's posterior, and a read set of one label contributes exactly 0 to every loss.
    clip: bool = False
    # The official code writes the fake queries again in its G step (twice per iteration).
    g_step_write: bool = True


@dataclass
class DEConfig:
    """A latent neural ODE or SDE in place of the temporal recurrence (model.latent_de; Gordon
    & Parde 2021). The shipped ucf101_*_ode/sde configs set these as the authors' scripts."""
    order: int = 1  # ODE order n (1-3): y^(n) = f(y^(n-1)); the SDE is first order
    # f's layers: 0, one layer and its nonlinearity (their "single layer"); h > 0, two layers
    # through h units (their "two layers" and "equal parameters", §4.1)
    hidden: int = 0
    activation: str = "tanh"  # tanh (their TGAN, MoCoGAN), leaky_relu (0.2: TGANv2), relu
    init: str = "xavier"  # xavier: Glorot uniform, gain sqrt(2) (TGAN, TGANv2); default: PyTorch's
    # Hidden widths of the FCN prepended to the integration (§5.1), [] = none. TGAN: [512, 512,
    # 512]; MoCoGAN: [64]; TGANv2 takes none (its FC gives the initial map).
    fcn: List[int] = field(default_factory=list)
    method: str = "rk4"  # torchdiffeq solver: rk4 (the authors'), euler, midpoint, dopri5
    step_size: float = 0.0  # ODE solver step; 0 = one step per frame interval (the authors')
    sde_dt: float = 0.025  # Euler-Maruyama step of the SDE (the authors': 2.5e-2)
    # Gradients by the adjoint method (the authors') or by back-propagating through the
    # solver: 1.2-3.9x faster at 16 frames on a CPU for every shipped config, and for an ODE
    # the same gradients up to the solver's error; for the SDE under Euler-Maruyama not (the
    # paper's SDE configs set true; docs/BENCHMARKS.md, "Latent ODE and SDE: adjoint or not")
    adjoint: bool = False


@dataclass
class ModelConfig:
    # Which model: "tganv2" (TGANv2's multi-level generator and one 3D ResNet per level; with
    # model.temporal=gru, MoCoGAN's temporal generator in it), "tgan" (TGAN: 1D-deconvolution
    # temporal generator, per-frame image generator, one 3D-convolution critic) or "vgan"
    # (VGAN: two-stream foreground/background generator, one 3D-convolution D). tgan and vgan
    # read model.resolution, n_frames, z_dim, ch, dis_ch and init only.
    family: str = "tganv2"
    resolution: int = 192  # H = W of the final level; FC map is resolution/64 (tgan2 §4.1);
    # 32 (not in the paper): a 1x1 map and one Up block fewer at level 1, for CPU-sized runs
    n_frames: int = 16  # T, frames per training clip
    # Temporal generator: convlstm (TGANv2 §4.1), gru (MoCoGAN §3, content + GRU motion) or
    # tgan (not in TGANv2): TGAN's 1D-deconvolution temporal generator, each frame's [z_0 |
    # z_1^t] through an FC to the first map, as the GRU's frame codes (16 frames).
    temporal: str = "convlstm"
    # Not in TGANv2 (vidgan's own, docs/FIDELITY.md): convlstm with a fresh random input at
    # every step t >= 1, z_t ~ U[-1, 1]^z_dim through the FC's weight (no bias), as z enters
    # at t = 0. Off: the input after t = 0 is zero (official).
    step_noise: bool = False
    # Gordon & Parde 2021: the temporal recurrence replaced by a latent neural ODE or SDE
    # (model.de): none (the family's own), ode, sde. TGANv2 (temporal=convlstm): on the FC's
    # first feature map, f convolutional; temporal=gru (MoCoGAN): on the motion code, z_m ~
    # N(0, I_motion_dim); temporal=tgan and model.family=tgan: on TGAN's z_1, from z_0.
    latent_de: str = "none"
    de: DEConfig = field(default_factory=DEConfig)
    z_dim: int = 256  # convlstm, tgan: z ~ U[-1, 1]^z_dim
    content_dim: int = 50  # gru: d_C of z_C ~ N(0, I), one per video (official MoCoGAN: 50)
    motion_dim: int = 10  # gru: d_M of eps_t and of the GRU state h_t (official MoCoGAN: 10)
    # Channels of the first feature map (both temporal generators); the ConvLSTM's width.
    clstm_ch: int = 1024  # official UCF101 run: 1024
    clstm_layers: int = 1
    ch: int = 32  # image-generator base width (tgan2 Fig. 3 channel plan)
    dis_ch: int = 64  # 3D ResNet width of the first block; doubles per DownBlock
    # DownSample (tgan2 Fig. 4) on an axis of length 1: "official" zero-pads it to 3 frames
    # ([0, x, 0]) as the official code does (Table 1's D costs count this); "paper" leaves it
    # alone, as the figure's caption reads. docs/FIDELITY.md gives the measured difference.
    downsample: str = "official"
    # "official": the official code's init: FC and ConvLSTM (convlstm only) and the renderers
    # LeCun normal (std 1/sqrt(fan_in)) with zero biases, Up blocks Glorot uniform. "legacy":
    # vidgan before 0.2: FC and ConvLSTM at PyTorch's default init, renderers Glorot uniform.
    # TGAN: "official" (Chainer's default, LeCun normal) or "paper" (HeNormal, as TGAN §6
    # writes) for its temporal generator and D. VGAN: "official" only.
    init: str = "official"
    # Frame subsampling factor s_t of each of the three subsampling layers (tgan2 Eq. 8-9).
    subsample: List[int] = field(default_factory=lambda: [4, 4, 4])
    # Official-code option: each subsampling layer also keeps every 2nd sample of the batch.
    subsample_batch: bool = False
    # Levels that are rendered and judged during training. [4] with subsample [1,1,1] is the
    # paper's single-discriminator "naive" baseline (§5.3).
    dis_levels: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    n_classes: int = 0  # > 0: conditional model (tgan2 §4.6)
    # Per-frame discriminator head beside the 3D level heads: none, resnet2d (the SNGAN image
    # D with 2D kernels: MoCoGAN's D_I, tgan2 §5.3's "3D+2D" baseline) or memory (that ResNet
    # as memoryGAN's inference network mu, then the vMF memory of model.memory).
    frame_discriminator: str = "none"
    frame_level: int = 4  # the level whose frames it judges (default: the highest, level 4)
    frames_per_video: int = 1  # frames drawn at random per video (MoCoGAN's S_1: 1)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # Not in TGANv2: minibatch standard deviation (ProGAN/StyleGAN2) in every 3D and 2D ResNet
    # head, over groups of this many clips (StyleGAN2: 4); 0 = off, the paper's D.
    minibatch_std: int = 0

    @property
    def memory_condition_dim(self) -> int:
        """Width of the memory key K_c the generator takes (MCGN), 0 without one."""
        on = self.frame_discriminator == "memory" and self.memory.condition_generator
        return self.memory.key_dim if on else 0


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # synthetic | modes | folder | ucf101 | faceforensics
    root: str = "data/synthetic"
    split: int = 1  # UCF101 split lists 1-3 (trainlist0N / testlist0N)
    subset: str = "train"  # what training reads: train | test | all (faceforensics: also val)
    frame_stride: int = 1  # take every k-th frame of the source video
    # Decode size (H, W); [] = each video's aspect kept, shorter side = model.resolution
    # (UCF101 320x240 -> 256x192 at resolution 192, as the official HDF5 stored it).
    resize: List[int] = field(default_factory=list)
    crop_margin: int = 4  # training crops stay this many px from the left/right edge (official)
    flip: bool = True  # random horizontal flip in training (tgan2 §5.1)
    num_workers: int = 2  # DataLoader worker processes; each decodes whole clips
    decode_threads: int = 1  # decoder threads per file; 1 is best with several workers
    # pyav | decord (vidgan.data.decode): the same frame for an index; resized, the pixels
    # differ by ~1/255 on average. pyav makes 1.3-1.4x decord's clips per core.
    decoder: str = "pyav"
    manifest: str = ""  # video index file; "" = <root>/vidgan_manifest.json
    index_workers: int = 0  # worker processes probing videos when indexing; 0 = CPU count
    # Stop when more than this fraction of the videos is unusable (at indexing, or failing
    # to decode during training); single bad files are skipped and reported.
    max_bad_fraction: float = 0.05
    # Generated datasets (synthetic; modes, vidgan.data.modes): written into `root` when it
    # is missing, at model.resolution; clips per class (per mode for modes) and frames
    synthetic_videos_per_class: int = 64
    synthetic_frames: int = 32


@dataclass
class LossConfig:
    # "logistic": the non-saturating logistic loss (TGANv2, MoCoGAN). "wgan": the WGAN critic's
    # E D(fake) - E D(real), and -E D(fake) for G (TGAN §3.2, Eq. 2), which needs a Lipschitz
    # constraint on D: train.d_constraint (and no R1: loss.r1_weight=0 as TGAN).
    type: str = "logistic"
    # "mean": the official code (it produced the paper's numbers): the softplus loss of every
    # head's logits, averaged over all of them (levels x batch). "sum": tgan2 Eq. (7), one
    # sigmoid over the sum of the level logits, as the paper's text writes it.
    combine: str = "mean"
    r1_weight: float = 0.5  # lambda of Eq. (10); 0.5 for TGANv2, 10 for the baselines
    # Lazy R1 (StyleGAN2 §B): k > 1 runs R1 as its own D step every k-th D step, weighted
    # k * lambda, with D's Adam lr * k/(k+1) and betas ** (k/(k+1)). 1 = every step, in the
    # D loss (the paper).
    r1_interval: int = 1
    # memoryGAN's mutual-information term lambda * mean((q_fake - K_c)^2), in L_D and L_G
    # (model.frame_discriminator=memory with condition_generator); official: 1e-6
    mi_weight: float = 1e-6
    # The memory head (model.frame_discriminator=memory). "own": its own term, memoryGAN's
    # cross-entropy (D: -log p_real - log(1 - p_fake); G: -log p_fake) times memory_weight,
    # beside the 3D heads' loss, as the official memoryGAN's p is a whole D's output.
    # "shared": its logit joins the 3D heads' loss (loss.combine), vidgan before 0.3.
    memory: str = "own"
    memory_weight: float = 1.0
    memory_r1: bool = False  # R1 (Eq. 10) on the memory head too; the official memoryGAN has none
    # A generator that composes its video through a mask m (VGAN's two streams): the sparsity
    # prior lambda * ||m||_1 on the G step (VGAN §2.2, lambda 0.1), as the official code's
    # L1Penalty gives it: lambda * the mean of m over every element of the batch.
    mask_weight: float = 0.1
    # How ||m||_1 is taken: "mean", over every element of the batch (the official code);
    # "sum", over each clip's T x H x W, then the mean over the batch (VGAN §2.2 as written).
    mask_norm: str = "mean"


@dataclass
class TrainConfig:
    iterations: int = 100000
    # The global batch B: under torchrun each of the N processes holds B / N samples
    # (vidgan.distributed). eval.batch_size, by contrast, is per process.
    batch_size: int = 32
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.0, 0.9])
    # "chainer": the official code's Adam, eps added to sqrt(v) before the bias correction
    # (vidgan.train.optim.Adam); "torch": torch.optim.Adam's form, eps added after it.
    adam: str = "chainer"
    adam_eps: float = 8e-8  # the official code's Adam eps (in the form train.adam names)
    # "g_first": the official code's iteration: G step through the D of before this
    # iteration's D update, then the D step on that same G output (one G forward per
    # iteration); "d_first": D step on its own fakes, then a new z and G forward through the
    # updated D (StyleGAN2's order; vidgan before 0.2).
    step_order: str = "g_first"
    # "adam" (train.adam, betas, adam_eps); "rmsprop": Chainer's and torch's RMSprop, alpha
    # 0.99, eps 1e-8 outside the square root (the official TGAN code's, lr 5e-5).
    optimizer: str = "adam"
    # A WGAN critic's constraint, applied to D after its update every d_constraint_interval
    # iterations (TGAN Algorithm 1, n_clip; official: 5): "none"; "svc", TGAN's Singular Value
    # Clipping of every conv weight and its clip of every BN scale (Table 2); "clip", WGAN's
    # weight clipping of every D parameter to [-weight_clip, weight_clip].
    d_constraint: str = "none"
    d_constraint_interval: int = 1
    # svc's bound on every BN scale gamma: "official" (the official code), [0.01 sigma,
    # sigma] with sigma the running std; "paper" (TGAN Table 2 as written), 0 <= gamma <=
    # sqrt(sigma^2 + eps). docs/FIDELITY.md gives the measured difference.
    bn_scale_bound: str = "official"
    weight_clip: float = 0.01
    # lr decays linearly to 0 over this many (tgan2 §5.2); 0 = a constant lr (TGAN, VGAN)
    lr_decay_iterations: int = 100000
    n_dis: int = 1  # D updates per G update
    ema_beta: float = 0.999  # generator EMA; the EMA weights are used for sampling
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 (autocast)
    log_interval: int = 10  # >= 1
    # Every log interval, the norm of the gradient each D head sends G (grad_G/<head>): one
    # more backward through G per head on that iteration (+40-60% for it at the modes sizes).
    head_gradients: bool = True
    checkpoint_interval: int = 2000  # >= 1; also one at the end, on a signal, on SIGUSR1
    keep_checkpoints: int = 3
    max_nonfinite: int = 10  # this many consecutive non-finite losses stop the run
    # torchrun: seconds a collective of a training or evaluation step may wait for another
    # process before it counts as lost; the survivors then leave at once without a
    # checkpoint (exit 3, docs/OPERATIONS.md). NCCL's own default.
    collective_timeout: float = 600.0
    # torchrun: seconds the other processes wait while rank 0 alone writes files they need:
    # the dataset or its index, the real statistics cache, a checkpoint.
    main_work_timeout: float = 7200.0


@dataclass
class EvalConfig:
    sample_interval: int = 2000  # mp4 + TensorBoard sample of the fixed-z grid; 0 = off
    sample_rows: int = 4  # the grid is rows x rows clips
    fps: int = 8
    # In-training evaluation every `interval` iterations of the metrics named in `metrics`
    # (vidgan.metrics.registry; README, Metrics), one repeat on `n_samples` clips, or the
    # count a metric fixes (fvd2048_16f: 2048); metrics whose classifier has no weights set are
    # skipped with a warning. The full protocols are `python -m vidgan.evaluate`.
    c3d_weights: str = ""  # conv3d_deepnetA_ucf.npz (TGANv2 release) or our converted .pt
    c3d_mean: str = ""  # mean2.npz
    # i3d_pretrained_400.pt (VideoGPT/TATS/DIGAN), StyleGAN-V's i3d_torchscript.pt, or ours
    i3d_weights: str = ""
    interval: int = 10000  # 0 = off
    metrics: List[str] = field(default_factory=lambda: ["is", "fid"])
    n_samples: int = 2048
    # Clips per forward pass of each process (C3D, I3D, the generator): evaluation hands whole
    # batches to the processes in turn, so N processes score N batches at once. Per process,
    # unlike train.batch_size (global): it sizes one device's memory, not the statistics.
    batch_size: int = 32
    stats_dir: str = "data/c3d_stats"  # cached real references (C3D, I3D), keyed by a hash
    # A score of the in-training evaluation (is, fid, modes_covered, ...; "" = off): whenever
    # it is the best so far (lower for fid/fvd/kvd/modes_kl, else higher) the run's state is
    # saved as checkpoints/best.pt, the protocol of Gordon & Parde §4 (IS every 1000
    # iterations, the best kept).
    keep_best: str = ""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "model.family": ("tganv2", "tgan", "vgan"),
    "model.temporal": ("convlstm", "gru", "tgan"),
    "model.latent_de": ("none", "ode", "sde"),
    "model.de.activation": ("tanh", "leaky_relu", "relu"),
    "model.de.init": ("xavier", "default"),
    "model.de.method": ("rk4", "euler", "midpoint", "dopri5"),
    "model.frame_discriminator": ("none", "resnet2d", "memory"),
    "model.memory.update": ("em", "kaiser"),
    "model.memory.read": ("topk", "per_label"),
    "model.memory.condition": ("first", "every"),
    "model.memory.condition_keys": ("memory", "random"),
    "loss.memory": ("own", "shared"),
    "model.downsample": ("official", "paper"),
    "model.init": ("official", "legacy", "paper"),
    "data.dataset": ("synthetic", "modes", "folder", "ucf101", "faceforensics"),
    "data.subset": ("train", "val", "test", "all"),
    "data.decoder": ("pyav", "decord"),
    "loss.combine": ("sum", "mean"),
    "loss.type": ("logistic", "wgan"),
    "loss.mask_norm": ("mean", "sum"),
    "train.optimizer": ("adam", "rmsprop"),
    "train.d_constraint": ("none", "svc", "clip"),
    "train.bn_scale_bound": ("official", "paper"),
    "train.amp": ("none", "bf16"),
    "train.adam": ("chainer", "torch"),
    "train.step_order": ("g_first", "d_first"),
}

# What vidgan did before a key existed: the official TGANv2 step (keys added in 0.2) and the
# memory head's own loss (0.3). A checkpoint whose stored config lacks one of these keys was
# trained with this value; ``changed_settings`` names the ones a resumed run changes.
PREVIOUS_DEFAULTS = {
    "model.downsample": "paper",
    "model.init": "legacy",
    "model.memory.condition": "first",
    "model.memory.clip": True,
    "model.memory.g_step_write": False,
    "loss.combine": "sum",
    "loss.memory": "shared",
    "loss.memory_r1": True,
    "train.adam": "torch",
    "train.adam_eps": 1e-8,
    "train.step_order": "d_first",
}
# Model keys that change no parameter: a run may resume with another value.
BEHAVIOUR_ONLY_MODEL_KEYS = ("downsample", "init", "memory.condition", "memory.kappa",
                             "memory.condition_keys",
                             "memory.clip", "memory.g_step_write", "memory.read",
                             "de.method", "de.step_size", "de.adjoint")
# Keys that mean something only with the memory head (model.frame_discriminator=memory).
MEMORY_KEYS = ("model.memory.", "loss.memory", "loss.mi_weight")
# Model keys only the TGANv2 family (model.family=tganv2) reads.
TGANV2_KEYS = ("model.temporal", "model.content_dim", "model.motion_dim", "model.clstm_",
               "model.subsample", "model.dis_levels", "model.n_classes",
               "model.frame_", "model.frames_per_video", "model.memory.", "model.downsample",
               "model.minibatch_std")
# Keys (or key prefixes) read by one variant only: (key, the key that picks the variant, the
# values that read it). Setting such a key for another variant is an error (``unused_keys``).
VARIANT_KEYS = (
    ("model.z_dim", "model.temporal", ("convlstm", "tgan")),
    ("model.step_noise", "model.temporal", ("convlstm",)),
    ("model.latent_de", "model.family", ("tganv2", "tgan")),
    ("model.de.", "model.latent_de", ("ode", "sde")),
) + tuple((key, "model.family", ("tganv2",)) for key in TGANV2_KEYS) + (
    ("model.clstm_layers", "model.temporal", ("convlstm",)),
    ("model.content_dim", "model.temporal", ("gru",)),
    ("model.motion_dim", "model.temporal", ("gru",)),
    ("model.frame_level", "model.frame_discriminator", ("resnet2d", "memory")),
    ("model.frames_per_video", "model.frame_discriminator", ("resnet2d", "memory")),
) + tuple((key, "model.frame_discriminator", ("memory",)) for key in MEMORY_KEYS) + (
    ("loss.mask_weight", "model.family", ("vgan",)),
    ("loss.mask_norm", "model.family", ("vgan",)),
    ("train.bn_scale_bound", "train.d_constraint", ("svc",)),
    ("data.split", "data.dataset", ("ucf101",)),
    ("data.subset", "data.dataset", ("ucf101", "faceforensics")),
    ("data.synthetic_", "data.dataset", ("synthetic", "modes")),
)
# Keys vidgan no longer has, with the one value they could take: a config file or override
# that sets one is an error; a checkpoint's stored config that holds that value loads with a
# one-line warning.
REMOVED_KEYS = {"model.discriminator": "multi3d"}



def resolve_config_path(name_or_path: str) -> Path:
    """A path that exists, else a name inside ``configs/`` (``.yaml`` optional)."""
    candidates = [Path(name_or_path), CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    available = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config '{name_or_path}' not found as a path or in {CONFIG_DIR}; "
                      f"available: {', '.join(available)}")


def _read_yaml(path: Path, seen: tuple = ()) -> DictConfig:
    if path in seen:
        raise ConfigError(f"config {path}: 'base' chain loops back to itself")
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"config {path}: expected a YAML mapping with sections "
                          f"model/data/loss/train/eval")
    base = node.pop("base", None)
    if base is None:
        return node
    parent = _read_yaml((path.parent / base).resolve(), seen + (path,))
    return OmegaConf.merge(parent, node)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'did not find expected ',' or ']' at line 3, column 10' from a PyYAML error."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _merge_checked(schema: DictConfig, other: DictConfig | dict, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, other)
    except (ConfigKeyError, ValidationError) as err:
        key = getattr(err, "full_key", None) or "?"
        if isinstance(err, ConfigKeyError):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(schema, parent) if parent else schema
            allowed = ", ".join(node.keys()) if isinstance(node, DictConfig) else "?"
            raise ConfigError(f"{source}: unknown key '{key}'; allowed keys"
                              f"{' in ' + parent if parent else ''}: {allowed}") from None
        expected = type(OmegaConf.select(schema, key)).__name__ if key != "?" else "?"
        raise ConfigError(f"{source}: bad value for '{key}': {err.msg.splitlines()[0]} "
                          f"(expected {expected})") from None


def validate(cfg: Config) -> None:
    """Range checks the schema's types cannot express. Raises ConfigError naming the key."""
    m = cfg.model
    if m.resolution != 32 and (m.resolution < 64 or m.resolution % 64):
        raise ConfigError(f"model.resolution={m.resolution}: must be a positive multiple of 64 "
                          f"(the FC map is resolution/64 pixels, tgan2 §4.1), e.g. 64, 128, 192, "
                          f"256, or 32 (1x1 map, one Up block fewer: for CPU-sized runs)")
    if m.n_frames < 1:
        raise ConfigError(f"model.n_frames={m.n_frames}: must be an integer >= 1")
    _validate_temporal(m)
    if m.family in ("tgan", "vgan"):  # another value: the CHOICES check below names it
        _validate_single_video_family(cfg)
    elif m.init == "paper":
        raise ConfigError("model.init='paper': only model.family=tgan has a paper init that "
                          "differs from its code's; TGANv2 takes official or legacy")
    if len(m.subsample) != N_LEVELS - 1:
        raise ConfigError(f"model.subsample={list(m.subsample)}: expected {N_LEVELS - 1} factors, "
                          f"one per subsampling layer")
    for i, s in enumerate(m.subsample):
        if s < 1:
            raise ConfigError(f"model.subsample[{i}]={s}: every subsampling factor s_t must be an "
                              f"integer >= 1 (1 = keep all frames)")
    levels = list(m.dis_levels)
    if not levels or sorted(set(levels)) != levels or not all(1 <= l <= N_LEVELS for l in levels):
        raise ConfigError(f"model.dis_levels={levels}: expected a non-empty increasing list of "
                          f"levels from 1..{N_LEVELS}")
    if levels[-1] != N_LEVELS:
        raise ConfigError(f"model.dis_levels={levels}: must include the last level {N_LEVELS}, "
                          f"which renders the final video")
    if m.frame_level not in levels:
        raise ConfigError(f"model.frame_level={m.frame_level}: the frame discriminator judges "
                          f"the frames of a rendered level, one of model.dis_levels={levels}")
    frames = n_frames_after(m.n_frames, list(m.subsample))[m.frame_level - 1]
    if not 1 <= m.frames_per_video <= frames:
        raise ConfigError(f"model.frames_per_video={m.frames_per_video}: level {m.frame_level} "
                          f"has {frames} frame(s) per video (model.n_frames={m.n_frames}, "
                          f"subsample={list(m.subsample)}); expected 1..{frames}")
    mem = m.memory
    if m.frame_discriminator == "memory":
        if m.n_classes:
            raise ConfigError(f"model.frame_discriminator='memory' with model.n_classes="
                              f"{m.n_classes}: the memory discriminator is unconditional; use "
                              f"resnet2d for a conditional model")
        if not 1 <= mem.topk <= mem.slots:
            raise ConfigError(f"model.memory.topk={mem.topk}: must lie in 1..model.memory.slots"
                              f"={mem.slots}")
        if mem.read == "per_label" and mem.topk < 2:
            raise ConfigError(f"model.memory.topk={mem.topk}: model.memory.read=per_label reads "
                              f"topk/2 slots of each label, so topk must be >= 2")
        if not 0.0 < mem.alpha <= 1.0:
            raise ConfigError(f"model.memory.alpha={mem.alpha}: must be in (0, 1]")
        queries = cfg.train.batch_size * m.frames_per_video
        if queries > mem.slots:
            raise ConfigError(f"model.memory.slots={mem.slots}: a write holds train.batch_size x "
                              f"model.frames_per_video = {queries} queries; use more slots")
        if mem.g_step_write and 3 * queries > mem.slots:
            # resets take the oldest slots: two fake writes of a batch after one real write can
            # turn every slot fake, and MCGN then has no real slot to sample
            raise ConfigError(f"model.memory.slots={mem.slots}: with model.memory.g_step_write "
                              f"an iteration writes train.batch_size x model.frames_per_video = "
                              f"{queries} queries three times (real, fake, the G step's fake); "
                              f"use at least {3 * queries} slots, or g_step_write=false")
        if not mem.kappa > 0:
            raise ConfigError(f"model.memory.kappa={mem.kappa}: the vMF concentration must be "
                              f"> 0 (official: 1)")
    if cfg.loss.mi_weight < 0:
        raise ConfigError(f"loss.mi_weight={cfg.loss.mi_weight}: must be >= 0")
    if cfg.loss.mask_weight < 0:
        raise ConfigError(f"loss.mask_weight={cfg.loss.mask_weight}: must be >= 0")
    if cfg.loss.memory_weight < 0:
        raise ConfigError(f"loss.memory_weight={cfg.loss.memory_weight}: must be >= 0")
    if m.minibatch_std < 0:
        raise ConfigError(f"model.minibatch_std={m.minibatch_std}: must be >= 0 (0 = off, "
                          f"else the group size, e.g. 4)")
    for name, value in (("model.z_dim", m.z_dim), ("model.content_dim", m.content_dim),
                        ("model.memory.slots", mem.slots),
                        ("model.memory.key_dim", mem.key_dim),
                        ("model.motion_dim", m.motion_dim), ("model.clstm_ch", m.clstm_ch),
                        ("model.clstm_layers", m.clstm_layers), ("model.ch", m.ch),
                        ("model.dis_ch", m.dis_ch), ("train.batch_size", cfg.train.batch_size),
                        ("train.n_dis", cfg.train.n_dis),
                        ("train.keep_checkpoints", cfg.train.keep_checkpoints),
                        ("train.max_nonfinite", cfg.train.max_nonfinite),
                        ("train.log_interval", cfg.train.log_interval),
                        ("train.checkpoint_interval", cfg.train.checkpoint_interval),
                        ("train.d_constraint_interval", cfg.train.d_constraint_interval),
                        ("data.synthetic_videos_per_class", cfg.data.synthetic_videos_per_class),
                        ("data.synthetic_frames", cfg.data.synthetic_frames),
                        ("eval.sample_rows", cfg.eval.sample_rows), ("eval.fps", cfg.eval.fps),
                        ("eval.n_samples", cfg.eval.n_samples),
                        ("eval.batch_size", cfg.eval.batch_size),
                        ("data.frame_stride", cfg.data.frame_stride)):
        if value < 1:
            raise ConfigError(f"{name}={value}: must be an integer >= 1")
    d = cfg.data
    if d.dataset == "ucf101" and d.split not in (1, 2, 3):
        raise ConfigError(f"data.split={d.split}: UCF101 has splits 1, 2 and 3")
    if d.dataset == "ucf101" and d.subset == "val":
        raise ConfigError("data.subset='val': UCF101 has no validation list; use train, test "
                          "or all")
    if d.resize and (len(d.resize) != 2 or min(d.resize) < m.resolution):
        raise ConfigError(f"data.resize={list(d.resize)}: expected [] or [H, W] with both >= "
                          f"model.resolution={m.resolution}")
    for name, value in (("data.crop_margin", d.crop_margin), ("data.num_workers", d.num_workers),
                        ("data.decode_threads", d.decode_threads),
                        ("data.index_workers", d.index_workers)):
        if value < 0:
            raise ConfigError(f"{name}={value}: must be an integer >= 0")
    if not 0.0 <= d.max_bad_fraction <= 1.0:
        raise ConfigError(f"data.max_bad_fraction={d.max_bad_fraction}: must be in [0, 1]")
    if m.n_classes < 0:
        raise ConfigError(f"model.n_classes={m.n_classes}: must be >= 0 (0 = unconditional)")
    t = cfg.train
    for name, value in (("train.iterations", t.iterations), ("train.seed", t.seed),
                        ("train.lr_decay_iterations", t.lr_decay_iterations),
                        ("eval.sample_interval", cfg.eval.sample_interval),
                        ("eval.interval", cfg.eval.interval)):
        if value < 0:  # the two intervals: 0 = off
            raise ConfigError(f"{name}={value}: must be an integer >= 0")
    for name, value in (("train.lr", t.lr), ("train.adam_eps", t.adam_eps),
                        ("train.collective_timeout", t.collective_timeout),
                        ("train.weight_clip", t.weight_clip),
                        ("train.main_work_timeout", t.main_work_timeout)):
        if not value > 0:
            raise ConfigError(f"{name}={value}: must be > 0")
    if cfg.loss.r1_weight < 0:
        raise ConfigError(f"loss.r1_weight={cfg.loss.r1_weight}: must be >= 0")
    if t.optimizer == "rmsprop" and cfg.loss.r1_interval > 1:
        raise ConfigError(f"loss.r1_interval={cfg.loss.r1_interval} with train.optimizer="
                          f"rmsprop: lazy R1 rescales Adam's betas; use train.optimizer=adam or "
                          f"loss.r1_interval=1")
    if cfg.loss.r1_interval < 1:
        raise ConfigError(f"loss.r1_interval={cfg.loss.r1_interval}: must be >= 1 (1 = R1 in "
                          f"every D step)")
    if not 0.0 <= cfg.train.ema_beta < 1.0:
        raise ConfigError(f"train.ema_beta={cfg.train.ema_beta}: must be in [0, 1)")
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError(f"train.betas={list(t.betas)}: expected [beta1, beta2], each in "
                          f"[0, 1)")
    for key, allowed in CHOICES.items():
        value = setting(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}='{value}': allowed values are {', '.join(allowed)}")
    _validate_keep_best(cfg.eval)
    if cfg.loss.combine == "sum" and m.subsample_batch:
        raise ConfigError("loss.combine='sum' needs every level to judge the same videos, but "
                          "model.subsample_batch=true drops samples per level; use "
                          "loss.combine=mean (as the official code does) or subsample_batch=false")


def score_order(name: str) -> Optional[str]:
    """Which way score ``name`` improves: "lower" (Fréchet distances, KVD, every KL against
    the uniform distribution, the modes classifier's shares of clips turned away), "one"
    (a ratio to the real data's value: nearer 1 is better), None (a share of one class or a
    spread across repeats: no better direction), else "higher" (IS, modes covered, ...).
    Here rather than beside the metrics so that config validation needs no metric import."""
    if name.startswith(("fid", "fvd", "kvd", "modes_invalid_")) or name.endswith("_kl"):
        return "lower"
    if name.endswith("_ratio"):
        return "one"
    if name.startswith("synthetic_share_") or name.endswith("_std"):
        return None
    return "higher"


def score_of(name: str, metrics) -> bool:
    """Whether score ``name`` is one that a metric in ``metrics`` reports (``is`` reports
    ``is``, ``modes`` reports ``modes_covered``, ...)."""
    return any(name == m or name.startswith(f"{m}_") for m in metrics)


def _validate_keep_best(ev: EvalConfig) -> None:
    name = ev.keep_best
    if not name:
        return
    if not score_of(name, ev.metrics):
        raise ConfigError(f"eval.keep_best='{name}': not a score of eval.metrics="
                          f"{list(ev.metrics)} (e.g. is, fid, modes_covered)")
    if score_order(name) is None:
        raise ConfigError(f"eval.keep_best='{name}': this score has no better direction (a "
                          f"class share or a spread); name one that does (e.g. is, fid, "
                          f"modes_covered)")
    if ev.interval == 0:
        raise ConfigError(f"eval.keep_best='{name}': needs the in-training evaluation; set "
                          f"eval.interval > 0")


def _validate_temporal(m: ModelConfig) -> None:
    """The temporal generator's options: step noise, TGAN's 1D temporal generator in TGANv2's
    pipeline, and the latent ODE/SDE (model.latent_de, model.de)."""
    de, ode = m.de, m.latent_de != "none"
    if m.step_noise and m.temporal != "convlstm":
        raise ConfigError(f"model.step_noise=true: only model.temporal=convlstm takes a per-step "
                          f"input (this run has {m.temporal})")
    if m.step_noise and ode:
        raise ConfigError(f"model.step_noise=true with model.latent_de={m.latent_de}: the "
                          f"ConvLSTM it feeds is replaced by the {m.latent_de.upper()}")
    if m.family == "tganv2" and m.temporal == "tgan" and not ode and m.n_frames != 16:
        raise ConfigError(f"model.n_frames={m.n_frames}: model.temporal=tgan draws 16 frames "
                          f"(four stride-2 1D deconvolutions from one step, TGAN Table 1)")
    mcgn = m.memory_condition_dim > 0 and m.family == "tganv2"
    if mcgn and (m.temporal == "tgan" or (m.temporal == "convlstm" and ode)):
        raise ConfigError(f"model.memory.condition_generator=true: MCGN conditions "
                          f"model.temporal=convlstm (without model.latent_de) or gru, not "
                          f"temporal={m.temporal} with latent_de={m.latent_de}")
    if not ode:
        return
    if m.family == "vgan":
        raise ConfigError("model.latent_de: VGAN draws all frames at once; it has no temporal "
                          "recurrence to replace")
    if m.n_frames < 2:
        raise ConfigError(f"model.n_frames={m.n_frames}: the latent {m.latent_de.upper()} puts "
                          f"frames at linspace(0, 1, T); T must be >= 2")
    if de.order not in (1, 2, 3) or (m.latent_de == "sde" and de.order != 1):
        raise ConfigError(f"model.de.order={de.order}: the ODE takes 1, 2 or 3, the SDE 1")
    if de.hidden < 0:
        raise ConfigError(f"model.de.hidden={de.hidden}: must be >= 0 (0 = one layer)")
    if not de.sde_dt > 0 or de.step_size < 0:
        raise ConfigError(f"model.de.sde_dt={de.sde_dt}, step_size={de.step_size}: sde_dt must "
                          f"be > 0, step_size >= 0 (0 = the frame grid)")
    if any(w < 1 for w in de.fcn):
        raise ConfigError(f"model.de.fcn={list(de.fcn)}: widths must be >= 1")
    if de.fcn and m.family == "tganv2" and m.temporal == "convlstm":
        raise ConfigError(f"model.de.fcn={list(de.fcn)}: TGANv2's ODE starts at the FC's "
                          f"feature map, which takes no FCN (the authors' ode_gen); set []")


def _validate_single_video_family(cfg: Config) -> None:
    """TGAN and VGAN: one generated video at one size, judged by one discriminator."""
    m = cfg.model
    r = m.resolution
    if r < 32 or r & (r - 1):
        raise ConfigError(f"model.resolution={r}: model.family={m.family} upsamples a 4x4 map "
                          f"by 2 per layer, so it must be a power of two >= 32 (official: 64)")
    frames = {"tgan": 16, "vgan": r // 2}[m.family]
    why = {"tgan": "four stride-2 1D deconvolutions from one step (TGAN Table 1)",
           "vgan": "the foreground stream doubles 2 frames as often as it doubles the 4x4 map "
                   "(VGAN: 32 frames at 64 px)"}[m.family]
    if m.n_frames != frames:
        raise ConfigError(f"model.n_frames={m.n_frames}: model.family={m.family} at "
                          f"model.resolution={r} draws {frames} frames: {why}")
    if m.init not in {"tgan": ("official", "paper"), "vgan": ("official",)}[m.family]:
        raise ConfigError(f"model.init='{m.init}': model.family={m.family} takes "
                          f"{'official or paper' if m.family == 'tgan' else 'official'}")
    if m.family == "tgan" and m.ch % 16:
        raise ConfigError(f"model.ch={m.ch}: TGAN's image generator halves its width four "
                          f"times; use a multiple of 16 (official: 512)")


def setting(obj, dotted: str):
    """The value at ``dotted`` (e.g. "train.step_order") of a Config."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def load_config(name_or_path: Optional[str] = "demo.yaml", overrides: List[str] = ()) -> Config:
    """Load ``name_or_path`` (a file, or a name in configs/), apply ``key=value`` overrides,
    validate, and return a typed Config. A key the chosen variant does not read is an error
    (``unused_keys``)."""
    schema = OmegaConf.structured(Config)
    path = resolve_config_path(name_or_path)
    node = _read_yaml(path)
    sources = [(str(path), _own_keys(path))] + [
        (f"override '{item}'", {item.split("=", 1)[0].strip()}) for item in overrides]
    for source, keys in sources:
        for key in keys:
            if key in REMOVED_KEYS:
                raise ConfigError(f"{source}: '{key}' is no longer a setting: vidgan builds "
                                  f"one discriminator ({REMOVED_KEYS[key]}); remove the key")
    merged = _apply_overrides(_merge_checked(schema, node, str(path)), overrides)
    cfg: Config = OmegaConf.to_object(merged)
    validate(cfg)
    problems = unused_keys(cfg, sources)
    if problems:
        raise ConfigError(problems[0])
    return cfg


def _own_keys(path: Path) -> set:
    """The dotted leaf keys the file ``path`` itself sets (not its ``base``)."""
    try:
        node = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError:  # _read_yaml has reported it already
        return set()
    node.pop("base", None)
    return set(_leaf_keys(node))


def _leaf_keys(node, prefix: str = ""):
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, key + ".")
        else:
            yield key


def unused_keys(cfg: Config, sources: List[Tuple[str, set]]) -> List[str]:
    """An error message for every key that a source sets but the chosen variant does not read
    (``VARIANT_KEYS``), e.g. model.z_dim with model.temporal=gru.

    ``sources`` are (name, dotted keys it sets) in the order they apply: the config file named
    on the command line, then each override. Keys that only a ``base`` file sets are not
    checked (a file cannot unset its base's keys), nor keys set before a later source changed
    the variant: ``--config ucf101_st4.yaml model.temporal=gru`` loads, although the file sets
    model.z_dim.
    """
    def last_source(match) -> int:
        hits = [i for i, (_, keys) in enumerate(sources) if any(match(k) for k in keys)]
        return hits[-1] if hits else -1

    problems = []
    for prefix, variant, readers in VARIANT_KEYS:
        value = setting(cfg, variant)
        if value in readers:
            continue
        chooser = last_source(lambda k: k == variant)
        for i, (source, keys) in enumerate(sources):
            for key in sorted(k for k in keys if k.startswith(prefix)):
                if i >= chooser and i == last_source(lambda k: k == key):
                    problems.append(
                        f"{source}: '{key}' is read only with {variant}="
                        f"{' or '.join(readers)}, and this run has {variant}={value}; remove "
                        f"it (or choose that variant)")
    return problems


def _apply_overrides(merged: DictConfig, overrides: List[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. train.batch_size=8")
        try:
            parsed = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': the value is not valid YAML "
                              f"({getattr(err, 'problem', None) or err})") from None
        merged = _merge_checked(merged, parsed, f"override '{item}'")
    return merged


def config_from_dict(data: dict, overrides: List[str] = ()) -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. the copy stored in a checkpoint), with
    ``key=value`` overrides checked as ``load_config`` checks them. Keys of
    ``PREVIOUS_DEFAULTS`` that ``data`` lacks (a checkpoint written before they existed) take
    the value such a checkpoint was trained with."""
    data = without_removed_keys(with_previous_defaults(data))
    merged = _merge_checked(OmegaConf.structured(Config), data, "stored config")
    cfg = OmegaConf.to_object(_apply_overrides(merged, overrides))
    validate(cfg)
    return cfg


def with_previous_defaults(data: dict) -> dict:
    """A copy of the config dict ``data`` where every ``PREVIOUS_DEFAULTS`` key it lacks is set
    to that previous value."""
    data = copy.deepcopy(data)
    for key, value in PREVIOUS_DEFAULTS.items():
        node, name = parent_dict(data, key)
        if node is not None:
            node.setdefault(name, value)
    return data


def without_removed_keys(data: dict) -> dict:
    """``data`` without the ``REMOVED_KEYS`` an older checkpoint's config holds, each dropped
    with a one-line warning; another value than the key's only one is a ConfigError."""
    for key, only in REMOVED_KEYS.items():
        node, name = parent_dict(data, key)
        if node is None or name not in node:
            continue
        value = node.pop(name)
        if value != only:
            raise ConfigError(f"stored config: {key}='{value}': vidgan builds only {only}")
        warnings.warn(f"stored config: {key}={only} is no longer a setting; ignored",
                      stacklevel=3)
    return data


def parent_dict(data: dict, dotted: str) -> Tuple[Optional[dict], str]:
    """(the nested dict that holds ``dotted``'s last part, that part) in a config dict, e.g.
    (data["model"]["memory"], "kappa") for "model.memory.kappa"; None where a section on the
    way is missing."""
    *path, name = dotted.split(".")
    node = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), name


def changed_settings(stored: Config, current: Config) -> List[str]:
    """``key old -> new`` for every ``PREVIOUS_DEFAULTS`` key whose value in ``current``
    differs from ``stored`` (the config a checkpoint was trained with)."""
    memory = current.model.frame_discriminator == "memory"
    return [f"{key} {setting(stored, key)} -> {setting(current, key)}"
            for key in PREVIOUS_DEFAULTS
            if setting(stored, key) != setting(current, key)
            and (memory or not key.startswith(MEMORY_KEYS))]


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
