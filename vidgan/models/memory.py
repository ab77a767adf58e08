"""The vMF memory of memoryGAN's discriminative memory network (memoryGAN §3.1, docs/FIDELITY.md).

State (buffers, never trained by gradient, float32 even under autocast, saved in checkpoints):
keys K (N, M), values v (N,) (1 real / 0 fake), ages a (N,) and the slot histogram h (N,).
Semantics follow the official memoryGAN code, which produced the paper's numbers
(docs/FIDELITY.md lists the rules): where its wording and the paper's differ, the comments say
which is followed.
"""
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from vidgan.config import CHOICES

KAPPA = 1.0  # vMF concentration (memoryGAN §3.1.1: kappa = 1)
READ_SETS = CHOICES["model.memory.read"]
UPDATE_RULES = CHOICES["model.memory.update"]


class Read(NamedTuple):
    """One read of Eq. (4), in log space: ``log_real`` = log p(real | q) = log sum_S gamma v
    and ``log_fake`` = log(1 - p), each (B,); -inf where the read set S holds no slot of that
    label (then p is exactly 0 or 1). Gradients are finite everywhere and zero through a
    label the read set does not hold."""
    log_real: torch.Tensor
    log_fake: torch.Tensor

    @property
    def p(self) -> torch.Tensor:
        return torch.exp(self.log_real)

    @property
    def mixed(self) -> torch.Tensor:
        """(B,) bool: the read set holds both labels, so p is strictly inside (0, 1)."""
        return torch.isfinite(self.log_real) & torch.isfinite(self.log_fake)


def _label_logsumexp(logit: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log sum over the entries of each row where ``keep``; -inf for a row with none. A row
    with none is computed on its unmasked logits and then replaced, so no -inf - -inf (a NaN
    gradient) ever reaches autograd."""
    has = keep.any(dim=1)
    masked = logit.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(torch.where(has[:, None], masked, logit), dim=1)
    return torch.where(has, lse, torch.full_like(lse, float("-inf")))


def _stable_topk(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of each row, ties to the lower index (stable sort)."""
    return torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]


