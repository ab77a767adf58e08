"""vidgan's TGAN training against the official Chainer code, in float64: the same initial
weights, z and real batches through ``--iterations`` iterations of vidgan's Trainer
(model.family=tgan, the ucf101_tgan.yaml step at tiny widths) and of the official
``TGANUpdaterWGANSVC`` (freq 5), then every loss and every parameter and BN statistic
compared.

    bash ../shared/tools/chainer_venv.sh /tmp/chainer-venv
    git --git-dir=<pfnet-research/tgan mirror> archive HEAD models updaters | tar -x -C /tmp/tgan
    .venv/bin/python -m benchmarks.official_tgan_step --chainer /tmp/chainer-venv/bin/python \\
        --official-src /tmp/tgan [--iterations 6]

The official code runs in the Chainer venv (this file, ``--official``, imports no torch). Its
SVC calls cupy's ``.get()``; on the CPU the arrays it reads are given that method and nothing
else. Prints the largest difference of each tensor relative to its largest official value.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

Z_DIM, CH, DIS_CH, BATCH, LR = 8, 32, 4, 2, 5e-5


# ---------------------------------------------------------------- the official side
def official(inputs: Path, src: Path, out: Path) -> None:
    """Run the official updater on ``inputs`` (weights, z, reals); write ``out``."""
    import chainer
    from chainer import Variable
    sys.path[:0] = [str(src), str(src / "updaters")]
    from models.frame_seed_generator import FrameSeedGeneratorNoBetaInitDefault
    from models.video_discriminator import VideoDiscriminatorNoBetaInitDefault
    from models.video_generator import VideoGeneratorInitUniform
    from tgan_updater_wgan import TGANUpdaterWGANSVC

    class CupyLike(np.ndarray):
        """An ndarray with cupy's ``get()``, which the official SVC calls."""
        def get(self):
            return np.asarray(self)

    data = np.load(inputs)
    chainer.config.dtype = np.float64
    models = {"fsgen": FrameSeedGeneratorNoBetaInitDefault(16, Z_DIM, Z_DIM),
              "vgen": VideoGeneratorInitUniform(Z_DIM, Z_DIM, 3, 4, conv_ch=CH),
              "vdis": VideoDiscriminatorNoBetaInitDefault(3, 4, DIS_CH)}
    for key in data.files:
        if "/" not in key:  # z, real
            continue
        net, *path, name = key.split("/")
        link = models[net]
        for part in path:
            link = getattr(link, part)
        value = data[key].astype(np.float64)
        if name in ("avg_mean", "avg_var"):
            setattr(link, name, value)
        else:
            getattr(link, name).array = value
    for link in models.values():  # every parameter float64, whatever was not loaded too
        for p in link.params():
            p.array = p.array.astype(np.float64)

    zs, reals = data["z"], data["real"]

    class Fixed(TGANUpdaterWGANSVC):
        def _get_real_video(self):
            return Variable(reals[self.it])

        def _get_seeds(self, batchsize):
            z_slow = Variable(zs[self.it])
            with chainer.using_config("train", True):
                return z_slow, self.fsgen(z_slow)

    optimizers = {}
    for name, link in models.items():
        opt = chainer.optimizers.RMSprop(lr=LR)
        opt.setup(link)
        optimizers[name] = opt
    updater = Fixed(models=(models["fsgen"], models["vgen"], models["vdis"]),
                    iterator=chainer.iterators.SerialIterator([0], 1), optimizer=optimizers,
                    freq=5)
    losses = []
    for _ in range(len(zs)):
        for p in models["vdis"].params():
            p.array = p.array.view(CupyLike)
        for link in models["vdis"].links():
            if hasattr(link, "avg_var"):
                link.avg_var = link.avg_var.view(CupyLike)
        observation = {}
        reporter = chainer.Reporter()
        reporter.add_observer("vdis", models["vdis"])
        with reporter.scope(observation):
            updater.update_core()
        losses.append([float(observation["vdis/loss_gen"].array),
                       float(observation["vdis/loss_dis"].array)])
    result = {"losses": np.array(losses)}
    for net, link in models.items():
        for path, p in link.namedparams():
            result[f"{net}{path}"] = np.asarray(p.array)
        for child_path, child in link.namedlinks():
            for name in ("avg_mean", "avg_var"):
                if hasattr(child, name):
                    result[f"{net}{child_path}/{name}"] = np.asarray(getattr(child, name))
    np.savez(out, **result)


