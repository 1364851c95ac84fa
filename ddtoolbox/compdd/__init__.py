"""Comp-DD (EDF, Section 3): Grad-CAM complexity of images and classes, subset selection, and the
activation statistics behind EDF's motivation (Figure 1b).

* :mod:`.complexity`: the per-image metric (share of pixels with activation >= 0.5) and per-class scores;
* :mod:`.select`: ranking the classes of each category into easy and hard subsets;
* :mod:`.stats`: mean activation and high-activation share of a dataset, with histograms;
* :mod:`.models`: the Grad-CAM network (torchvision with user weights, ddtoolbox network, buffer expert);
* :mod:`.cli`: ``ddtool compdd score|select|stats`` and ``ddtool data subsets|prepare``.

The maps themselves come from :mod:`ddtoolbox.gradcam`, shared with EDF's DAE plugin.
"""
