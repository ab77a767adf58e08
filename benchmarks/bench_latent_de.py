"""Adjoint or back-propagation through the solver: seconds per forward + backward of the
temporal generator alone, for the shipped latent ODE/SDE configs at 16 frames.

    python -m benchmarks.bench_latent_de [--configs ucf101_tgan_ode,...] [--batch 32]
        [--rounds 3] [--device cpu] [--gradients]

The adjoint keeps no activations, back-propagation through the solver keeps every step's.
Prints a Markdown table: median seconds of ``--rounds`` each way, and their ratio (measured
in the same process, alternating). ``--gradients`` instead compares the two ways' parameter
gradients, in float64, for the same weights, latent and Brownian increments: for an ODE they
agree up to the solver's error (the adjoint re-solves the ODE backwards); for the SDE under
Euler-Maruyama they need not, and this measures by how much.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidgan.config import load_config
from vidgan.models import Generator, build_generator

CONFIGS = "ucf101_tgan_ode,ucf101_tgan_sde,ucf101_mocogan_ode,ucf101_mocogan_sde,ucf101_st4_ode"


def temporal_step(G, batch: int, n_frames: int, device) -> float:
    """Seconds of one forward + backward of G's temporal generator on a fresh latent."""
    z = G.sample_z(batch, torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if isinstance(G, Generator):  # TGANv2's pipeline: (z, n_frames, label)
        out = G.temporal(z, n_frames, None)
    else:  # TGAN: G_0 (z, n_frames)
        out = G.temporal(z, n_frames)
    out.square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(name: str, batch: int, rounds: int, device) -> dict:
    cfg = load_config(name)
    times: dict = {}
    models = {}
    for adjoint in (False, True):
        torch.manual_seed(0)
        c = load_config(name, [f"model.de.adjoint={str(adjoint).lower()}"])
        models[adjoint] = build_generator(c).to(device)
    for adjoint in (False, True):  # one warm-up each
        temporal_step(models[adjoint], batch, cfg.model.n_frames, device)
    for _ in range(rounds):  # alternating, so drifting load hits both alike
        for adjoint in (False, True):
            times.setdefault(adjoint, []).append(
                temporal_step(models[adjoint], batch, cfg.model.n_frames, device))
    direct, adjoint = statistics.median(times[False]), statistics.median(times[True])
    return {"config": name, "direct": direct, "adjoint": adjoint, "ratio": adjoint / direct}


def gradient_gap(name: str, batch: int, device) -> dict:
    """Relative difference and cosine between the temporal generator's parameter gradients
    by back-propagation through the solver and by the adjoint, in float64, same weights,
    latent and Brownian increments; and the forwards' largest difference."""
    models, grads, outs = {}, {}, {}
    for adjoint in (False, True):
        torch.manual_seed(0)
        c = load_config(name, [f"model.de.adjoint={str(adjoint).lower()}"])
        models[adjoint] = build_generator(c).to(device).double()
    models[True].load_state_dict(models[False].state_dict())  # adjoint: no parameter
    n_frames = load_config(name).model.n_frames
    for adjoint, G in models.items():
        z = G.sample_z(batch, torch.Generator().manual_seed(0)).to(device).double()
        out = G.temporal(z, n_frames, None) if isinstance(G, Generator) else G.temporal(
            z, n_frames)
        out.square().mean().backward()
        outs[adjoint] = out.detach()
        grads[adjoint] = torch.cat([p.grad.flatten() for p in G.temporal.parameters()
                                    if p.grad is not None])
    a, b = grads[True], grads[False]
    return {"relative": float((a - b).norm() / b.norm()),
            "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
            "forward": float((outs[True] - outs[False]).abs().max())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=CONFIGS)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gradients", action="store_true",
                        help="compare the two ways' gradients instead of timing them")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.gradients:
        print("| config | batch | forward, largest difference | gradient, relative "
              "difference | cosine |")
        print("|---|---|---|---|---|")
        for name in args.configs.split(","):
            r = gradient_gap(name, args.batch, device)
            print(f"| {name} | {args.batch} | {r['forward']:.1e} | {r['relative']:.2e} | "
                  f"{r['cosine']:.4f} |", flush=True)
        return
    print(f"| config | batch | back-propagation through the solver (s) | adjoint (s) | "
          f"adjoint / direct |")
    print("|---|---|---|---|---|")
    for name in args.configs.split(","):
        r = measure(name, args.batch, args.rounds, device)
        print(f"| {name} | {args.batch} | {r['direct']:.3f} | {r['adjoint']:.3f} | "
              f"{r['ratio']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