class VMFMemory(nn.Module):
    """A mixture of N von Mises-Fisher components on the unit sphere, each with a real/fake
    value (memoryGAN Eq. 1-5)."""

    def __init__(self, num_slots: int, key_dim: int, k: int, alpha: float = 0.5,
                 beta: float = 1e-8, update_rule: str = "em", kappa: float = KAPPA,
                 read_set: str = "topk"):
        super().__init__()
        if not 1 <= k <= num_slots:
            raise ValueError(f"top-k={k} must lie in 1..num_slots={num_slots}")
        if update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule='{update_rule}': allowed values are "
                             f"{', '.join(UPDATE_RULES)}")
        if not kappa > 0:
            raise ValueError(f"kappa={kappa}: the vMF concentration must be > 0")
        if read_set not in READ_SETS:
            raise ValueError(f"read_set='{read_set}': allowed values are {', '.join(READ_SETS)}")
        if read_set == "per_label" and k < 2:
            raise ValueError(f"top-k={k}: a per_label read takes k/2 slots of each label, so "
                             f"k must be >= 2")
        self.num_slots, self.key_dim, self.k = num_slots, key_dim, k
        self.alpha, self.beta, self.update_rule = alpha, beta, update_rule
        # Scales every similarity: the read's selection and posterior, the EM step's selection
        # and responsibilities. kappa = 1 is the official code; a larger kappa lets similarity
        # outweigh the histogram, so reads mix labels locally (docs/FIDELITY.md).
        self.kappa = kappa
        # "topk": the read set S is the k best slots of either label (Eq. 3, official);
        # "per_label": the k // 2 best real and the k - k // 2 best fake slots, so that S
        # always holds both labels and p = p(real | q) always has a gradient (not in
        # memoryGAN: at small memories the top-k is usually one label, docs/FIDELITY.md).
        self.read_set = read_set
        values = torch.zeros(num_slots)
        values[:num_slots // 2] = 1.0  # official init: first half real, the rest fake
        self.register_buffer("keys", torch.zeros(num_slots, key_dim))
        self.register_buffer("values", values)
        self.register_buffer("ages", torch.zeros(num_slots))
        self.register_buffer("hist", torch.full((num_slots,), 1e-5))

    def extra_repr(self) -> str:
        return (f"slots={self.num_slots}, key_dim={self.key_dim}, k={self.k}, "
                f"alpha={self.alpha}, kappa={self.kappa}, update={self.update_rule}, "
                f"read={self.read_set}")

    # ---------------------------------------------------------------- read
    def _similarities(self, q: torch.Tensor) -> torch.Tensor:
        """(B, M) raw queries -> (q_hat (B, M), s (B, N) = q_hat . K_i), in the memory's dtype
        (float32, float64 in double-precision tests), whatever autocast does."""
        q_hat = F.normalize(q.to(self.keys.dtype), dim=1)
        return q_hat, q_hat @ self.keys.t()

    def _score(self, s: torch.Tensor, penalty: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log of (h + beta) exp(kappa (s - penalty) - 1), the ranking of Eq. (3) in log space
        (no overflow for any kappa), (B, N)."""
        score = self.kappa * (s.detach() if penalty is None else s.detach() - penalty)
        return torch.log(self.hist + self.beta) + score - 1

    def _topk(self, s: torch.Tensor, penalty: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Top-k slots of (h + beta) exp(kappa (s - penalty) - 1), (B, k)."""
        return _stable_topk(self._score(s, penalty), self.k)

    def _read_slots(self, s: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The read set S: Eq. (3)'s top-k over all labels, or with ``per_label`` the same
        ranking within each label (k // 2 real, then k - k // 2 fake). Returns the slots
        (B, k) and, for ``per_label``, which of them are real picks (B, k) bool: a label with
        fewer slots than its share fills the rest with slots of the other label, left out of
        the read."""
        if self.read_set == "topk":
            return self._topk(s), None
        score, real = self._score(s), self.values > 0.5
        k_real = self.k // 2
        picks = []
        for keep, k in ((real, k_real), (~real, self.k - k_real)):
            label_score = score.masked_fill(~keep, float("-inf"))
            slots = _stable_topk(label_score, k)
            picks.append((slots, torch.isfinite(label_score.gather(1, slots))))
        return (torch.cat([picks[0][0], picks[1][0]], dim=1),
                torch.cat([picks[0][1], picks[1][1]], dim=1))

    def read(self, q: torch.Tensor) -> Read:
        """Eq. (4) for raw queries q (B, M) over the top-k slots S, in log space.

        The posterior over S weighs each slot by exp(kappa s_i - 1) (alpha h_i + beta), the
        official code's prior (the paper's Eq. 1 has h_i + beta); only s carries a gradient to
        q. log p and log(1 - p) are log-sum-exps of that posterior over the real and the fake
        slots of S, so neither rounds to log 0 while S holds its label.
        """
        with torch.autocast(q.device.type, enabled=False):
            _, s = self._similarities(q)
            slots, valid = self._read_slots(s)
            logit = self.kappa * s.gather(1, slots) + torch.log(
                self.alpha * self.hist[slots] + self.beta)
            if valid is not None:
                logit = logit.masked_fill(~valid, float("-inf"))
            norm = torch.logsumexp(logit, dim=1)
            real = self.values[slots] > 0.5
            fake = ~real
            if valid is not None:
                real, fake = real & valid, fake & valid
            return Read(_label_logsumexp(logit, real) - norm,
                        _label_logsumexp(logit, fake) - norm)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """p(real | q) (B,) for raw queries q (B, M): Eq. (4), ``read(q).p``."""
        return self.read(q).p

    # ---------------------------------------------------------------- write
    @torch.no_grad()
    def update(self, q: torch.Tensor, label: int) -> Dict[str, torch.Tensor]:
        """One write of a batch of queries with one label (1 real, 0 fake), the official code's
        rules (docs/FIDELITY.md).

        Every sample is judged against the state before the call. Sample b resets when the
        top-1 slot of Eq. (3)'s ranking holds the other label: (K, v, h) = (q_hat_b, label,
        mean h) goes to an old slot, the i-th resetting sample (batch order) to the i-th
        oldest (age descending, ties to the lower index). The others take one EM step on
        S^y_b = top-k of (h + beta) exp(kappa (s - 2 [v != y]) - 1) (the label penalty exp(-2)
        at kappa = 1): gamma = softmax over S^y_b of kappa s - 1 + log(alpha h + beta),
        h_i <- alpha h_i + 1 (the official code adds the sum of gamma, which is 1), K_i <-
        normalize(K_i + gamma_i / (alpha h_i + 1) (q_hat_b - K_i)). Rows are written
        sample-major, the last writer of a slot wins; then every age grows by 1 and written
        slots get age 0.
        Returns {"resets": number of resetting samples} (a tensor: no host sync).
        """
        with torch.autocast(q.device.type, enabled=False):
            q_hat, s = self._similarities(q)
            b, k, y = q_hat.shape[0], self.k, float(label)
            if b > self.num_slots:
                raise ValueError(f"a write of {b} queries needs at least as many slots; the "
                                 f"memory has {self.num_slots}")
            # the top-1 slot of Eq. (3) over all labels, whatever the read set
            reset = self.values[self._topk(s)[:, 0]] != y  # (B,)
            rank = torch.cumsum(reset.long(), 0) - 1  # i-th resetting sample
            oldest = torch.sort(self.ages, descending=True, stable=True).indices
            reset_slot = oldest[rank.clamp(min=0)]  # (B,)

            em_slots = self._topk(s, penalty=2 * (self.values != y).float())  # (B, k)
            s_em = s.gather(1, em_slots)
            h_em = self.alpha * self.hist[em_slots]  # (B, k)
            gamma = torch.softmax(self.kappa * s_em + torch.log(h_em + self.beta), dim=1)
            new_h = h_em + 1.0
            keys_em = self.keys[em_slots]  # (B, k, M)
            if self.update_rule == "em":
                ratio = (gamma / new_h).unsqueeze(2)
                new_keys = F.normalize(keys_em + ratio * (q_hat.unsqueeze(1) - keys_em), dim=2)
                rows_per_sample = k
            else:  # memoryGAN's "-EM" ablation, Kaiser et al.'s rule on the nearest slot
                new_keys = F.normalize(keys_em[:, :1] + q_hat.unsqueeze(1), dim=2)
                em_slots, new_h = em_slots[:, :1], new_h[:, :1]
                rows_per_sample = 1

            # One row per (sample, slot), sample-major; all rows of a resetting sample go to
            # its one slot (the official code tiles them the same way).
            r = rows_per_sample
            idx = torch.where(reset[:, None], reset_slot[:, None], em_slots).reshape(-1)
            keys = torch.where(reset[:, None, None], q_hat[:, None],
                               new_keys).reshape(-1, self.key_dim)
            vals = torch.where(reset[:, None], torch.full_like(new_h, y),
                               self.values[em_slots]).reshape(-1)
            hist = torch.where(reset[:, None], self.hist.mean().expand_as(new_h),
                               new_h).reshape(-1)
            # the last row writing a slot wins: keep, per slot, the row of highest index
            row = torch.arange(b * r, device=idx.device)
            last = torch.full((self.num_slots,), -1, dtype=torch.long, device=idx.device)
            last.scatter_reduce_(0, idx, row, reduce="amax")
            win = row == last[idx]
            slots = idx[win]
            self.keys[slots] = keys[win]
            self.values[slots] = vals[win]
            self.hist[slots] = hist[win]
            self.ages += 1
            self.ages[slots] = 0
        return {"resets": reset.sum()}

    # ---------------------------------------------------------------- MCGN
    def slot_probs(self) -> torch.Tensor:
        """p(c) = h_c v_c / sum_j h_j v_j (memoryGAN §3.2), (N,)."""
        real = self.hist * self.values
        return real / real.sum()

    def sample_slots(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n slot indices c ~ p(c), on the generator's device (default: the memory's).

        Called at every generator sampling step, so the "no real slot" check is an
        asynchronous assert: a RuntimeError on the CPU, a device assert on a GPU, and never a
        host sync.
        """
        real = self.hist * self.values
        torch._assert_async((real > 0).any(),
                            "the memory holds no real slot (every value is 0), so p(c) = h v / "
                            "sum h v is undefined; was it loaded from a memory checkpoint?")
        probs = real / real.sum()
        if generator is not None:
            probs = probs.to(generator.device)
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    # ---------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def diagnostics(self, q_real: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Fraction of real slots, mean age, histogram entropy, and the biased log-likelihood
        of real queries (memoryGAN Fig. 3a, as its code computes it: log sum_i N(kappa s_i - 1)
        (h_i v_i + beta) / sum_j (h_j v_j + beta))."""
        with torch.autocast(q_real.device.type, enabled=False):
            _, s = self._similarities(q_real)
            prior = self.hist * self.values + self.beta
            density = (torch.exp(self.kappa * s - 1) / (2 * torch.pi) ** 0.5
                       * (prior / prior.sum()))
            hist = self.hist / self.hist.sum()
            return {"real_slots": self.values.mean(), "mean_age": self.ages.mean(),
                    "hist_entropy": -(hist * torch.log(hist.clamp_min(1e-30))).sum(),
                    "log_likelihood": torch.log(density.sum(dim=1)).mean()}
