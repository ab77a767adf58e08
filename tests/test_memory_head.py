"""The memory head's loss (memoryGAN's cross-entropy in log space, its own term beside the 3D
heads'), kappa, the G step's fake write, MCGN on every frame, and the per-head diagnostics,
against hand-computed cases."""
import math

import pytest
import torch
from torch.nn import functional as F

from tests.conftest import tiny_config
from vidgan.config import (PREVIOUS_DEFAULTS, changed_settings, config_from_dict, load_config,
                           parent_dict, to_dict)
from vidgan.models import build_discriminator, build_generator, link_memory
from vidgan.models.discriminator import mean_pairwise_cosine, memory_logit, memory_nll
from vidgan.models.memory import VMFMemory
from vidgan.models.temporal import ConvLSTMTemporalGenerator
from vidgan.train.loss import GANLoss, d_loss, r1_penalty

ALPHA, BETA = 0.5, 1e-8


def _memory(keys, values, hist, k, kappa=1.0):
    m = VMFMemory(len(values), len(keys[0]), k, kappa=kappa).double()
    m.keys.copy_(F.normalize(torch.tensor(keys, dtype=torch.float64), dim=1))
    m.values.copy_(torch.tensor(values, dtype=torch.float64))
    m.hist.copy_(torch.tensor(hist, dtype=torch.float64))
    return m


def _by_hand(q, keys, values, hist, k, kappa=1.0):
    """Eq. (3)-(4) written out: top-k of (h + beta) e^(kappa s - 1), then p = sum_S gamma v
    with gamma proportional to e^(kappa s) (alpha h + beta)."""
    qh = [x / math.sqrt(sum(y * y for y in q)) for x in q]
    kn = [[x / math.sqrt(sum(y * y for y in key)) for x in key] for key in keys]
    s = [sum(a * b for a, b in zip(qh, key)) for key in kn]
    score = [(hist[i] + BETA) * math.exp(kappa * s[i] - 1) for i in range(len(keys))]
    top = sorted(range(len(keys)), key=lambda i: -score[i])[:k]
    w = [math.exp(kappa * s[i]) * (ALPHA * hist[i] + BETA) for i in top]
    return top, sum(wi * values[i] for wi, i in zip(w, top)) / sum(w)


KEYS = [[1, 0], [0, 1], [1, 1], [-1, 0.2]]
VALUES, HIST = [1, 0, 0, 1], [2.0, 1.0, 0.3, 1.5]


def test_the_log_space_loss_is_minus_log_p_of_the_reads_posterior():
    m = _memory(KEYS, VALUES, HIST, k=3)
    q = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    _, p = _by_hand([3.0, 1.0], KEYS, VALUES, HIST, 3)
    read = m.read(q)
    assert bool(read.mixed) and 0 < p < 1
    assert float(memory_nll(read, 1, clip=False)) == pytest.approx(-math.log(p), rel=1e-12)
    assert float(memory_nll(read, 0, clip=False)) == pytest.approx(-math.log(1 - p), rel=1e-12)
    assert float(memory_logit(read, clip=False)) == pytest.approx(math.log(p / (1 - p)),
                                                                  rel=1e-12)
    assert float(m(q)) == pytest.approx(p, rel=1e-12)  # the read's p, as before
    # the official clip agrees inside [1e-3, 1 - 1e-3]
    assert float(memory_nll(read, 1, clip=True)) == pytest.approx(-math.log(p), rel=1e-12)


