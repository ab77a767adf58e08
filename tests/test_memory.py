"""VMFMemory (models/memory.py) against hand-computed cases of every rule of docs/FIDELITY.md
(memoryGAN §3.1, as the official code runs it)."""
import math

import pytest
import torch
from torch.nn import functional as F

from vidgan.models.memory import VMFMemory

ALPHA, BETA = 0.5, 1e-8


def _memory(keys, values, hist, ages=None, k=2, **kw):
    m = VMFMemory(len(values), len(keys[0]), k, **kw)
    m.keys.copy_(F.normalize(torch.tensor(keys, dtype=torch.float32), dim=1))
    m.values.copy_(torch.tensor(values, dtype=torch.float32))
    m.hist.copy_(torch.tensor(hist, dtype=torch.float32))
    if ages is not None:
        m.ages.copy_(torch.tensor(ages, dtype=torch.float32))
    return m


def test_initial_state_and_buffers():
    m = VMFMemory(6, 3, 2)
    assert [n for n, _ in m.named_buffers()] == ["keys", "values", "ages", "hist"]
    assert not list(m.parameters()) and all(b.dtype == torch.float32 for b in m.buffers())
    assert m.values.tolist() == [1, 1, 1, 0, 0, 0] and torch.equal(m.keys, torch.zeros(6, 3))
    assert torch.equal(m.ages, torch.zeros(6)) and torch.allclose(m.hist, torch.full((6,), 1e-5))
    assert set(m.state_dict()) == {"keys", "values", "ages", "hist"}


def test_read_is_eq4_over_the_topk_of_eq3():
    """Slots ranked by (h + beta) e^(s - 1) over all labels; p = sum_S gamma v with gamma
    proportional to e^(s - 1) (alpha h + beta)."""
    keys = [[1, 0], [0, 1], [1, 1], [-1, 0]]
    m = _memory(keys, [1, 0, 0, 1], [2.0, 1.0, 0.1, 1.5], k=2)
    q = torch.tensor([[3.0, 1.0]])
    qh = [3 / math.sqrt(10), 1 / math.sqrt(10)]
    kn = [[1, 0], [0, 1], [1 / math.sqrt(2), 1 / math.sqrt(2)], [-1, 0]]
    s = [qh[0] * a + qh[1] * b for a, b in kn]
    h, v = [2.0, 1.0, 0.1, 1.5], [1, 0, 0, 1]
    score = [(h[i] + BETA) * math.exp(s[i] - 1) for i in range(4)]
    top = sorted(range(4), key=lambda i: -score[i])[:2]
    assert top == [0, 1]  # slot 3 loses on similarity, slot 2 on h
    w = [math.exp(s[i] - 1) * (ALPHA * h[i] + BETA) for i in top]
    expected = sum(wi * v[i] for wi, i in zip(w, top)) / sum(w)
    assert float(m(q)) == pytest.approx(expected, rel=1e-6)
    assert float(m(10 * q)) == pytest.approx(expected, rel=1e-6)  # queries are normalised


def test_ties_go_to_the_lower_index():
    m = VMFMemory(6, 2, 3)  # all keys 0, all h equal: every slot ties
    m.values.copy_(torch.tensor([0, 1, 1, 1, 0, 0.]))
    # read set = slots 0, 1, 2 (values 0, 1, 1): p = 2/3 with equal weights
    assert float(m(torch.tensor([[1.0, 0.0]]))) == pytest.approx(2 / 3, rel=1e-6)


def test_gradient_reaches_the_query_only_through_the_similarities():
    m = _memory([[1, 0], [0, 1], [1, 1]], [1, 0, 1], [1.0, 1.0, 1.0], k=3)
    q = torch.tensor([[0.3, 0.8]], requires_grad=True)
    m(q).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert all(not b.requires_grad and b.grad is None for b in m.buffers())
    # d p / d q matches a finite difference of the same read
    eps = 1e-3
    for j in range(2):
        dq = torch.zeros(1, 2)
        dq[0, j] = eps
        with torch.no_grad():
            fd = (m(q + dq) - m(q - dq)) / (2 * eps)
        assert float(q.grad[0, j]) == pytest.approx(float(fd), rel=1e-2, abs=1e-5)


