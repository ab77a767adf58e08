"""Per-level cost of one training step at batch 1: our version of tgan2 Table 1 / Fig. 5.

The discriminator's rows are its heads: L1..L4 and, with model.frame_discriminator, the
2D frame head ("frame").

    python -m vidgan.profile --config ucf101_st4.yaml [key=value ...]

Models are built on the meta device, so nothing is computed or allocated: multiply-accumulates
are counted from the shapes of every convolution and matrix product (the paper's "GFlops" are
MACs of conv and linear layers), and activation memory is the float32 size of every tensor the
forward pass creates (views excluded). The configuration is compared with the same model with
every subsampling factor set to 1 ("naive").
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from collections import defaultdict
from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vidgan.config import Config, load_config
from vidgan.models import build_discriminator, build_generator

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}


def _macs(func, args, out) -> int:
    if func is _aten.convolution.default:
        weight = args[1]  # (C_out, C_in / groups, k...)
        return out.numel() * math.prod(weight.shape[1:])
    if func in _MATMULS:
        a = args[1] if func in (_aten.addmm.default, _aten.baddbmm.default) else args[0]
        return out.numel() * a.shape[-1]
    return 0


class CostCounter(TorchDispatchMode):
    """Counts MACs and created-tensor bytes per label; ``label`` is set by module hooks."""

    def __init__(self):
        super().__init__()
        self.label = "other"
        self.macs: Dict[str, int] = defaultdict(int)
        self.bytes: Dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.macs[self.label] += _macs(func, args, out)
        aliasing = any(r.alias_info is not None for r in func._schema.returns)
        if not aliasing:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            self.bytes[self.label] += sum(4 * o.numel() for o in outs
                                          if isinstance(o, torch.Tensor) and o.is_floating_point())
        return out


def _label_modules(counter: CostCounter, modules: Dict[str, torch.nn.Module]):
    handles = []
    for label, module in modules.items():
        def pre(_m, _a, label=label):
            counter.label = label

        def post(_m, _a, _o):
            counter.label = "other"
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def profile_step(cfg: Config) -> dict:
    """MACs and activation bytes per level for G(z) and D(G(z)) at batch 1, training mode.

    On the meta device (shapes only), except with a latent ODE/SDE: its solvers read time
    values (``.item()``), so those configs run on the CPU, with real numbers."""
    device = "meta" if cfg.model.latent_de == "none" else "cpu"
    with torch.device(device):
        G = build_generator(cfg).train()
        D = build_discriminator(cfg).train()
    if cfg.model.family == "tganv2":
        # Level l of G = its Up blocks + its renderer; level 1 also holds the temporal
        # generator.
        g_modules = {"L1": G.temporal}
        for i, blocks in enumerate(G.levels):
            for j, block in enumerate(blocks):
                g_modules[f"L{i + 1}/block{j}"] = block
        for level, renderer in G.renderers.items():
            g_modules[f"L{level}/render"] = renderer
    else:  # TGAN, VGAN: one video at one size, the whole generator is its level
        g_modules = {"L1": G}
    d_modules = {name: D.head(name) for name in D.head_levels}  # L1..L4 (+ frame)

    def level_of(label: str) -> str:
        return label.split("/")[0]

    # TGAN's temporal generator normalises a batch of one time step: BN needs 2 clips, and
    # the counts (linear in the batch) are halved back to one clip
    batch = 1 if cfg.model.family == "tganv2" else 2
    y = torch.zeros(1, dtype=torch.long, device=device) if cfg.model.n_classes else None
    counters = {"G": CostCounter(), "D": CostCounter()}
    handles = (_label_modules(counters["G"], g_modules) +
               _label_modules(counters["D"], d_modules))
    z = torch.zeros(batch, G.z_dim, device=device)  # any latent: MACs depend on shapes only
    with torch.no_grad():
        with counters["G"]:
            videos = G(z, y)
        with counters["D"]:
            D(videos, y)
    for h in handles:
        h.remove()
    result = {}
    for name, counter in counters.items():
        macs, mem = defaultdict(int), defaultdict(int)
        for label, v in counter.macs.items():
            macs[level_of(label)] += v // batch
        for label, v in counter.bytes.items():
            mem[level_of(label)] += v // batch
        result[name] = {"macs": dict(macs), "bytes": dict(mem),
                        "frames": [v.shape[2] for v in videos]}
    result["params"] = {"G": sum(p.numel() for p in G.parameters()),
                        "D": sum(p.numel() for p in D.parameters())}
    return result


def naive_of(cfg: Config) -> Config:
    """The same configuration with every subsampling factor 1 (tgan2 Table 1 "naive impl.")."""
    model = dataclasses.replace(cfg.model, subsample=[1] * len(cfg.model.subsample))
    return dataclasses.replace(cfg, model=model)


def format_table(cfg: Config, ours: dict, naive: dict) -> str:
    levels = (f"subsample={list(cfg.model.subsample)}" if cfg.model.family == "tganv2"
              else f"model.family={cfg.model.family} (one level: naive = itself)")
    lines = [f"resolution {cfg.model.resolution}, T={cfg.model.n_frames}, {levels}, batch 1, "
             f"training step (forward)",
             f"parameters: G {ours['params']['G'] / 1e6:.2f} M, D {ours['params']['D'] / 1e6:.2f} M,"
             f" total {(ours['params']['G'] + ours['params']['D']) / 1e8:.3f}e8",
             f"frames per level: G {ours['G']['frames']} (naive {naive['G']['frames']})", "",
             f"{'net':<4}{'level':<7}{'GMAC':>10}{'naive':>10}{'ratio':>8}"
             f"{'act MB':>10}{'naive':>10}{'ratio':>8}"]
    for net in ("G", "D"):
        used = {k for k in list(naive[net]["macs"]) + list(naive[net]["bytes"])
                if naive[net]["macs"].get(k) or naive[net]["bytes"].get(k)}
        rows = sorted(used - {"other"}) + (["other"] if "other" in used else []) + ["total"]
        for level in rows:
            def get(res, key):
                d = res[net][key]
                return sum(d.values()) if level == "total" else d.get(level, 0)
            m, mn = get(ours, "macs") / 1e9, get(naive, "macs") / 1e9
            b, bn = get(ours, "bytes") / 2 ** 20, get(naive, "bytes") / 2 ** 20
            lines.append(f"{net:<4}{level:<7}{m:>10.2f}{mn:>10.2f}{(mn / m if m else 0):>7.2f}x"
                         f"{b:>10.1f}{bn:>10.1f}{(bn / b if b else 0):>7.2f}x")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="ucf101_st4.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    print(format_table(cfg, profile_step(cfg), profile_step(naive_of(cfg))))


if __name__ == "__main__":
    main()