# ------------------------------------------------------------------- vidgan's side
def name_map(trainer) -> dict:
    """official name (net/link/param) -> vidgan tensor, for every weight and BN statistic."""
    G, D = trainer.G, trainer.D.net
    out = {}
    t = G.temporal
    for i, deconv in enumerate(t.deconvs):
        out[f"fsgen/dc{i}/W"], out[f"fsgen/dc{i}/b"] = deconv.weight, deconv.bias
    for i, norm in enumerate(t.norms):
        out[f"fsgen/bn{i}/gamma"] = norm.gamma
        out[f"fsgen/bn{i}/avg_mean"], out[f"fsgen/bn{i}/avg_var"] = (norm.bn.running_mean,
                                                                    norm.bn.running_var)
    im = G.image
    out["vgen/l0s/W"], out["vgen/l0f/W"] = im.slow.weight, im.fast.weight
    for tag, norm in (("bn0s", im.slow_norm), ("bn0f", im.fast_norm),
                      *((f"bn{i + 1}", n) for i, n in enumerate(im.norms))):
        out[f"vgen/{tag}/gamma"], out[f"vgen/{tag}/beta"] = norm.weight, norm.bias
        out[f"vgen/{tag}/avg_mean"], out[f"vgen/{tag}/avg_var"] = (norm.running_mean,
                                                                  norm.running_var)
    for i, deconv in enumerate(im.deconvs):
        out[f"vgen/dc{i + 1}/W"] = deconv.weight
    out["vgen/dc5/W"], out["vgen/dc5/b"] = im.to_rgb.weight, im.to_rgb.bias
    for i, conv in enumerate(D.convs):
        out[f"vdis/c{i}/W"], out[f"vdis/c{i}/b"] = conv.weight, conv.bias
    for i, norm in enumerate(D.norms):
        out[f"vdis/bn{i + 1}/gamma"] = norm.gamma
        out[f"vdis/bn{i + 1}/avg_mean"], out[f"vdis/bn{i + 1}/avg_var"] = (
            norm.bn.running_mean, norm.bn.running_var)
    out["vdis/c4/W"], out["vdis/c4/b"] = D.score.weight, D.score.bias
    return out


def run_vidgan(workdir: Path, iterations: int, seed: int, overrides=()):
    """vidgan's run in float64; returns (initial state + z + reals, final state, losses)."""
    import torch

    from vidgan.config import load_config
    from vidgan.train import Trainer
    cfg = load_config("ucf101_tgan.yaml", [
        f"model.z_dim={Z_DIM}", f"model.ch={CH}", f"model.dis_ch={DIS_CH}",
        f"train.batch_size={BATCH}", f"train.lr={LR}", "data.dataset=synthetic",
        f"data.root={workdir / 'data'}", "data.synthetic_videos_per_class=1",
        "data.synthetic_frames=16", "data.num_workers=0", "data.crop_margin=4",
        "data.index_workers=1", f"train.out_dir={workdir / 'run'}", "train.device=cpu",
        "eval.metrics=[]", "eval.sample_interval=0", f"train.seed={seed}", *overrides])
    if cfg.train.step_order != "g_first" or cfg.train.n_dis != 1:
        raise SystemExit("the official updater runs one G forward per iteration (g_first, "
                         "n_dis 1); this comparison hands it that forward's z")
    trainer = Trainer(cfg)
    for model in (trainer.G, trainer.D, trainer.G_ema):
        model.double()
    tensors = name_map(trainer)
    initial = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    zs = []
    trainer.G.register_forward_pre_hook(lambda m, args: zs.append(args[0].detach().numpy()))
    rng = np.random.default_rng(seed)
    reals = [rng.integers(0, 256, (BATCH, 3, 16, 64, 64)).astype(np.float64)
             for _ in range(iterations)]
    batches = iter([(torch.from_numpy(r), torch.zeros(BATCH, dtype=torch.long), [])
                    for r in reals])
    losses = []
    for _ in range(iterations):
        metrics = trainer.train_step(batches)
        losses.append([float(metrics["loss/G"]), float(metrics["loss/D"])])
    trainer.close()
    final = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    inputs = {**initial, "z": np.stack(zs), "real": np.stack([r / 127.5 - 1 for r in reals])}
    return inputs, final, np.array(losses)