def test_em_step_on_the_label_penalised_topk():
    """Label 0 (fake): S^y = top-k of (h + beta) e^(s - 2 [v != y] - 1); gamma = softmax of
    s - 1 + log(alpha h + beta) over S^y; h <- alpha h + 1; K <- normalize(K + gamma /
    (alpha h + 1) (q_hat - K)); values unchanged; ages +1, written slots 0."""
    keys = [[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]]
    values, hist = [1, 0, 0, 1], [1.0, 2.0, 1.0, 1.0]
    m = _memory(keys, values, hist, ages=[4, 4, 4, 4], k=2)
    q = torch.tensor([[0.9, 0.1]])
    # read top-1: slot 1 (s=.79, h=2) beats slot 0 (s=.99, h=1) -> value 0 == label: no reset
    qh = F.normalize(q, dim=1)[0].tolist()
    kn = F.normalize(torch.tensor(keys), dim=1).tolist()
    s = [qh[0] * a + qh[1] * b for a, b in kn]
    pen = [(hist[i] + BETA) * math.exp(s[i] - 2 * (values[i] != 0) - 1) for i in range(4)]
    S = sorted(range(4), key=lambda i: -pen[i])[:2]
    assert S == [1, 2]  # the real slot 0 is nearer but penalised
    w = [math.exp(s[i] - 1) * (ALPHA * hist[i] + BETA) for i in S]
    gamma = [x / sum(w) for x in w]
    out = m.update(q, 0)
    assert int(out["resets"]) == 0
    for g, i in zip(gamma, S):
        new_h = ALPHA * hist[i] + 1
        key = torch.tensor(kn[i]) + g / new_h * (torch.tensor(qh) - torch.tensor(kn[i]))
        torch.testing.assert_close(m.keys[i], F.normalize(key, dim=0))
        assert float(m.hist[i]) == pytest.approx(new_h)
    assert m.values.tolist() == values and m.ages.tolist() == [5, 0, 0, 5]
    torch.testing.assert_close(m.keys[[0, 3]], torch.tensor(kn)[[0, 3]])


