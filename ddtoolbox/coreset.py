"""Coreset selection rules: which real images of one class to keep, given what a network saw.

These are the baselines a distilled set must beat ("Do Distilled Sets Outperform Coresets?",
DD-Ranking): if IPC well-chosen real images train a network as well as IPC distilled ones, the
distillation added nothing. Each rule is a pure function of one class's data, so it can be checked
by hand on a few points; :mod:`ddtoolbox.selection` feeds it real features and writes the set.

* :func:`herding` (Welling 2009, as iCaRL and DeepCore use it for selection): greedily add the
  example that brings the mean of the chosen features closest to the class mean.
* :func:`kcenter_greedy` (Sener & Savarese 2018): start from one example, then repeatedly add the
  example farthest (Euclidean) from its nearest chosen one, which covers the class in feature space.
* :func:`forgetting_counts` and :func:`most_forgotten` (Toneva et al. 2019): count how often an
  example goes from classified correctly to incorrectly between consecutive presentations during
  training; keep the most forgotten. An example never classified correctly counts as forgotten
  infinitely often, as in the paper (it is the hardest to learn, not an unforgettable one).

Every rule picks without repeats and breaks ties towards the lower index, so a selection is the
same on every machine given the same features.
"""

from __future__ import annotations

import math

import torch

from .errors import UsageError

#: never-learned examples: forgotten "infinitely" often (Toneva et al. 2019, Section 3)
NEVER_LEARNED = math.inf


def _check(features: torch.Tensor, k: int) -> torch.Tensor:
    if features.dim() != 2:
        raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
    n = len(features)
    if not 1 <= k <= n:
        raise UsageError(f"cannot select {k} of {n} examples of a class; use an IPC between 1 and {n}")
    return features.double()   # distances between close points: float64 keeps ties and order exact


def herding(features: torch.Tensor, k: int) -> list[int]:
    """Indices of ``k`` rows of ``features`` (n, d), in the order herding adds them.

    Step t (1-based) adds the unchosen row ``i`` that minimises
    ``|| mean(features) - (sum of chosen + features[i]) / t ||``.
    """
    x = _check(features, k)
    target = x.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    free = torch.ones(len(x), dtype=torch.bool)
    for t in range(1, k + 1):
        dist = ((target - (total + x) / t) ** 2).sum(1)
        dist[~free] = math.inf
        i = int(torch.argmin(dist))          # argmin returns the first minimum: ties go to the lower index
        chosen.append(i)
        free[i] = False
        total = total + x[i]
    return chosen


def kcenter_greedy(features: torch.Tensor, k: int, first: int | None = None) -> list[int]:
    """Indices of ``k`` rows of ``features`` (n, d), in the order k-center greedy adds them.

    :param first: the starting row; default the row closest to the class mean (deterministic, and
        a typical member rather than an outlier; the paper leaves the start open, DeepCore draws it
        at random).
    """
    x = _check(features, k)
    if first is None:
        first = int(torch.argmin(((x - x.mean(0)) ** 2).sum(1)))
    elif not 0 <= first < len(x):
        raise ValueError(f"first={first} is not a row of {len(x)} features")
    chosen = [first]
    nearest = ((x - x[first]) ** 2).sum(1)      # squared distance of each row to its nearest chosen row
    nearest[first] = -1.0
    for _ in range(k - 1):
        i = int(torch.argmax(nearest))           # argmax returns the first maximum: ties to the lower index
        chosen.append(i)
        nearest = torch.minimum(nearest, ((x - x[i]) ** 2).sum(1))
        nearest[chosen] = -1.0
    return chosen


def forgetting_counts(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events per example from ``correct`` (presentations, n): was example j classified
    correctly at its t-th presentation. A forgetting event is correct at t-1 and wrong at t; an
    example never correct gets :data:`NEVER_LEARNED`."""
    if correct.dim() != 2:
        raise ValueError(f"correct must be (presentations, n), got shape {tuple(correct.shape)}")
    c = correct.bool()
    counts = (c[:-1] & ~c[1:]).sum(0).double()
    counts[~c.any(0)] = NEVER_LEARNED
    return counts


def most_forgotten(counts: torch.Tensor, k: int) -> list[int]:
    """The ``k`` indices with the most forgetting events, most first; ties to the lower index."""
    _check(counts[:, None], k)
    order = sorted(range(len(counts)), key=lambda i: (-float(counts[i]), i))
    return order[:k]
