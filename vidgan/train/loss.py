"""GAN objectives (tgan2 Eq. 1, 4, 7, 10) and the named loss phases of one iteration.

Phases, in the manner of stylegan2-ada-pytorch's ``training/loss.py``:

- ``D_main``: non-saturating logistic loss over every discriminator head (``loss.combine``),
- ``D_r1``: lambda * R1 (Eq. 10) over every head's real inputs (or, lazy, its own phase
  every ``loss.r1_interval`` D steps: ``discriminator_r1``),
- ``G_main``: the non-saturating generator loss over every head,

plus any named term a head contributes. Heads are the entries of the discriminator's output
dict (``L1``..``L4``, ``frame``; ``video`` for a whole-clip D); nothing here counts or names
them. The discriminator says what its heads judge of a real clip (``D.real_targets``, e.g.
the clip reduced like each generated level). A head's forward returns
logits (B,), or ``(logits, aux)`` when it has more to say about the call (e.g. the memory
head's queries). A head may also define

- ``extra_terms(phase, real_aux, fake_aux, condition) -> {name: loss}``, added to phase "D"
  or "G" (``real_aux`` is None in "G") as term ``<phase>_<head>_<name>`` (e.g. ``D_frame_mi``),
  times ``loss.<name>_weight`` where the config has one (``mi`` -> ``loss.mi_weight``);
  ``condition`` is the generator's memory keys K_c of the fakes (MCGN) or None,
- ``after_step(real_aux, fake_aux, condition) -> {name: stat}``, called once after each
  successful D optimizer step with that step's aux: where a stateful head updates its state;
  the stats it returns are logged as ``<head>/<name>``,
- ``after_generator_step(fake_aux) -> {name: stat}``, the same after each successful G step,
- ``configure_loss(loss_config)``, called once by ``GANLoss``, which then reads two flags of
  the head: ``shared_loss`` (default True: its logits join ``loss.combine``'s loss; False: it
  brings its whole loss through ``extra_terms``) and ``r1`` (default True: R1 covers it).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from vidgan import distributed
from vidgan.config import CHOICES, LossConfig
from vidgan.models.normalization import frozen_running_statistics

Logits = Union[Sequence[torch.Tensor], Dict[str, torch.Tensor]]


def _check_combine(combine: str) -> None:
    if combine not in CHOICES["loss.combine"]:
        raise ValueError(f"loss.combine='{combine}': allowed values are "
                         f"{', '.join(CHOICES['loss.combine'])}")


def _values(logits: Logits) -> List[torch.Tensor]:
    return list(logits.values()) if isinstance(logits, dict) else list(logits)


def d_loss(real_logits: Logits, fake_logits: Logits, combine: str = "mean") -> torch.Tensor:
    """Non-saturating logistic D loss: E softplus(-D(real)) + E softplus(D(fake)).

    "mean": the official code: every head's logits concatenated (levels x batch) and the loss
    averaged over all of them, i.e. over heads when every head judges the whole batch.
    "sum": Eq. (7), D' = sigmoid(sum_heads D'_h(x_h)), one loss on the summed logits (the
    paper's text).
    """
    _check_combine(combine)
    real, fake = _values(real_logits), _values(fake_logits)
    if combine == "sum":
        return F.softplus(-sum(real)).mean() + F.softplus(sum(fake)).mean()
    return F.softplus(-torch.cat(real)).mean() + F.softplus(torch.cat(fake)).mean()


def g_loss(fake_logits: Logits, combine: str = "mean") -> torch.Tensor:
    """Non-saturating G loss: E softplus(-D(G(z))), over the heads as ``d_loss`` combines."""
    _check_combine(combine)
    fake = _values(fake_logits)
    if combine == "sum":
        return F.softplus(-sum(fake)).mean()
    return F.softplus(-torch.cat(fake)).mean()


def wgan_d_loss(real_logits: Logits, fake_logits: Logits, combine: str = "mean"
                ) -> torch.Tensor:
    """The WGAN critic's loss, E D(fake) - E D(real) (TGAN Eq. 2, negated to be minimised),
    over the heads as ``d_loss`` combines them."""
    _check_combine(combine)
    real, fake = _values(real_logits), _values(fake_logits)
    if combine == "sum":
        return sum(fake).mean() - sum(real).mean()
    return torch.cat(fake).mean() - torch.cat(real).mean()


def wgan_g_loss(fake_logits: Logits, combine: str = "mean") -> torch.Tensor:
    """The WGAN generator's loss, -E D(G(z)) (TGAN Eq. 2)."""
    _check_combine(combine)
    fake = _values(fake_logits)
    return -(sum(fake).mean() if combine == "sum" else torch.cat(fake).mean())


# loss.type -> (D loss, G loss)
LOSSES = {"logistic": (d_loss, g_loss), "wgan": (wgan_d_loss, wgan_g_loss)}


def mask_sparsity(mask: torch.Tensor, norm: str = "mean") -> torch.Tensor:
    """VGAN's sparsity prior ||m(z)||_1 (§2.2) of masks (B, 1, T, H, W). "mean" (the official
    code): the mean of |m| over every element of the batch (Torch's L1Penalty with
    sizeAverage), so the prior's weight does not grow with the clip's size. "sum" (the paper's
    norm as written): each clip's sum of |m|, averaged over the batch. Averaged over processes
    with the gradients, either is the global batch's."""
    if norm == "mean":
        return mask.abs().mean()
    if norm != "sum":
        raise ValueError(f"loss.mask_norm='{norm}': expected mean or sum")
    return mask.abs().flatten(1).sum(1).mean()


def global_r1(real_inputs: Logits, real_logits: Logits) -> torch.Tensor:
    """``r1_penalty`` of this process's share of the batch times the number of processes:
    averaged over processes (as the gradients are), it is the sum over the global batch that
    Eq. (10) asks for. One process: ``r1_penalty``."""
    r1 = r1_penalty(real_inputs, real_logits)
    n = distributed.world_size()
    return r1 if n == 1 else r1 * n


def r1_penalty(real_inputs: Logits, real_logits: Logits) -> torch.Tensor:
    """sum_heads sum_i ||grad_x D'_h(x_i)||^2 over every head's real inputs (Eq. 10).

    Summed over the batch, not averaged, as Eq. (10) writes it; multiply by lambda outside.
    Every head must have its own input leaf (``GANLoss`` gives each one): a head only sees its
    own input, so one backward through the sum of all logits gives every head's gradient.
    """
    grads = torch.autograd.grad(sum(l.sum() for l in _values(real_logits)),
                                _values(real_inputs), create_graph=True)
    return sum(g.float().pow(2).sum() for g in grads)


def split_outputs(outputs: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """{head: logits | (logits, aux)} -> ({head: logits}, {head: aux or None})."""
    logits, aux = {}, {}
    for name, out in outputs.items():
        logits[name], aux[name] = out if isinstance(out, tuple) else (out, None)
    return logits, aux


class Fakes(NamedTuple):
    """One G forward: the latents ``z`` (memory keys included) and the level videos it
    rendered, detached (a D step may judge them after the G step)."""
    z: torch.Tensor
    videos: List[torch.Tensor]


class PhaseResult(NamedTuple):
    """One optimizer step's loss: ``total`` (the sum of the named ``terms``) to backward,
    ``stats`` to log beside them (by their TensorBoard tag), the heads' logits and aux per
    side ("real", "fake"), and the G phase's ``fakes``."""
    total: torch.Tensor
    terms: Dict[str, torch.Tensor]
    stats: Dict[str, torch.Tensor]
    logits: Dict[str, Dict[str, torch.Tensor]]
    aux: Dict[str, Dict[str, Any]]
    fakes: Optional[Fakes] = None
    condition: Optional[torch.Tensor] = None  # the fakes' memory keys K_c (MCGN)
    inputs: Optional[Dict[str, torch.Tensor]] = None  # G phase: each head's fake input


class GANLoss:
    """The phases of one iteration for generator ``G`` and discriminator heads ``D``."""

    def __init__(self, G: nn.Module, D: nn.Module, loss: LossConfig):
        _check_combine(loss.combine)
        self.G, self.D, self.cfg = G, D, loss
        if loss.type not in LOSSES:
            raise ValueError(f"loss.type='{loss.type}': allowed values are {', '.join(LOSSES)}")
        self.d_loss, self.g_loss = LOSSES[loss.type]
        for _, configure in self._heads_with("configure_loss"):
            configure(loss)

    def _flagged(self, logits: Dict[str, torch.Tensor], flag: str) -> Dict[str, torch.Tensor]:
        """The entries of heads whose ``flag`` attribute is true (default true)."""
        return {name: v for name, v in logits.items()
                if getattr(self.D.head(name), flag, True)}

    def sample_z(self, batch_size: int) -> torch.Tensor:
        """Latents for this process's ``batch_size`` videos: drawn for the global batch and
        sliced, so N processes see the z one process would (vidgan.distributed)."""
        return distributed.shard(self.G.sample_z(batch_size * distributed.world_size()))

    def _heads_with(self, hook: str):
        for name in self.D.head_levels:
            head = self.D.head(name)
            if hasattr(head, hook):
                yield name, getattr(head, hook)

    def _extra_terms(self, phase: str, real_aux: Optional[Dict], fake_aux: Dict,
                     condition: Optional[torch.Tensor]) -> Dict:
        terms = {}
        for name, hook in self._heads_with("extra_terms"):
            for key, value in hook(phase, None if real_aux is None else real_aux[name],
                                   fake_aux[name], condition).items():
                weight = getattr(self.cfg, f"{key}_weight", 1.0)
                terms[f"{phase}_{name}_{key}"] = weight * value  # e.g. D_frame_mi
        return terms

    def _real_inputs(self, real: torch.Tensor, need_grad: bool) -> Dict[str, torch.Tensor]:
        """Every head's real input: targets S^D reduced like G's levels. With ``need_grad``, one
        leaf per head, so R1 (Eq. 10) is each head's own gradient norm even when two heads
        judge the same level."""
        inputs = self.D.head_inputs(self.D.real_targets(real))
        return {name: x.detach().requires_grad_(True) for name, x in inputs.items()} \
            if need_grad else inputs

    def discriminator(self, real: torch.Tensor, y: Optional[torch.Tensor],
                      r1: bool = True, fakes: Optional[Fakes] = None) -> PhaseResult:
        """D main + D R1 (+ heads' terms) on a real batch (B, 3, T, H, W) in [-1, 1]; without
        ``r1`` (lazy R1, ``loss.r1_interval`` > 1), D main and the heads' terms only.

        The fakes are ``fakes`` (train.step_order=g_first: the G phase's output of this
        iteration, as the official code reuses it), else a new draw from G without gradient;
        conditional fakes take the real batch's labels (labels drawn from the class prior).
        """
        if fakes is None:
            z = self.sample_z(real.shape[0])
            with torch.no_grad():
                fakes = Fakes(z, self.G(z, y))
            reused = contextlib.nullcontext()
        else:
            # The G phase judged these very fakes with this D already and moved its BN
            # running statistics; the official updaters reuse that forward's outputs, so the
            # statistics move once per fake batch: here too (no-op for a D without BN).
            reused = frozen_running_statistics(self.D)
        z = fakes.z
        inputs = self._real_inputs(real, need_grad=r1)
        real_logits, real_aux = split_outputs(self.D(inputs, y))
        with reused:
            fake_logits, fake_aux = split_outputs(self.D(fakes.videos, y))
        terms = {"D_main": self.d_loss(self._flagged(real_logits, "shared_loss"),
                                       self._flagged(fake_logits, "shared_loss"),
                                       self.cfg.combine)}
        stats = {}
        if r1:
            stats["loss/R1"] = self._r1(inputs, real_logits)
            terms["D_r1"] = self.cfg.r1_weight * stats["loss/R1"]  # Eq. (10) added to the D loss
        condition = self.G.memory_condition(z)
        terms.update(self._extra_terms("D", real_aux, fake_aux, condition))
        return PhaseResult(sum(terms.values()), terms, stats,
                           {"real": real_logits, "fake": fake_logits},
                           {"real": real_aux, "fake": fake_aux},
                           condition=None if condition is None else condition.detach())

    def _r1(self, inputs: Dict[str, torch.Tensor], real_logits: Dict[str, torch.Tensor]):
        """Eq. (10) over the heads R1 covers (flag ``r1``)."""
        covered = self._flagged(real_logits, "r1")
        return global_r1({name: inputs[name] for name in covered}, covered)

    def discriminator_r1(self, real: torch.Tensor, y: Optional[torch.Tensor],
                         weight: float) -> PhaseResult:
        """Lazy R1 (StyleGAN2's "Dreg" phase): ``weight`` * Eq. (10) on a real batch alone,
        its own D step every ``loss.r1_interval`` D steps (weight = interval * lambda)."""
        inputs = self._real_inputs(real, need_grad=True)
        real_logits, real_aux = split_outputs(self.D(inputs, y))
        r1 = self._r1(inputs, real_logits)
        return PhaseResult(weight * r1, {"D_r1": weight * r1}, {"loss/R1": r1},
                           {"real": real_logits}, {"real": real_aux})

    def generator(self, batch_size: int, y: Optional[torch.Tensor]) -> PhaseResult:
        """G main (+ heads' terms) on a new z; the result's ``fakes`` are this G forward's
        videos, detached, for a D step that follows (train.step_order=g_first). D's weights get
        no gradient here: autograd records requires_grad when the graph is built, so the
        backward that follows skips them."""
        self.D.requires_grad_(False)
        try:
            z = self.sample_z(batch_size)
            videos = self.G(z, y)
            # one graph node per head (a view), so head_gradients can tell the heads apart
            inputs = {name: x.view_as(x) for name, x in self.D.head_inputs(videos).items()}
            fake_logits, fake_aux = split_outputs(self.D(inputs, y))
            terms = {"G_main": self.g_loss(self._flagged(fake_logits, "shared_loss"),
                                           self.cfg.combine),
                     **self._extra_terms("G", None, fake_aux, self.G.memory_condition(z))}
            mask = getattr(videos, "mask", None)  # a generator that composes through a mask
            if mask is not None and self.cfg.mask_weight > 0:
                terms["G_mask"] = self.cfg.mask_weight * mask_sparsity(mask,
                                                                       self.cfg.mask_norm)
        finally:
            self.D.requires_grad_(True)
        return PhaseResult(sum(terms.values()), terms, {}, {"fake": fake_logits},
                           {"fake": fake_aux}, Fakes(z, [v.detach() for v in videos]),
                           inputs=inputs)

    def head_gradients(self, result: PhaseResult) -> Dict[str, List[Optional[torch.Tensor]]]:
        """The gradient of the G phase's loss ``result.total`` that reaches G's parameters
        through each head (its loss terms included), {head: one tensor (or None) per
        parameter of ``G.parameters()``}; summed over heads, the step's gradient. One backward
        through G per head, the graph kept for the step's own backward."""
        params = list(self.G.parameters())
        names = list(result.inputs)
        per_input = torch.autograd.grad(result.total, [result.inputs[n] for n in names],
                                        retain_graph=True, allow_unused=True)
        grads = {}
        for name, grad in zip(names, per_input):
            grads[name] = [None] * len(params) if grad is None else list(torch.autograd.grad(
                result.inputs[name], params, grad_outputs=grad, retain_graph=True,
                allow_unused=True))
        return grads

    def head_gradient_norms(self, result: PhaseResult) -> Dict[str, torch.Tensor]:
        """{head: norm of ``head_gradients``}: what showed a head that sends G nothing (a
        saturated memory) or everything."""
        zero = torch.zeros((), device=result.total.device)
        return {name: torch.sqrt(sum((g.float().pow(2).sum() for g in grads if g is not None),
                                     zero))
                for name, grads in self.head_gradients(result).items()}

    @torch.no_grad()
    def after_discriminator_step(self, result: PhaseResult) -> None:
        """Stateful heads update from the D step that was just applied; their stats join
        ``result.stats``."""
        for name, hook in self._heads_with("after_step"):
            stats = hook(result.aux["real"][name], result.aux["fake"][name],
                         result.condition) or {}
            result.stats.update({f"{name}/{k}": v for k, v in stats.items()})

    @torch.no_grad()
    def after_generator_step(self, result: PhaseResult) -> Dict[str, torch.Tensor]:
        """Stateful heads update from the G step that was applied; their stats, by tag."""
        stats = {}
        for name, hook in self._heads_with("after_generator_step"):
            stats.update({f"{name}/{k}": v for k, v in (hook(result.aux["fake"][name])
                                                        or {}).items()})
        return stats