def test_resets_take_the_oldest_slots_in_batch_order():
    """A sample whose read top-1 holds the other label resets: (q_hat, label, mean h) into an
    old slot; the i-th resetting sample takes the i-th oldest (ties to the lower index)."""
    keys = [[1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [1, -1]]
    values = [1, 1, 0, 0, 0, 0]
    hist = [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    m = _memory(keys, values, hist, ages=[3, 5, 1, 5, 0, 7], k=2)
    mean_h = sum(hist) / 6
    # samples 0 and 2 sit on real slots 0/1 (reset for label 0); sample 1 on fake slot 2
    q = torch.tensor([[1.0, 0.05], [-1.0, -0.05], [0.05, 1.0]])
    out = m.update(q, 0)
    assert int(out["resets"]) == 2
    # oldest: slot 5 (age 7), then slots 1 and 3 (age 5, lower index first)
    torch.testing.assert_close(m.keys[5], F.normalize(q[0], dim=0))
    torch.testing.assert_close(m.keys[1], F.normalize(q[2], dim=0))
    assert m.values[5] == 0 and m.values[1] == 0 and m.values[0] == 1
    assert float(m.hist[5]) == pytest.approx(mean_h) and float(m.hist[1]) == pytest.approx(mean_h)
    # sample 1 (no reset) took an EM step on its fake slots 2 and 3
    assert m.hist[[2, 3]].tolist() == [ALPHA * 1.0 + 1] * 2
    assert m.ages.tolist() == [4, 0, 0, 0, 1, 0]  # +1 for all, 0 for written slots


def test_the_last_writer_of_a_slot_wins():
    """Two samples EM-update the same two slots: the slots keep the later sample's rows,
    computed from the state before the call (not chained)."""
    m = _memory([[1, 0], [0, 1], [-1, 0], [0, -1]], [1, 1, 0, 0], [1.0, 1.0, 1.0, 1.0], k=2)
    qa, qb = torch.tensor([[1.0, 0.2]]), torch.tensor([[1.0, 0.4]])
    alone = _memory([[1, 0], [0, 1], [-1, 0], [0, -1]], [1, 1, 0, 0], [1.0] * 4, k=2)
    alone.update(qb, 1)
    m.update(torch.cat([qa, qb]), 1)
    assert torch.equal(m.keys, alone.keys) and torch.equal(m.hist, alone.hist)


def test_updates_are_deterministic():
    torch.manual_seed(0)
    a, b = VMFMemory(64, 8, 4), VMFMemory(64, 8, 4)
    for step in range(6):
        q = torch.randn(10, 8)
        a.update(q, step % 2)
        b.update(q.clone(), step % 2)
    for name, buf in a.state_dict().items():
        assert torch.equal(buf, b.state_dict()[name]), name


def test_kaiser_rule_moves_only_the_nearest_same_label_slot():
    keys = [[1, 0], [0.8, 0.6], [0, 1], [-1, 0]]
    m = _memory(keys, [1, 1, 0, 0], [1.0, 1.0, 1.0, 1.0], k=2, update_rule="kaiser")
    q = torch.tensor([[0.6, 0.8]])
    m.update(q, 1)
    expected = F.normalize(F.normalize(torch.tensor([0.8, 0.6]), dim=0) + q[0], dim=0)
    torch.testing.assert_close(m.keys[1], expected)
    torch.testing.assert_close(m.keys[0], torch.tensor([1.0, 0.0]))
    assert m.ages.tolist() == [1, 0, 1, 1]


def test_slot_sampling_follows_h_times_v():
    m = _memory([[1, 0]] * 4, [1, 1, 0, 1], [1.0, 3.0, 50.0, 0.0])
    torch.testing.assert_close(m.slot_probs(), torch.tensor([0.25, 0.75, 0.0, 0.0]))
    c = m.sample_slots(20000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(c, minlength=4).float() / 20000
    assert abs(float(freq[1]) - 0.75) < 0.015 and freq[2] == 0 and freq[3] == 0
    assert torch.equal(c[:50], m.sample_slots(50, generator=torch.Generator().manual_seed(0))[:50])
    m.values.zero_()
    with pytest.raises(RuntimeError, match="no real slot"):
        m.sample_slots(1)


def test_float32_under_bf16_autocast():
    m = VMFMemory(16, 4, 3)
    q = torch.randn(5, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = m(q)
        m.update(q, 1)
    assert p.dtype == torch.float32 and all(b.dtype == torch.float32 for b in m.buffers())


def _per_label_case(k=2, kappa=1.0):
    """Five slots where Eq. (3)'s top-2 are both real: slots 0 and 2 (real) beat every fake."""
    keys = [[1, 0], [0, 1], [1, 0.2], [-1, 0], [0.5, 1]]
    values, hist = [1, 0, 1, 0, 0], [2.0, 1.0, 1.5, 1.0, 0.5]
    return _memory(keys, values, hist, k=k, kappa=kappa, read_set="per_label"), keys, values, hist


def test_per_label_read_is_eq4_over_the_best_slots_of_each_label():
    """read_set=per_label: S = the k/2 best real and the k/2 best fake slots by Eq. (3)'s
    ranking; p is Eq. (4) over that S, so a query whose global top-k is one label still gets
    p strictly inside (0, 1) and a gradient."""
    m, keys, v, h = _per_label_case(k=2, kappa=2.0)
    q = torch.tensor([[2.0, 0.3]], dtype=torch.float32)
    qh = [x / math.hypot(2.0, 0.3) for x in (2.0, 0.3)]
    s = [(qh[0] * a + qh[1] * b) / math.hypot(a, b) for a, b in keys]
    score = [math.log(h[i] + BETA) + 2.0 * s[i] - 1 for i in range(5)]
    top_any = sorted(range(5), key=lambda i: -score[i])[:2]
    assert sorted(top_any) == [0, 2]  # the official read set is all real here: p = 1
    best_real = max((i for i in range(5) if v[i]), key=lambda i: score[i])
    best_fake = max((i for i in range(5) if not v[i]), key=lambda i: score[i])
    w = {i: math.exp(2.0 * s[i]) * (ALPHA * h[i] + BETA) for i in (best_real, best_fake)}
    expected = w[best_real] / (w[best_real] + w[best_fake])
    read = m.read(q.requires_grad_())
    assert bool(read.mixed) and float(read.p.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(read.log_fake.detach()) == pytest.approx(math.log(1 - expected), rel=1e-5)
    read.log_real.sum().backward()
    assert q.grad.abs().sum() > 0 and torch.isfinite(q.grad).all()
    official = _memory(keys, v, h, k=2, kappa=2.0)
    assert float(official(q.detach())) == 1.0  # same memory, Eq. (3)'s read: one label


def test_per_label_read_leaves_out_the_picks_of_a_missing_label():
    """k = 4 asks for 2 real slots; with one real slot in the memory, S holds 1 real and 2
    fake slots, and the filler pick of the real share is left out (no NaN, no double
    counting)."""
    keys = [[1, 0], [0, 1], [-1, 0], [0, -1]]
    m = _memory(keys, [1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0], k=4, read_set="per_label")
    q = torch.tensor([[1.0, 1.0]], requires_grad=True)
    read = m.read(q)
    qh = [1 / math.sqrt(2)] * 2
    s = [qh[0] * a + qh[1] * b for a, b in keys]
    fakes = sorted((1, 2, 3), key=lambda i: -s[i])[:2]  # the k - k // 2 = 2 best fake slots
    w = {i: math.exp(s[i]) for i in [0] + fakes}
    assert float(read.p.detach()) == pytest.approx(w[0] / sum(w.values()), rel=1e-5)
    (read.log_real + read.log_fake).sum().backward()
    assert torch.isfinite(q.grad).all()
    all_fake = _memory(keys, [0, 0, 0, 0], [1.0] * 4, k=4, read_set="per_label")
    read = all_fake.read(q)
    assert float(read.p.detach()) == 0.0 and not bool(read.mixed)


def test_per_label_read_keeps_the_official_reset_rule():
    """The write's reset test looks at the top-1 slot over all labels, whatever the read set:
    both memories write the same batch to the same state."""
    a, *_ = _per_label_case(k=2)
    b = VMFMemory(5, 2, 2)
    b.load_state_dict(a.state_dict())
    q = torch.tensor([[1.0, 0.1], [-1.0, 0.1], [0.2, 1.0]])
    for label in (0, 1):
        assert torch.equal(a.update(q, label)["resets"], b.update(q, label)["resets"])
        for name in ("keys", "values", "hist", "ages"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_read_set_is_checked():
    with pytest.raises(ValueError, match="read_set='nearest'"):
        VMFMemory(4, 2, 2, read_set="nearest")
    with pytest.raises(ValueError, match="k must be >= 2"):
        VMFMemory(4, 2, 1, read_set="per_label")
