"""The matcher lifecycle: what a matcher is given, and what the core asks of it.

A matcher owns the method-specific choices of a distillation: how the synthetic set starts, what
the student's inner loss is, and how one iteration's per-element loss terms are formed. The core
owns everything else (plugins' hooks, the reduction of the terms, optimisers, outputs). The core
calls, in order::

    m = MatcherClass(ctx)                    # ctx: a MatcherContext
    images, labels = m.initial_images(ipc, generator)
    targets = m.initial_targets(images, labels)
    m.start(run)                              # once; run.images etc. exist now
    m.load_state_dict(state)                  # only when resuming from a checkpoint
    for each iteration:
        num, den = m.loss_terms(run)          # 1-D, differentiable in run.images (and targets, syn_lr)
        ... plugins, backward ...
        if not m.skip_update(loss): optimiser steps
        m.after_update(run)                   # a matcher's own inner step (DC trains its network here)
        m.state_dict()                        # at each checkpoint
    m.extra_state()                           # extra tensors for synthetic.pt

Subclass :class:`Matcher` for a method that needs no expert trajectories (set
``needs_buffer = False``: ``--buffer`` becomes optional and nothing is unrolled), or
:class:`ddtoolbox.TrajectoryMatcher` to match trajectories as MTT, DATM and FTD do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MatcherContext:
    """What a matcher receives when it is made, before the synthetic set exists."""

    config: object                  #: :class:`ddtoolbox.DistillConfig`, the run's core settings
    options: object                 #: the matcher plugin's own options object (``None`` if it declares none)
    train_set: object               #: :class:`ddtoolbox.data.TensorDataset`, the real training data, normalised
    buffer: object                  #: :class:`ddtoolbox.buffer.Buffer`, or ``None`` when ``needs_buffer`` is False
    device: torch.device            #: where the run's tensors live
    augment: object = None          #: the differentiable augmentation, ``augment(x) -> (x_aug, params)``; None with --no-dsa


class Matcher:
    """Base matcher: set-up shared by every method; subclasses implement :meth:`loss_terms`."""

    #: the ``--matcher`` name
    name = "base"
    #: one line for ``ddtool plugins``
    description = ""
    #: whether the inner targets (labels) are learned; the core then adds an optimiser for them
    learn_targets = False
    #: whether the matcher reads expert trajectories (``--buffer``); False also means no unroll
    needs_buffer = True
    #: core options this matcher wants at other defaults than the core's, by field: ``{"lr_img": 100.0}``.
    #: A field the run leaves at the core's default takes the matcher's (``--help`` lists them).
    defaults: dict = {}
    #: core options (fields) this matcher never reads, e.g. ``("syn_steps", "expert_epochs")``: giving one
    #: warns, ``synthetic.pt`` records ``null`` for ``syn_steps`` / ``expert_epochs`` among them, and
    #: ``"lr_lr"`` here (no learned student lr) hides the learned lr from the progress bar and summary
    unused: tuple = ()

    def __init__(self, ctx: MatcherContext):
        self.ctx = ctx
        self.config = ctx.config
        self.options = ctx.options
        self.train_set = ctx.train_set
        self.buffer = ctx.buffer
        self.device = ctx.device
        self.augment = ctx.augment

    # ------------------------------------------------------------------ the synthetic set

    def initial_images(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` random real images per class and their class ids, classes in order."""
        return self.train_set.sample_per_class(ipc, generator)

    def initial_targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What the inner loss compares a network's logits with (hard labels by default)."""
        return labels

    def inner_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss the student minimises on the synthetic set during the unroll."""
        return F.cross_entropy(logits, targets)

    def network(self) -> tuple[str, dict]:
        """``(model name, model options)`` of the networks this run trains: the experts' architecture,
        or, for a matcher without a buffer, ``--model`` (default ConvNet) with ``--width`` etc."""
        if self.buffer is not None:
            return self.buffer.meta["model"], dict(self.buffer.meta["model_options"])
        from ..models import canonical_model_name, model_options

        name = canonical_model_name(self.config.model or "ConvNet")
        return name, model_options(name, self.config)

    def make_model(self) -> torch.nn.Module:
        """A freshly initialised network of :meth:`network`'s architecture, on the run's device."""
        from ..models import create_model

        info = self.train_set.info
        name, options = self.network()
        return create_model(name, info.channels, info.num_classes, info.image_size, **options).to(self.device)

    # ------------------------------------------------------------------ the run

    def start(self, run) -> None:
        """Called once, after the synthetic set exists and before ``on_run_start``: build what the
        iterations need (a student network, an unroll, a sampler's schedule)."""

    def loss_terms(self, run) -> tuple[torch.Tensor, torch.Tensor]:
        """This iteration's per-element loss terms ``(num, den)``, 1-D and of one shape.

        The core reduces them to ``sum(w * num) / sum(w * den)`` (``w``: plugins' weights, or 1), so
        ``num`` must be differentiable in ``run.images`` (and in ``run.targets`` / ``run.syn_lr``
        where they matter) and ``den`` positive in sum. ``run.iteration`` is the iteration; set
        ``run.segment`` to a dict of plain numbers to log what was drawn.
        """
        raise NotImplementedError(f"matcher '{self.name}' does not implement loss_terms(run)")

    def after_update(self, run) -> None:
        """Called every iteration after the optimiser steps (or their skip or roll back), before
        ``on_iteration``: a matcher's own inner step on the updated images, as DC trains its network
        on them. Draw from ``run.generator`` or torch's global generator (both are checkpointed), and
        keep what later iterations need in :meth:`state_dict`. Default: nothing."""

    def skip_update(self, loss: float) -> bool:
        """Whether to skip this iteration's optimiser steps (DATM's loss threshold)."""
        return False

    def state_dict(self) -> dict:
        """What the matcher keeps between iterations, for checkpoints: tensors and plain values only
        (what ``torch.load(weights_only=True)`` reads back). Stateless matchers keep nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back :meth:`state_dict`'s values on resume (called after :meth:`start`)."""

    def extra_state(self) -> dict:
        """Tensors or plain values to save in ``synthetic.pt`` beside the images (e.g. FTD's EMA)."""
        return {}

    def trace_summary(self) -> str:
        return f"{type(self).__name__}({self.name})"
