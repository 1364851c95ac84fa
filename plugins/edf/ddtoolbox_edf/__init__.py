"""EDF (Emphasizing Discriminative Features) for ddtoolbox, as two independent plugins.

* :mod:`ddtoolbox_edf.cpd`: Common Pattern Dropout, ``--plugin cpd`` (paper Eq. 2, Algorithm 1
  lines 12-14).
* :mod:`ddtoolbox_edf.dae`: Discriminative Area Enhancement, ``--plugin dae`` (Eq. 3-5, Algorithm 1
  lines 15-19).

Either works alone or with the other, on top of any matcher. ``python -m ddtoolbox_edf.ablation``
runs the four rows of the paper's Table 4. See ``docs/edf.md``.
"""

__version__ = "0.1.0"
