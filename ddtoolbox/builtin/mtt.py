"""MTT: match the student's parameters after N steps to an expert's after M epochs."""

from __future__ import annotations

from .. import hookimpl
from ..matchers import TrajectoryMatcher


class MTT(TrajectoryMatcher):
    """Matching Training Trajectories (Cazenavette et al., CVPR 2022), Eq. 1."""

    name = "mtt"
    description = "Matching Training Trajectories (Cazenavette et al., 2022): the baseline"


@hookimpl
def register_matchers(register):
    register(MTT)
