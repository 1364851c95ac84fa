"""DC: Dataset Condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021) as a ddtoolbox matcher.

DC asks that a network trained on the synthetic set takes the same steps as one trained on the real
set. It cannot unroll whole trainings, so it matches one step at a time: for a network ``theta`` and
each class ``c``, the gradient of the loss on a real batch of ``c`` and the gradient on the
synthetic images of ``c`` should point the same way, layer by layer and output channel by output
channel. The network itself moves along: a fresh random network every ``outer_loop`` image updates,
trained on the synthetic set between two updates. With DSA (Zhao & Bilen, ICML 2021) the real and
the synthetic batch of a class are augmented by one and the same draw (``run.augment_pair``).

How it maps onto ddtoolbox's loop (docs/plugins.md), one ddtoolbox iteration per image update:

* ``loss_terms`` (step ``k`` of ``outer_loop``; a fresh network at ``k = 0``): the per-channel
  distances ``1 - cos(g_real, g_syn)`` of every class and layer, as ``num``; ``den`` sums to 1, so
  the core's reduction is DC's sum and the paper's image lr (0.1) is the default;
* the core steps the images (SGD, momentum 0.5, as DC);
* ``after_update``: unless ``k`` was the last step, ``inner_loop`` epochs of training the network on
  the updated (detached, augmented) synthetic set, SGD ``--dc-lr-net``.

So DC's ``Iteration = 1000`` outer iterations are ``--iterations 1000 x outer_loop`` here
(IPC 10: 10000). The network, its optimiser and the step within the outer loop are checkpointed,
so ``--resume`` continues bit for bit. The student's loss is ``run.inner_loss``: a plugin on
``on_inner_loss`` (label smoothing) changes both the matched gradients and the inner training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ddtoolbox import Matcher, UsageError, hookimpl
from ddtoolbox.options import Settings, option, positive_float, positive_int

__version__ = "0.1.0"
__all__ = ["DC", "DCOptions", "LOOPS", "gradient_terms", "layer_distance"]

#: DC's (outer_loop, inner_loop) by images per class, as its authors' code sets them
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
#: DC's epsilon in the cosine's denominator
EPS = 1e-6


@dataclass(kw_only=True)
class DCOptions(Settings):
    """DC's ``distill`` options (prefixed with the plugin's name: all plugins share one command line)."""

    dc_outer_loop: int | None = option(None, "image updates per fresh network (default by IPC as DC: 1, 10, ..., 50 "
                                             "for IPC 1, 10, ..., 50)", metavar="N", type=positive_int)
    dc_inner_loop: int | None = option(None, "epochs of training the network on the synthetic set between two "
                                             "updates (default by IPC as DC: IPC 1: 1, 10: 50, 50: 10)",
                                       metavar="N", type=positive_int)
    dc_batch_real: int = option(256, "real images per class in each gradient (default 256)", metavar="N",
                                type=positive_int)
    dc_batch_train: int = option(256, "synthetic images per step of the network's training (default 256)",
                                 metavar="N", type=positive_int)
    dc_lr_net: float = option(0.01, "SGD lr of the network's training on the synthetic set (default 0.01)",
                              type=positive_float)


# ---------------------------------------------------------------------------- the computation


def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """DC's distance of one layer's two gradients, per output channel: ``1 - cos`` of the rows.

    A conv weight ``(out, in, h, w)`` becomes ``out`` rows of ``in*h*w``, a linear weight is its own
    rows. Biases and normalisation parameters (1-D) carry no direction per channel and are left
    out, as in the paper (an empty tensor). Returns one term per output channel.
    """
    if g_real.dim() == 1:
        return g_real.new_zeros(0)
    real, syn = g_real.reshape(g_real.shape[0], -1), g_syn.reshape(g_syn.shape[0], -1)
    return 1 - (real * syn).sum(-1) / (real.norm(dim=-1) * syn.norm(dim=-1) + EPS)


def gradient_terms(net: torch.nn.Module, loss_fn: Callable, real_by_class: Sequence[torch.Tensor],
                   syn_by_class: Sequence[torch.Tensor], real_targets: Sequence[torch.Tensor],
                   syn_targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every class's per-layer, per-channel gradient distances, concatenated (1-D).

    The real gradients are constants; the synthetic ones keep their graph (``create_graph``), so the
    result is differentiable in the synthetic images (a second-order derivative through the network).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    terms = []
    for real, syn, t_real, t_syn in zip(real_by_class, syn_by_class, real_targets, syn_targets):
        g_real = torch.autograd.grad(loss_fn(net(real), t_real), params)
        g_syn = torch.autograd.grad(loss_fn(net(syn), t_syn), params, create_graph=True)
        terms += [layer_distance(r.detach(), s) for r, s in zip(g_real, g_syn)]
    return torch.cat(terms)


# ---------------------------------------------------------------------------- the matcher


class DC(Matcher):
    """Dataset Condensation: match per-class gradients of real and synthetic batches, layer by layer."""

    name = "dc"
    description = "Dataset Condensation (Zhao et al., 2021): per-class gradient matching with siamese DSA; no buffer"
    needs_buffer = False
    # The paper's image lr, for the sum of the distances (see loss_terms: den sums to 1).
    defaults = {"lr_img": 0.1}
    # Nothing is unrolled and no student lr is learned. (The saved lr, --lr-teacher or 0.01, is the
    # lr 'ddtool eval' trains with: DC's lr_net.)
    unused = ("syn_steps", "expert_epochs", "min_start_epoch", "max_start_epoch", "lr_lr", "batch_syn", "unroll")

    def __init__(self, ctx):
        super().__init__(ctx)
        if self.options is None:
            self.options = DCOptions()
        o, ipc = self.options, self.config.ipc
        if (o.dc_outer_loop is None or o.dc_inner_loop is None) and ipc not in LOOPS:
            raise UsageError(f"DC sets its loops only for IPC {', '.join(map(str, LOOPS))}; for --ipc {ipc} give "
                             f"--dc-outer-loop and --dc-inner-loop (e.g. 10 and 50)")
        default_outer, default_inner = LOOPS.get(ipc, (None, None))
        self.outer_loop = o.dc_outer_loop or default_outer
        self.inner_loop = o.dc_inner_loop or default_inner
        self.step = 0               # which of the outer loop's image updates comes next
        self.net = None

    def start(self, run) -> None:
        classes = run.info.num_classes
        self.real_index = [self.train_set.class_indices(c) for c in range(classes)]
        self.syn_index = [torch.nonzero(run.labels == c).flatten() for c in range(classes)]
        empty = [c for c in range(classes) if len(self.real_index[c]) == 0]
        if empty:
            raise UsageError(f"--matcher dc needs real images of every class; dataset '{run.info.name}' has none of "
                             f"class {empty[0]}")

    def real_batch(self, c: int) -> torch.Tensor:
        index = self.real_index[c]
        pick = index[torch.randperm(len(index))[:self.options.dc_batch_real]]
        return self.train_set.images[pick].to(self.device)

    def loss_terms(self, run) -> tuple[torch.Tensor, torch.Tensor]:
        if self.step == 0 or self.net is None:
            self.net = self.make_model()         # a fresh random network, drawn from the seeded global generator
            self.net.train()
        real, syn, real_t, syn_t = [], [], [], []
        for c, index in enumerate(self.syn_index):
            real_c, syn_c, _ = run.augment_pair(self.real_batch(c), run.images[index])
            real.append(real_c)
            syn.append(syn_c)
            real_t.append(torch.full((len(real_c),), c, dtype=torch.long, device=self.device))
            syn_t.append(run.targets[index])
        num = gradient_terms(self.net, run.inner_loss or self.inner_loss, real, syn, real_t, syn_t)
        run.segment = {"dc_step": self.step}
        # den sums to 1: the core's sum(w * num) / sum(w * den) is then DC's sum of distances when no
        # plugin weighs the terms (and n times the mean of the kept ones when one does).
        return num, torch.full_like(num, 1.0 / num.numel())

    def after_update(self, run) -> None:
        last = self.step == self.outer_loop - 1
        self.step = 0 if last else self.step + 1
        if last:
            return                                # DC trains no network after the outer loop's last update
        images, targets = run.images.detach(), run.targets.detach()
        loss_fn = run.inner_loss or self.inner_loss
        opt = torch.optim.SGD(self.net.parameters(), lr=self.options.dc_lr_net)
        batch = self.options.dc_batch_train
        for _ in range(self.inner_loop):
            order = torch.randperm(len(images), device="cpu").to(self.device)
            for start in range(0, len(images), batch):
                idx = order[start:start + batch]
                x = images[idx] if self.augment is None else self.augment(images[idx])[0]
                opt.zero_grad(set_to_none=True)
                loss_fn(self.net(x), targets[idx]).backward()
                opt.step()

    def state_dict(self) -> dict:
        state = {"step": self.step}
        if self.net is not None:
            state["net"] = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        if "net" in state:
            self.net = self.make_model()
            self.net.load_state_dict(state["net"])
            self.net.train()


# ---------------------------------------------------------------------------- hooks


@hookimpl
def register_matchers(register):
    register(DC)


@hookimpl
def add_options(command):
    return DCOptions if command == "distill" else None