# Biases just before a BN: the normalisation cancels them, so their gradient is rounding
# (<= 1e-13) of either sign, which RMSprop scales up to lr-sized steps. They stay within a few
# lr of 0 in both codes, have no effect on any output, and are compared in absolute terms.
BEFORE_BN = tuple(f"fsgen/dc{i}/b" for i in range(4)) + tuple(f"vdis/c{i}/b" for i in (1, 2, 3))


def compare(vidgan_final: dict, official_final: dict, initial: dict) -> list:
    """(name, difference, moved) per tensor: the largest |vidgan - official| and |official -
    initial|, each relative to the largest |official|; absolute for ``BEFORE_BN``."""
    rows = []
    for name, ours in vidgan_final.items():
        theirs = official_final[name]
        scale = 1.0 if name in BEFORE_BN else max(np.abs(theirs).max(), 1e-300)
        rows.append((name, float(np.abs(ours - theirs).max() / scale),
                     float(np.abs(theirs - initial[name]).max() / scale)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chainer", help="python of a venv with Chainer 7.8.1")
    parser.add_argument("--official-src", type=Path, required=True,
                        help="a checkout of pfnet-research/tgan (its models/ and updaters/)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--official", nargs=2, metavar=("INPUTS", "OUT"),
                        help=argparse.SUPPRESS)  # the Chainer side, run by the main side
    parser.add_argument("overrides", nargs="*",
                        help="key=value for vidgan's side, e.g. train.bn_scale_bound=paper to "
                             "measure how far an option moves it from the official code")
    args = parser.parse_args(argv)
    if args.official:
        official(Path(args.official[0]), args.official_src, Path(args.official[1]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs, final, losses = run_vidgan(work, args.iterations, args.seed, args.overrides)
        np.savez(work / "inputs.npz", **inputs)
        subprocess.run([args.chainer, __file__, "--official-src", str(args.official_src),
                        "--official", str(work / "inputs.npz"), str(work / "official.npz")],
                       check=True)
        theirs = dict(np.load(work / "official.npz"))
    rows = compare(final, theirs, inputs)
    loss_diff = np.abs(losses - theirs["losses"]).max() / np.abs(theirs["losses"]).max()
    print(f"{args.iterations} iterations, batch {BATCH}, float64; official losses (G, D) per "
          f"iteration: {json.dumps(theirs['losses'].round(6).tolist())}")
    print(f"losses: largest relative difference {loss_diff:.2e}; vidgan {json.dumps(losses.round(6).tolist())}")
    print(f"{'tensor':24s} {'|vidgan - official|':>20s} {'moved':>10s}  (relative to max |official|)")
    for name, diff, moved in rows:
        note = "  (absolute: a bias before BN)" if name in BEFORE_BN else ""
        print(f"{name:24s} {diff:20.2e} {moved:10.2e}{note}")
    worst = max((r for r in rows if r[0] not in BEFORE_BN), key=lambda r: r[1])
    print(f"largest relative difference: {worst[0]} {worst[1]:.2e}; biases before BN: "
          f"within {max(r[1] for r in rows if r[0] in BEFORE_BN):.1e} of each other, "
          f"{max(r[2] for r in rows if r[0] in BEFORE_BN):.1e} of 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
