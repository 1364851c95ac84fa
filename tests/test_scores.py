"""DD-Ranking's scores on numbers worked out by hand, in fractions, and what their percentage-fed code prints."""

import math

import pytest

from ddtoolbox.scores import (alpha, ars, as_percentage_code_prints, augmentation_robust, beta, hlr, ior,
                              label_robust, lrs, squash)


def test_the_exponential_map_sends_minus_one_to_zero_and_one_to_one():
    assert squash(-1) == pytest.approx(0.0, abs=1e-15) and squash(1) == pytest.approx(1.0)
    assert squash(0) == pytest.approx(1 / (1 + math.e))        # (1 - e^-1) / (e - e^-1) = 1 / (1 + e)
    assert squash(0.3) > squash(0.2)


def test_lrs_by_hand():
    # full 90%, set 60% with hard labels, 70% with soft labels, random real images 65% with soft labels
    assert hlr(0.90, 0.60) == pytest.approx(0.30) and ior(0.70, 0.65) == pytest.approx(0.05)
    assert alpha(0.30, 0.05) == pytest.approx(-0.125)
    # (e^-0.125 - e^-1) / (e - e^-1) = (0.8824969 - 0.3678794) / 2.3504024
    assert lrs(0.90, 0.60, 0.70, 0.65) == pytest.approx(0.2189487, abs=1e-7)
    # the weight: lambda 1 scores the improvement over random only
    assert lrs(0.90, 0.10, 0.70, 0.65, lam=1.0) == pytest.approx(squash(0.05))


def test_ars_by_hand():
    assert beta(0.70, 0.60, 0.50, 0.45) == pytest.approx(0.075)
    assert ars(0.70, 0.60, 0.50, 0.45) == pytest.approx(0.3020779, abs=1e-7)
    # a set no better than random real images, with and without augmentation: beta 0
    assert ars(0.5, 0.5, 0.4, 0.4) == pytest.approx(1 / (1 + math.e))


def test_scores_are_averaged_over_rounds_with_the_population_std():
    s = label_robust(0.90, [0.60, 0.50], [0.70, 0.70], [0.65, 0.60])
    # round 1 alpha -0.125; round 2 alpha 0.5 * 0.10 - 0.5 * 0.40 = -0.15
    r1, r2 = squash(-0.125), squash(-0.15)
    assert s.rounds == pytest.approx([r1, r2])
    assert s.mean == pytest.approx((r1 + r2) / 2) and s.std == pytest.approx(abs(r1 - r2) / 2)
    assert s.as_dict()["hlr"] == pytest.approx(0.35) and s.as_dict()["ior"] == pytest.approx(0.075)
    a = augmentation_robust([0.7], [0.6], [0.5], [0.45])
    assert a.mean == pytest.approx(0.3020779, abs=1e-7) and a.std == 0.0


def test_percentages_are_refused():
    with pytest.raises(ValueError, match="percentage"):
        label_robust(90.0, [0.6], [0.7], [0.65])
    with pytest.raises(ValueError, match="percentage"):
        augmentation_robust([70.0], [0.6], [0.5], [0.45])


def test_what_the_percentage_fed_code_prints():
    s = label_robust(0.90, [0.60], [0.70], [0.65])
    line = as_percentage_code_prints(s, {"full_hard": 0.90, "syn_hard": [0.60], "syn_soft": [0.70],
                                         "random_soft": [0.65]})
    # alpha = -12.5 with percentages: (e^-12.5 - e^-1) / (e - e^-1) = -0.1565, printed as a percentage
    assert line == "Label-Robust Score Mean: -0.16%  Std: 0.00"
    a = augmentation_robust([0.7], [0.6], [0.5], [0.45])
    line = as_percentage_code_prints(a, {"syn_aug": [0.7], "random_aug": [0.6], "syn_noaug": [0.5],
                                         "random_noaug": [0.45]})
    assert line == "Augmentation-Robust Score Mean: 769.09%  Std: 0.00"    # beta = 7.5