def test_a_nearly_saturated_mixed_read_keeps_its_gradient_where_the_clip_has_none():
    """One fake slot of tiny weight in the read set: 1 - p ~ 1e-5, so the clip pins p at
    1 - 1e-3 (zero gradient) while log space still gives -log(1 - p) and its gradient."""
    m = _memory([[1, 0], [0.9, 0.1], [0, 1]], [1, 1, 0], [2.0, 2.0, 1e-4], k=3)
    q = torch.tensor([[1.0, 0.05]], dtype=torch.float64, requires_grad=True)
    read = m.read(q)
    assert bool(read.mixed) and 1 - float(read.p.detach()) < 1e-3
    g_clip, = torch.autograd.grad(memory_nll(m.read(q), 0, clip=True).sum(), q)
    assert torch.equal(g_clip, torch.zeros_like(g_clip))
    loss = memory_nll(m.read(q), 0, clip=False)
    assert float(loss.detach()) == pytest.approx(-math.log(1 - float(read.p.detach())), rel=1e-9)
    g_log, = torch.autograd.grad(loss.sum(), q)
    assert float(g_log.abs().sum()) > 0 and torch.isfinite(g_log).all()


@pytest.mark.parametrize("only", [1, 0])
def test_a_single_label_read_contributes_exactly_zero_to_every_loss_and_gradient(only):
    m = _memory(KEYS, [only] * 4, HIST, k=2)
    q = torch.tensor([[3.0, 1.0], [-1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    read = m.read(q)
    assert not read.mixed.any() and torch.equal(read.p, torch.full((2,), float(only),
                                                                   dtype=torch.float64))
    terms = [memory_nll(read, 1, False), memory_nll(read, 0, False), memory_logit(read, False)]
    for term in terms:
        assert torch.equal(term, torch.zeros_like(term))
        grad, = torch.autograd.grad(term.sum(), q, retain_graph=True)
        assert torch.equal(grad, torch.zeros_like(grad))  # zero, not NaN
    # the official clip: a constant (6.907 or 0.001) with zero gradient
    clipped = memory_nll(read, 1 - only, True)
    assert float(clipped[0].detach()) == pytest.approx(-math.log(1e-3))


def test_kappa_scales_the_similarities_of_the_read_and_of_the_em_step():
    q = [3.0, 1.0]
    top1, _ = _by_hand(q, KEYS, VALUES, HIST, 2, kappa=1.0)
    top3, p3 = _by_hand(q, KEYS, VALUES, HIST, 2, kappa=3.0)
    assert top1 != top3  # at kappa 3 similarity outweighs the histogram: another read set
    m = _memory(KEYS, VALUES, HIST, k=2, kappa=3.0)
    assert float(m(torch.tensor([q], dtype=torch.float64))) == pytest.approx(p3, rel=1e-12)
    # EM step (label 0): top-k of (h + beta) e^(kappa (s - 2 [v != y]) - 1), gamma =
    # softmax of kappa s + log(alpha h + beta), K <- normalize(K + gamma / (alpha h + 1) (q - K))
    kappa = 3.0
    keys = [[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]]
    values, hist = [1, 0, 0, 0], [1.0, 2.0, 1.0, 0.5]
    m = _memory(keys, values, hist, k=2, kappa=kappa)
    m.ages.fill_(4)
    qv = torch.tensor([[0.9, 0.5]], dtype=torch.float64)
    qh = F.normalize(qv, dim=1)[0]
    kn = F.normalize(torch.tensor(keys, dtype=torch.float64), dim=1)
    s = (kn @ qh).tolist()
    read = [(hist[i] + BETA) * math.exp(kappa * s[i] - 1) for i in range(4)]
    assert values[max(range(4), key=lambda i: read[i])] == 0  # the read's top-1: no reset
    pen = [(hist[i] + BETA) * math.exp(kappa * (s[i] - 2 * (values[i] != 0)) - 1)
           for i in range(4)]
    S = sorted(range(4), key=lambda i: -pen[i])[:2]
    w = [math.exp(kappa * s[i]) * (ALPHA * hist[i] + BETA) for i in S]
    m.update(qv, 0)
    for wi, i in zip(w, S):
        gamma, new_h = wi / sum(w), ALPHA * hist[i] + 1
        expected = F.normalize(kn[i] + gamma / new_h * (qh - kn[i]), dim=0)
        torch.testing.assert_close(m.keys[i], expected)
        assert float(m.hist[i]) == pytest.approx(new_h)
    # at kappa 1 the responsibilities differ: kappa reached the EM step
    m1 = _memory(keys, values, hist, k=2, kappa=1.0)
    m1.update(qv, 0)
    assert not torch.allclose(m1.keys[S[0]], m.keys[S[0]])


def test_mean_pairwise_cosine_equals_the_mean_over_pairs():
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    rows = F.normalize(x[keep], dim=1)
    pairs = [float(rows[i] @ rows[j]) for i in range(5) for j in range(5) if i < j]
    assert float(mean_pairwise_cosine(x, keep)) == pytest.approx(sum(pairs) / len(pairs),
                                                                 rel=1e-5)
    same = torch.ones(4, 3)
    assert float(mean_pairwise_cosine(same)) == pytest.approx(1.0)
    # zero rows (never-written keys) count for nothing
    padded = torch.cat([x, torch.zeros(3, 5)])
    assert float(mean_pairwise_cosine(padded)) == pytest.approx(float(mean_pairwise_cosine(x)),
                                                                rel=1e-5)


# ------------------------------------------------------------------ the head in the loss
MEMORY = ["model.frame_discriminator=memory", "model.memory.slots=32", "model.memory.key_dim=8",
          "model.memory.topk=4", "model.subsample=[1,1,1]"]


def _loss(*extra):
    cfg = tiny_config(*MEMORY, *extra)
    torch.manual_seed(0)
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    link_memory(G, D)
    memory = D.frame.memory
    memory.keys.copy_(F.normalize(torch.randn(32, 8), dim=1))
    memory.hist.uniform_(0.5, 2.0)
    memory.values.copy_(torch.arange(32) % 2)  # every read set holds both labels
    return cfg, G, D, GANLoss(G, D, cfg.loss)


def _f(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _real(cfg):
    return torch.rand(4, 3, cfg.model.n_frames, 64, 64) * 2 - 1


def test_own_loss_keeps_the_memory_out_of_the_3d_heads_loss_and_r1():
    cfg, G, D, loss = _loss("loss.memory_weight=0.7")
    real = _real(cfg)
    torch.manual_seed(1)
    result = loss.discriminator(real, None)
    levels = {k: v for k, v in result.logits["real"].items() if k != "frame"}
    fakes = {k: v for k, v in result.logits["fake"].items() if k != "frame"}
    assert _f(result.terms["D_main"]) == pytest.approx(_f(d_loss(levels, fakes)), rel=1e-6)
    real_read, fake_read = result.aux["real"]["frame"]["read"], result.aux["fake"]["frame"]["read"]
    own = memory_nll(real_read, 1, False).mean() + memory_nll(fake_read, 0, False).mean()
    assert _f(result.terms["D_frame_memory"]) == pytest.approx(0.7 * _f(own), rel=1e-6)
    assert _f(result.total) == pytest.approx(sum(_f(v) for v in result.terms.values()))
    # R1 over the 3D heads only (the official memoryGAN has no penalty); memory_r1 adds it
    inputs = loss._real_inputs(real, need_grad=True)
    logits = {k: v for k, v in split(D(inputs)).items() if k != "frame"}
    r1_levels = r1_penalty({k: inputs[k] for k in logits}, logits)
    torch.manual_seed(1)
    assert _f(loss.discriminator(real, None).stats["loss/R1"]) == pytest.approx(
        _f(r1_levels), rel=1e-5)
    _, _, _, with_r1 = _loss("loss.memory_r1=true")
    torch.manual_seed(1)
    assert _f(with_r1.discriminator(real, None).stats["loss/R1"]) > _f(r1_levels) * 1.0001
    # G: the non-saturating -log p_fake of its own fakes
    g = loss.generator(4, None)
    fake_read = g.aux["fake"]["frame"]["read"]
    assert _f(g.terms["G_frame_memory"]) == pytest.approx(
        0.7 * _f(memory_nll(fake_read, 1, False).mean()), rel=1e-6)


def split(outputs):
    from vidgan.train.loss import split_outputs
    return split_outputs(outputs)[0]


def test_a_saturated_memory_adds_nothing_to_the_shared_sum():
    """loss.memory=shared, log space, every read set all real: the memory's logit is 0, so
    the summed D and G losses equal those of the 3D heads alone (the clip would add +6.9)."""
    cfg, G, D, loss = _loss("loss.memory=shared", "loss.combine=sum")
    D.frame.memory.values.fill_(1.0)
    real = _real(cfg)
    torch.manual_seed(1)
    result = loss.discriminator(real, None)
    levels = {k: v for k, v in result.logits["real"].items() if k != "frame"}
    fakes = {k: v for k, v in result.logits["fake"].items() if k != "frame"}
    assert torch.equal(result.logits["real"]["frame"], torch.zeros(4))
    assert _f(result.terms["D_main"]) == pytest.approx(
        _f(d_loss(levels, fakes, "sum")), rel=1e-6)
    assert "D_frame_memory" not in result.terms
    _, _, D_clip, loss_clip = _loss("loss.memory=shared", "loss.combine=sum",
                                    "model.memory.clip=true")
    D_clip.frame.memory.values.fill_(1.0)
    torch.manual_seed(1)
    clipped = loss_clip.discriminator(real, None)
    torch.testing.assert_close(clipped.logits["real"]["frame"],
                               torch.full((4,), math.log(0.999 / 0.001)))


def test_the_per_head_gradients_sum_to_the_g_steps_gradient():
    cfg, G, D, loss = _loss("model.memory.condition_generator=false")  # no MI term
    torch.manual_seed(2)
    result = loss.generator(4, None)
    per_head = loss.head_gradients(result)
    assert set(per_head) == {"L1", "L2", "L3", "L4", "frame"}
    full = torch.autograd.grad(result.total, list(G.parameters()), retain_graph=True,
                               allow_unused=True)
    # float32: summed in another order, equal to rounding at the scale of the largest gradient
    atol = 1e-5 * max(_f(g.abs().max()) for g in full if g is not None)
    for i, g in enumerate(full):
        parts = [grads[i] for grads in per_head.values() if grads[i] is not None]
        if g is None:
            assert not parts
            continue
        torch.testing.assert_close(sum(parts), g, rtol=1e-4, atol=atol)
    norms = loss.head_gradient_norms(result)
    assert all(_f(v) > 0 for v in norms.values())
    # a memory whose reads are all real sends G nothing
    D.frame.memory.values.fill_(1.0)
    torch.manual_seed(2)
    assert _f(loss.head_gradient_norms(loss.generator(4, None))["frame"]) == 0.0


# ------------------------------------------------------------------ MCGN on every frame
def test_the_memory_key_is_the_input_of_every_later_step():
    torch.manual_seed(0)
    every = ConvLSTMTemporalGenerator(4, 0, 6, 2, cond_dim=3, condition_every_step=True)
    first = ConvLSTMTemporalGenerator(4, 0, 6, 2, cond_dim=3)
    first.load_state_dict(every.state_dict())  # the same parameters: no new one
    z = torch.cat([torch.rand(2, 4) * 2 - 1, F.normalize(torch.randn(2, 3), dim=1)], dim=1)
    x0 = every.fc(z).view(2, 6, 2, 2)
    later = (z[:, 4:] @ every.fc.weight[:, 4:].t()).view(2, 6, 2, 2)  # W_c K_c, no bias
    state = (torch.zeros_like(x0), torch.zeros_like(x0))
    maps = []
    for t in range(5):
        state = every.cells[0](x0 if t == 0 else later, state)
        maps.append(state[0])
    torch.testing.assert_close(every(z, 5), torch.stack(maps, dim=2))
    out_first = first(z, 5)
    torch.testing.assert_close(out_first[:, :, 0], maps[0])  # t = 0 alike
    assert not torch.allclose(out_first[:, :, 1:], torch.stack(maps[1:], dim=2))


# ------------------------------------------------------------------ config and old runs
def test_an_old_memory_checkpoints_config_keeps_what_it_trained_with():
    current = load_config("modes_memory.yaml")
    stored = to_dict(current)
    for key in PREVIOUS_DEFAULTS:
        node, name = parent_dict(stored, key)
        node.pop(name)
    old = config_from_dict(stored)
    assert (old.model.memory.clip, old.model.memory.g_step_write, old.model.memory.condition,
            old.loss.memory, old.loss.memory_r1) == (True, False, "first", "shared", True)
    changed = changed_settings(old, current)
    assert "loss.memory shared -> own" in changed and "model.memory.clip True -> False" in changed
    # a run without the memory head is not told about memory settings
    plain = config_from_dict(stored, ["model.frame_discriminator=none"])
    assert not any("memory" in line for line in changed_settings(
        plain, load_config("modes_st4.yaml")))


def test_a_memory_too_small_for_three_writes_per_iteration_is_refused():
    from vidgan.config import ConfigError
    # batch 4, one frame per video: 12 queries written per iteration with the G step's write
    with pytest.raises(ConfigError, match="model.memory.slots=8: .* use at least 12 slots"):
        tiny_config(*MEMORY[:1], "model.memory.slots=8", "model.memory.topk=2")
    tiny_config(*MEMORY[:1], "model.memory.slots=8", "model.memory.topk=2",
                "model.memory.g_step_write=false")  # two writes: 4 queries <= 8 slots


# ------------------------------------------------------------------ the random-key control
def test_random_keys_are_unit_vectors_that_carry_nothing_of_the_memory():
    _, G, D, _ = _loss("model.memory.condition_keys=random")
    cond = G.temporal.cond_dim
    z = G.sample_z(64, generator=torch.Generator().manual_seed(3))
    keys = G.memory_condition(z)
    assert keys.shape == (64, cond)
    assert torch.allclose(keys.norm(dim=1), torch.ones(64), atol=1e-6)
    # the same seed gives the same latent; the memory's contents never enter it
    D.frame.memory.keys.copy_(F.normalize(torch.randn(32, 8), dim=1))
    D.frame.memory.values.zero_()  # no real slot: MCGN's p(c) would be undefined
    again = G.sample_z(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, again)
    # not slot keys: a random key is (almost surely) none of the memory's
    sims = keys @ D.frame.memory.keys.T
    assert float(sims.max()) < 0.9999
    # uniform on the sphere: the mean of many keys is near 0 (|mean| ~ 1/sqrt(n))
    many = G.memory_condition(G.sample_z(4096, generator=torch.Generator().manual_seed(4)))
    assert float(many.mean(0).norm()) < 5 / math.sqrt(4096)
    with pytest.raises(ValueError, match="condition_keys=random"):
        G.sample_z(2, slots=torch.zeros(2, dtype=torch.long))


def test_memory_keys_stay_the_default_and_come_from_the_memory():
    _, G, D, _ = _loss()
    z = G.sample_z(16, generator=torch.Generator().manual_seed(3))
    keys = G.memory_condition(z)
    # each key is one of the memory's slot keys
    sims = keys @ D.frame.memory.keys.T
    assert torch.allclose(sims.max(dim=1).values, torch.ones(16), atol=1e-6)


def test_random_keys_train_one_step():
    _, G, _, loss = _loss("model.memory.condition_keys=random")
    torch.manual_seed(1)
    g = loss.generator(4, None)
    g.total.backward()
    assert torch.isfinite(g.total)
    assert G.temporal.fc.weight.grad[:, G.temporal.noise_dim:].abs().sum() > 0
