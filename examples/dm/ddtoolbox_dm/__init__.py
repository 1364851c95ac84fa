"""DM: Distribution Matching (Zhao & Bilen, WACV 2023) as a ddtoolbox matcher plugin.

DM asks that the synthetic images of a class look, on average, like the real images of that class
to a randomly initialised network. Every iteration draws a fresh ConvNet, embeds a batch of real
images and the synthetic images of each class (the network's penultimate features, after a
differentiable augmentation), and pulls the per-class mean embeddings together. No network is
trained, no expert trajectory is read and nothing is unrolled, which makes DM much cheaper than
trajectory matching: the stream of random networks stands in for a family of feature extractors.

This package is a worked example for plugin authors; it shows everything a matcher plugin needs:

* a :class:`ddtoolbox.Matcher` subclass with ``needs_buffer = False``, so ``--buffer`` is optional
  and the core prepares no student unroll;
* its options, declared once as a :class:`ddtoolbox.options.Settings` dataclass and returned from
  ``add_options("distill")``: the core makes ``--dm-batch-real`` from the field and checks its
  values on the command line, in presets and from Python alike;
* ``register_matchers``, which makes ``--matcher dm`` exist;
* an entry point in the group ``ddtoolbox`` (see ``setup.cfg``), which is how ddtool finds this
  module once the package is installed.

The matcher only forms the per-element loss terms. The core reduces them, steps the images and
writes the outputs, so other plugins' hooks (CPD's keep-mask, DAE's gradient weighting) act on DM
exactly as they act on MTT.

Loss scale: the paper sums the squared gaps over classes and features; the core's reduction with a
denominator of ones takes their *mean* instead. The paper's image learning rate of 1 therefore
corresponds to ``--lr-img`` = classes x features here (10 x 2048 = 20480 for CIFAR-10 or
Fashion-MNIST on the default ConvNet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ddtoolbox import Matcher, UsageError, hookimpl
from ddtoolbox.options import Settings, option, positive_int

__version__ = "0.1.0"
__all__ = ["DM", "DMOptions", "class_mean_gaps", "embedder"]


@dataclass(kw_only=True)
class DMOptions(Settings):
    """DM's ``distill`` options."""

    # Prefixed with the plugin's name: every installed plugin's options share one command line.
    dm_batch_real: int = option(
        64, "real images per class embedded in each iteration (default 64; a class with fewer uses all it has)",
        metavar="N", type=positive_int)


# ---------------------------------------------------------------------------- the computation


