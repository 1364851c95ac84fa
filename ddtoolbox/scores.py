"""DD-Ranking's scores (arXiv 2505.13300): what a distilled set adds beyond its labels and augmentation.

Accuracies here are **fractions** in [0, 1], which is what the formulas assume: the exponential
map ``(e^x - e^-1) / (e - e^-1)`` sends x in [-1, 1] to a score in [0, 1].

* Label-Robust Score: ``hlr = full_hard - syn_hard`` (hard-label recovery: how far the set
  trained with hard labels is below full data), ``ior = syn_soft - random_soft`` (improvement over
  random real images, both trained with soft labels), ``alpha = lam * ior - (1 - lam) * hlr``,
  ``LRS = map(alpha)``.
* Augmentation-Robust Score: ``beta = lam * (syn_aug - random_aug) + (1 - lam) * (syn_noaug -
  random_noaug)``, ``ARS = map(beta)``.

Both are computed per evaluation round (network r of the set paired with network r of random
images) and then averaged, as DD-Ranking does (``np.mean`` and ``np.std``, the population std).

DD-Ranking's code feeds **percentages** into the same formulas. A typical gap of tens of points then
drives ``alpha`` far below -1, and LRS pins at ``-e^-1 / (e - e^-1) = -0.1565``, which it prints as
``-0.16%``; a positive gap of a few points makes ARS explode. :func:`as_percentage_code_prints`
reproduces those lines, so a number from their leaderboard can be told apart from a number here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

LAMBDA = 0.5          #: DD-Ranking's default weight (lrs_lambda, ars_lambda)
_LOW, _HIGH = math.exp(-1), math.e


def squash(x: float) -> float:
    """``(e^x - e^-1) / (e - e^-1)``: -1 -> 0, 1 -> 1, 0 -> 0.269."""
    return (math.exp(x) - _LOW) / (_HIGH - _LOW)


def check_fraction(value: float, name: str) -> float:
    """Refuse a percentage (or anything else outside [0, 1]) where a fraction is meant."""
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} = {value!r} is not an accuracy fraction in [0, 1] (a percentage? divide by 100)")
    return float(value)


def hlr(full_hard: float, syn_hard: float) -> float:
    return full_hard - syn_hard


def ior(syn_soft: float, random_soft: float) -> float:
    return syn_soft - random_soft


def alpha(hlr_: float, ior_: float, lam: float = LAMBDA) -> float:
    return lam * ior_ - (1 - lam) * hlr_


def beta(syn_aug: float, random_aug: float, syn_noaug: float, random_noaug: float, lam: float = LAMBDA) -> float:
    return lam * (syn_aug - random_aug) + (1 - lam) * (syn_noaug - random_noaug)


def lrs(full_hard: float, syn_hard: float, syn_soft: float, random_soft: float, lam: float = LAMBDA) -> float:
    """The Label-Robust Score of one round, from accuracy fractions."""
    return squash(alpha(hlr(full_hard, syn_hard), ior(syn_soft, random_soft), lam))


def ars(syn_aug: float, random_aug: float, syn_noaug: float, random_noaug: float, lam: float = LAMBDA) -> float:
    """The Augmentation-Robust Score of one round, from accuracy fractions."""
    return squash(beta(syn_aug, random_aug, syn_noaug, random_noaug, lam))


@dataclass
class Scores:
    """One score over rounds: its per-round values, their mean and population std."""

    name: str
    rounds: list
    parts: dict          #: the per-round inputs' summaries (hlr / ior, or the two gaps)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.rounds)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.rounds) if len(self.rounds) > 1 else 0.0

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "rounds": self.rounds, **self.parts}


def _rounds(*series):
    n = min(len(s) for s in series)
    if n == 0:
        raise ValueError("no evaluation rounds to score")
    return n


def label_robust(full_hard: float, syn_hard: list, syn_soft: list, random_soft: list, lam: float = LAMBDA) -> Scores:
    """LRS over rounds; ``full_hard`` is one number (the stored full-data mean), the rest per round."""
    check_fraction(full_hard, "full-data accuracy")
    n = _rounds(syn_hard, syn_soft, random_soft)
    for name, s in (("hard-label accuracy", syn_hard), ("soft-label accuracy", syn_soft),
                    ("random soft-label accuracy", random_soft)):
        for v in s:
            check_fraction(v, name)
    hlrs = [hlr(full_hard, syn_hard[r]) for r in range(n)]
    iors = [ior(syn_soft[r], random_soft[r]) for r in range(n)]
    return Scores("LRS", [squash(alpha(h, i, lam)) for h, i in zip(hlrs, iors)],
                  {"hlr": statistics.fmean(hlrs), "ior": statistics.fmean(iors), "lambda": lam})


def augmentation_robust(syn_aug: list, random_aug: list, syn_noaug: list, random_noaug: list,
                        lam: float = LAMBDA) -> Scores:
    """ARS over rounds, each list one accuracy per round."""
    n = _rounds(syn_aug, random_aug, syn_noaug, random_noaug)
    for s in (syn_aug, random_aug, syn_noaug, random_noaug):
        for v in s:
            check_fraction(v, "accuracy")
    gaps_aug = [syn_aug[r] - random_aug[r] for r in range(n)]
    gaps_noaug = [syn_noaug[r] - random_noaug[r] for r in range(n)]
    return Scores("ARS", [squash(lam * a + (1 - lam) * b) for a, b in zip(gaps_aug, gaps_noaug)],
                  {"gap_aug": statistics.fmean(gaps_aug), "gap_noaug": statistics.fmean(gaps_noaug), "lambda": lam})


def as_percentage_code_prints(score: Scores, inputs: dict, lam: float = LAMBDA) -> str:
    """The line DD-Ranking's code would log for these accuracies: it passes percentages (x 100) to
    the formulas and prints ``f"{mean:.2f}%  Std: {std:.2f}"``.

    :param inputs: the per-round accuracy lists (fractions) under the names of
        :func:`label_robust` / :func:`augmentation_robust`'s parameters.
    """
    pct = {k: ([100 * v for v in vals] if isinstance(vals, list) else 100 * vals) for k, vals in inputs.items()}
    if score.name == "LRS":
        n = _rounds(pct["syn_hard"], pct["syn_soft"], pct["random_soft"])
        values = [_safe_squash(alpha(hlr(pct["full_hard"], pct["syn_hard"][r]), ior(pct["syn_soft"][r], pct["random_soft"][r]),
                               lam)) for r in range(n)]
        label = "Label-Robust Score"
    else:
        n = _rounds(pct["syn_aug"], pct["random_aug"], pct["syn_noaug"], pct["random_noaug"])
        values = [_safe_squash(beta(pct["syn_aug"][r], pct["random_aug"][r], pct["syn_noaug"][r],
                                    pct["random_noaug"][r], lam)) for r in range(n)]
        label = "Augmentation-Robust Score"
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{label} Mean: {mean:.2f}%  Std: {std:.2f}"


def _safe_squash(x: float) -> float:
    """:func:`squash`, with numpy's overflow to inf where Python's math.exp would raise."""
    try:
        return squash(x)
    except OverflowError:
        return math.inf