def embedder(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``x -> features`` giving ``net``'s penultimate features, shape ``(B, F)``.

    A network that offers ``embed(x)`` is trusted to know its own feature layer. Otherwise the
    features are taken as the input of the last ``nn.Linear`` (in registration order), which is the
    classifier head of every ddtoolbox model; capturing them with a hook, rather than re-implementing
    the forward pass, keeps this working for any registered architecture.
    """
    embed = getattr(net, "embed", None)
    if callable(embed):
        return lambda x: embed(x).flatten(1)
    head = None
    for module in net.modules():
        if isinstance(module, nn.Linear):
            head = module
    if head is None:
        raise UsageError(f"--matcher dm embeds images with the input of the network's last linear layer, and "
                         f"{type(net).__name__} has none (and no embed()); choose another --model, e.g. ConvNet")

    def features(x: torch.Tensor) -> torch.Tensor:
        seen = []
        # A pre-hook sees the head's input with its autograd graph intact; removing it at once keeps
        # the network usable for anything else and makes a failed forward leave nothing behind.
        handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            net(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)

    return features


def class_mean_gaps(embed_fn: Callable[[torch.Tensor], torch.Tensor], real_by_class: Sequence[torch.Tensor],
                    syn_by_class: Sequence[torch.Tensor]) -> torch.Tensor:
    """DM's per-element terms: ``(mean_real_c - mean_syn_c) ** 2`` for every class ``c`` and feature.

    :param embed_fn: images ``(B, C, H, W)`` -> features ``(B, F)``.
    :param real_by_class: the real batch of each class (already augmented); treated as constants.
    :param syn_by_class: the synthetic images of each class (already augmented), in the same class order.
    :return: 1-D, ``classes x F`` entries, class-major; differentiable in the synthetic images.

    Each class is embedded on its own, as in the paper: with a batch-norm network the statistics then
    stay within one class, and the memory held for the backward pass is one class's batch at a time
    for the real images (none, as they need no gradient).
    """
    if len(real_by_class) != len(syn_by_class):
        raise ValueError(f"got real images for {len(real_by_class)} classes but synthetic ones for "
                         f"{len(syn_by_class)}")
    gaps = []
    for real, syn in zip(real_by_class, syn_by_class):
        # The real side only sets the target: no graph is needed, which saves most of the memory.
        with torch.no_grad():
            target = embed_fn(real).mean(0)
        gaps.append((target - embed_fn(syn).mean(0)) ** 2)
    return torch.cat(gaps)


# ---------------------------------------------------------------------------- the matcher


class DM(Matcher):
    """Distribution Matching: match per-class mean embeddings under a fresh random network."""

    name = "dm"
    description = "Distribution Matching (Zhao & Bilen, 2023): class-mean embeddings under random ConvNets; no buffer"
    # No trajectories: --buffer becomes optional (and is ignored with a warning), no unroll is built,
    # and the networks come from --model (default ConvNet) through Matcher.make_model().
    needs_buffer = False
    # Core options DM never reads: giving one warns, synthetic.pt records null for syn_steps and
    # expert_epochs, and with no learned student lr the progress bar shows none. (The student lr
    # itself, --lr-teacher or 0.01, is still saved: it is the lr 'ddtool eval' trains with.)
    unused = ("syn_steps", "expert_epochs", "min_start_epoch", "max_start_epoch", "lr_lr", "batch_syn", "unroll")

    def __init__(self, ctx):
        super().__init__(ctx)
        # The core passes this plugin's options object; a matcher made by hand (a test, a notebook)
        # may pass none, and then gets the declared defaults rather than an AttributeError later.
        if self.options is None:
            self.options = DMOptions()

    def start(self, run) -> None:
        # Class membership of the real data and of the synthetic set is fixed for the whole run, so
        # it is looked up once here instead of in every iteration.
        classes = run.info.num_classes
        self.real_index = [self.train_set.class_indices(c) for c in range(classes)]
        self.syn_index = [torch.nonzero(run.labels == c).flatten() for c in range(classes)]
        empty = [c for c in range(classes) if len(self.real_index[c]) == 0]
        if empty:
            raise UsageError(f"--matcher dm needs real images of every class; dataset '{run.info.name}' has none of "
                             f"class {empty[0]}")

    def real_batch(self, c: int) -> torch.Tensor:
        """Up to ``--dm-batch-real`` random real images of class ``c``, on the run's device."""
        index = self.real_index[c]
        # Drawn from torch's global RNG, which the core seeds with --seed, so runs are reproducible
        # without the matcher keeping a generator of its own.
        pick = index[torch.randperm(len(index))[:self.options.dm_batch_real]]
        # The dataset stays on the CPU (it may be large and is shared); only the batch moves.
        return self.train_set.images[pick].to(self.device)

    def augmented(self, real: torch.Tensor, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``real`` and ``syn`` through one call of the differentiable augmentation (``--no-dsa``: as given)."""
        if self.augment is None:
            return real, syn
        # DSA applies one randomly chosen group (colour, crop, rotation, ...) per call. Separate calls
        # would often give the real batch one group and the synthetic images another, and the gap
        # between the two groups' mean embeddings would swamp the gap DM is meant to close (with few
        # images per class the loss then barely moves). One call on the concatenation gives both the
        # same group, as the paper's shared seed does, while every image still gets its own
        # parameters; the batches differ in size, so replaying one batch's parameters on the other
        # is not possible.
        both, _ = self.augment(torch.cat([real, syn]))
        return both[:len(real)].detach(), both[len(real):]

    def loss_terms(self, run) -> tuple[torch.Tensor, torch.Tensor]:
        # A new network every iteration is the heart of DM: the synthetic set must match the real
        # distribution under many random feature extractors, not fit one. make_model() draws the
        # initialisation from the global RNG, so --seed fixes the sequence of networks too.
        net = self.make_model()
        # The network is never trained; freezing it skips the parameter gradients in backward().
        net.requires_grad_(False)
        embed = embedder(net)
        real, syn = [], []
        for c in range(len(self.real_index)):
            # One augmentation draw per class, so the classes see different groups in one iteration.
            real_c, syn_c = self.augmented(self.real_batch(c), run.images[self.syn_index[c]])
            real.append(real_c)
            syn.append(syn_c)
        num = class_mean_gaps(embed, real, syn)
        # Nothing is drawn that --seed does not already determine; an empty segment logs nothing.
        run.segment = {}
        # den = 1 everywhere: sum(w * num) / sum(w * den) is then the mean squared gap over the
        # entries a plugin keeps, so CPD's keep-mask means "match only the largest gaps".
        return num, torch.ones_like(num)


# ---------------------------------------------------------------------------- hooks


@hookimpl
def register_matchers(register):
    register(DM)


@hookimpl
def add_options(command):
    # Called for every command on every installed plugin; DM only has distill options.
    return DMOptions if command == "distill" else None
