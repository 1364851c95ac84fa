"""Typed settings of the three main jobs: ``buffer``, ``distill`` and ``eval``.

Each is a dataclass whose fields are the command's options (see :mod:`ddtoolbox.options`), checked
once when the object is made. The command line is generated from these classes, presets fill them,
and Python code makes them directly::

    from ddtoolbox import DistillConfig, distill
    run = distill(DistillConfig(buffer="runs/buffer", out="runs/mtt", ipc=10, iterations=500))

Plugin options are not fields here: each plugin declares its own (``add_options`` hook), and
:func:`ddtoolbox.distill` takes them as ``options={"cpd_alpha": 0.25}``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .augment import CROP_RATIO, CROP_RATIO_RANGE
from .errors import UsageError
from .parallel import BACKENDS, DEFAULT_TIMEOUT, MODES
from .options import (Settings, learning_rate, non_negative_int, number, option, positive_float, positive_int,
                      positive_learning_rate, seed)
from .unroll import UNROLL_MODES

#: the evaluation protocols ``ddtool eval --protocol`` accepts, with what each trains on
PROTOCOLS = {
    "auto": "soft when the synthetic set has learned labels, else standard",
    "standard": "cross-entropy on the hard labels (MTT, FTD, random real images)",
    "soft": "soft cross-entropy on the set's learned soft labels (DATM, EDF)",
    "kd": "KL to a frozen teacher's outputs on the same augmented batch (SRe2L/RDED; needs --teacher)",
    "soft-no-teacher": "soft labels without the teacher in the loop (EDF Table 10): the teacher's outputs on "
                       "the un-augmented images computed once (--teacher), or the learned labels",
}

COMMON = "common"
NETWORK = "network"
DATA = "images (recorded with buffers and synthetic sets)"


def crop_ratio(value) -> float:
    """``--dsa-crop-ratio``: a number in :data:`ddtoolbox.augment.CROP_RATIO_RANGE`."""
    v = number(value)
    low, high = CROP_RATIO_RANGE
    if not low <= v <= high:   # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], e.g. 0.125 (MTT) or 0.25 (EDF's "
                                         f"distillation), got {value}")
    return v


@dataclass(kw_only=True)
class CommonSettings(Settings):
    """What every command takes."""

    seed: int = option(0, "seed for every random draw (default 0)", type=seed, group=COMMON)
    device: str = option("auto", "auto (CUDA when available), cpu or cuda[:N]", group=COMMON)
    data_root: str | None = option(None, "folder holding the dataset (else $DDTOOL_DATA, then system locations)",
                                   group=COMMON)
    quiet: bool = option(False, "no progress bars", group=COMMON)
    threads: int | None = option(None, "CPU threads for torch (default: one per core; on a CPU shared with other "
                                       "jobs 1 is often fastest)", type=positive_int, group=COMMON)
    dist_backend: str = option("auto", "under torchrun: the process group's backend, auto (NCCL for CUDA, gloo for "
                                       "the CPU), gloo or nccl", choices=BACKENDS, group=COMMON)
    dist_timeout: float = option(DEFAULT_TIMEOUT, "under torchrun: seconds a rank waits for the others before it "
                                                  "stops with an error (default 600)", type=positive_float,
                                 metavar="S", group=COMMON)


@dataclass(kw_only=True)
class NetworkSettings(Settings):
    """Options of the network a command builds; ``None`` means the model's own default."""

    width: int | None = option(None, "channels: ConvNet's (default 128), or the base width of ResNet18/ResNet18_AP "
                                     "(64), VGG11 (64) and AlexNet (128)", type=positive_int, group=NETWORK)
    depth: int | None = option(None, "ConvNet blocks (ConvNet family only; default 3, or the D in ConvNetD4/5)",
                               type=positive_int, group=NETWORK)
    norm: str | None = option(None, "instancenorm, batchnorm or none (layernorm: ConvNet only); default the "
                                    "model's own: instancenorm, AlexNet none", group=NETWORK)
    pooling: str | None = option(None, "ConvNet only: avgpool (default), maxpool or none", group=NETWORK)


@dataclass(kw_only=True)
class ImageSettings(Settings):
    """How the images look to the networks, shared by ``buffer``, ``distill`` and ``eval``."""

    zca: bool = option(False, "ZCA-whiten the images after normalising them (Kornia's ZCAWhitening, eps 0.1, "
                              "fitted on the training split, applied to training and test images), as MTT/DATM do "
                              "for CIFAR; distill and eval refuse a buffer or synthetic set made otherwise",
                       group=DATA, off_flag="--no-zca")
    dsa_crop_ratio: float = option(CROP_RATIO, "DSA crop: translations of up to int(side * R + 0.5) pixels, R in "
                                               "[0, 0.5] (default 0.125 as MTT/DATM; EDF distils and evaluates "
                                               "with 0.25)", metavar="R", type=crop_ratio, group=DATA)


@dataclass(kw_only=True)
class CompileSettings(Settings):
    """``--compile`` (see :mod:`ddtoolbox.compiled`), for the commands that train networks first-order."""

    compile: bool = option(False, "train networks with torch.compile (experts, evaluation and full-data training, not "
                                  "the distillation unroll): about 1.5x faster epochs on the CPU after 10-100 s of "
                                  "compiling per process, cached for later runs; needs a C++ compiler; recorded with "
                                  "the results (see docs/compile.md)", group=NETWORK)


# ---------------------------------------------------------------------------- buffer


@dataclass(kw_only=True)
class BufferConfig(CompileSettings, ImageSettings, NetworkSettings, CommonSettings):
    """``ddtool buffer``: train expert networks and save their trajectories."""

    out: str = option(help="buffer folder to create")
    dataset: str = option("fashion-mnist", "dataset name (default fashion-mnist)")
    model: str = option("ConvNet", "architecture (case-insensitive; see 'ddtool plugins'); default ConvNet",
                        metavar="NAME", group=NETWORK)
    num_experts: int = option(5, "experts to train (default 5)", type=positive_int)
    train_epochs: int = option(50, "epochs per expert (default 50, MTT; DATM/EDF use 100)",
                               flags=("--train-epochs", "--epochs"), type=positive_int)
    lr: float = option(0.01, "expert SGD learning rate (default 0.01)", type=positive_learning_rate)
    batch_size: int = option(256, "expert batch size (default 256)", type=positive_int)
    train_subset: int | None = option(None, "use N random training images per class", metavar="N",
                                      type=positive_int)
    trainer: str = option("sgd", "expert trainer (default sgd; see 'ddtool plugins')")
    no_dsa: bool = option(False, "train experts without augmentation")
    resume: bool = option(False, "add the missing experts to an existing buffer")


# ---------------------------------------------------------------------------- distill


DISTILL = "distillation (defaults: MTT's published settings)"
RESUME = "checkpoints, resume and divergence"
#: settings that may differ when a run is resumed: how it runs, not what it computes (a run that began
#: on a GPU may finish on the CPU, at float rounding from where it would have been)
RUNTIME_FIELDS = ("quiet", "threads", "device", "data_root", "dist_backend", "dist_timeout", "checkpoint_every",
                  "checkpoint_minutes", "resume", "overwrite", "no_report")
EVAL_PROTOCOL = "evaluation protocol (fresh ConvNets, SGD momentum 0.9, wd 5e-4, DSA)"
#: what ``ddtool eval --accuracy`` reports per network; only the first is the standard protocol
ACCURACIES = ("final", "max-over-checkpoints")
#: epochs between the tests of ``--accuracy max-over-checkpoints`` (DD-Ranking's test interval)
CHECKPOINT_EPOCHS = 20


@dataclass(kw_only=True)
class DistillConfig(CompileSettings, ImageSettings, NetworkSettings, CommonSettings):
    """``ddtool distill``: every setting of a distillation run but the plugins' own."""

    out: str = option(help="output folder for synthetic.pt, synthetic.png, metrics.json", group=DISTILL)
    buffer: str | None = option(None, "folder of expert trajectories from 'ddtool buffer' (trajectory matchers)",
                                group=DISTILL)
    dataset: str = option("fashion-mnist", "dataset name (default fashion-mnist)", group=DISTILL)
    ipc: int = option(1, "synthetic images per class (default 1)", type=positive_int, group=DISTILL)
    matcher: str = option("mtt", "matcher (default mtt; see 'ddtool plugins')", group=DISTILL)
    model: str | None = option(None, "architecture: with a buffer, a check that the experts are this one (and "
                                     "--width etc. checks of their options); without, the network a matcher builds "
                                     "(default ConvNet)", metavar="NAME", group=NETWORK)
    iterations: int = option(5000, "outer iterations (default 5000)", type=non_negative_int, group=DISTILL)
    syn_steps: int = option(20, "student steps per iteration (default 20)", type=positive_int, group=DISTILL)
    expert_epochs: int = option(3, "expert epochs to match (default 3)", type=positive_int, group=DISTILL)
    min_start_epoch: int = option(0, "lowest start epoch (default 0)", type=non_negative_int, group=DISTILL)
    max_start_epoch: int = option(25, "start epochs are drawn below this (default 25)", type=positive_int,
                                  group=DISTILL)
    lr_img: float = option(1000.0, "image learning rate (default 1000)", type=learning_rate, group=DISTILL)
    lr_lr: float = option(1e-5, "learning rate of the learned student lr (default 1e-5)", type=learning_rate,
                          group=DISTILL)
    lr_y: float = option(2.0, "label learning rate, for matchers with learned labels (default 2)",
                         type=learning_rate, group=DISTILL)
    lr_teacher: float | None = option(None, "initial student lr (default: the experts' lr)",
                                      type=positive_learning_rate, group=DISTILL)
    batch_syn: int | None = option(None, "synthetic images per student step (default all)", type=positive_int,
                                   group=DISTILL)
    no_dsa: bool = option(False, "no differentiable augmentation", group=DISTILL)
    unroll: str = option("auto", "full keeps every student step's graph (fastest); checkpointed keeps only the step "
                                 "parameters and recomputes one step at a time in the backward pass (exact, memory "
                                 "flat in --syn-steps, ~1.5x the compute); auto (default) picks full where it fits "
                                 "in memory", choices=UNROLL_MODES, group=DISTILL)
    parallel: str = option("auto", "under torchrun: batch splits each student step's synthetic batch over the ranks "
                                   "(the same result as one process); segments gives each rank its own expert "
                                   "segment and averages their gradients (a larger outer batch: a different "
                                   "algorithm); auto (default): batch under torchrun, none otherwise",
                           choices=MODES, group=DISTILL)
    tf32: bool = option(False, "allow TF32 matmuls/convolutions on Ampere+ GPUs (faster, ~1e-3 relative precision)",
                        group=DISTILL)
    eval_every: int = option(0, "evaluate every N iterations and at the end (0: never)", type=non_negative_int,
                             group=DISTILL)
    snapshot_every: int | None = option(None, "save the synthetic images as snapshots/synthetic_itNNNNNN.png "
                                              "before the first iteration and every N iterations, for the run "
                                              "report (default: 10 over the run; 0: none)",
                                        metavar="N", type=non_negative_int, group=DISTILL)
    eval_runs: int = option(3, "fresh networks to train and test (default 3)", type=positive_int,
                            group=EVAL_PROTOCOL)
    eval_epochs: int = option(1000, "training epochs per network (default 1000)", type=positive_int,
                              group=EVAL_PROTOCOL)
    eval_batch: int = option(256, "training batch (default 256)", type=positive_int, group=EVAL_PROTOCOL)
    checkpoint_every: int = option(100, "write OUT/checkpoint.pt every N iterations (and at least every "
                                        "--checkpoint-minutes; 0: only when stopped by a signal or divergence)",
                                   type=non_negative_int, metavar="N", group=RESUME)
    checkpoint_minutes: float = option(10.0, "write a checkpoint at least this often, in minutes (default 10)",
                                       type=positive_float, metavar="MIN", group=RESUME)
    resume: bool = option(False, "continue the run in --out from its checkpoint.pt; its settings come from the "
                                 "checkpoint (a flag that contradicts them is refused; how it runs, such as --threads or "
                                 "--device, may change)", group=RESUME)
    overwrite: bool = option(False, "replace a finished result in --out (default: refuse)", group=RESUME)
    no_report: bool = option(False, "do not write OUT/report.html at the end (see 'ddtool report'); a resumed run "
                                    "keeps this choice. Python's distill() writes no report either way",
                             group=RESUME)
    on_divergence: str = option("stop", "when an update makes the loss, images, lr or labels non-finite or the "
                                        "pixels leave a sane range: stop (exit 3, the last good state kept as the "
                                        "checkpoint) or skip (drop that update, count it in metrics.json)",
                                choices=("stop", "skip"), group=RESUME)

    def check(self) -> None:
        if not self.min_start_epoch < self.max_start_epoch:
            raise UsageError(f"need --min-start-epoch < --max-start-epoch (got {self.min_start_epoch}, "
                             f"{self.max_start_epoch})")
        if not str(self.out).strip():
            raise UsageError("--out must name a folder")

    @property
    def snapshot_interval(self) -> int:
        """Iterations between image snapshots (0: none); by default ten over the run."""
        if self.snapshot_every is not None:
            return self.snapshot_every
        return -(-self.iterations // 10) if self.iterations > 0 else 0


# ---------------------------------------------------------------------------- eval


@dataclass(kw_only=True)
class EvalSettings(CompileSettings, ImageSettings, NetworkSettings, CommonSettings):
    """``ddtool eval``: train fresh networks on a synthetic set (or random real images) and test them."""

    synthetic: str | None = option(None, "synthetic.pt written by 'ddtool distill'")
    random_ipc: int | None = option(None, "evaluate N random real images per class instead", metavar="N",
                                    type=positive_int)
    dataset: str | None = option(None, "dataset (default: the synthetic set's)")
    lr: float | None = option(None, "training lr (default: the learned lr, or 0.01 for random)",
                              type=positive_learning_rate)
    no_dsa: bool = option(False, "train without augmentation")
    protocol: str = option("auto", "what the student minimises: auto (default: soft if the set has learned labels, "
                                   "else standard), standard, soft, kd (needs --teacher), soft-no-teacher",
                           choices=tuple(PROTOCOLS))
    teacher: str | None = option(None, "teacher network for kd / soft-no-teacher, from 'ddtool train-full "
                                       "--save-model FILE'", metavar="FILE")
    temperature: float | None = option(None, "KD temperature (kd only; default 4: RDED's; SRe2L uses 3)",
                                       type=positive_float)
    full_results: str | None = option(None, "full-data accuracies to compute recovery ratios from (default "
                                            "$DDTOOL_HOME/full-data.json, else ~/.cache/ddtoolbox/full-data.json)",
                                      metavar="FILE")
    json: str | None = option(None, "also write the result to this JSON file (see docs/evaluation.md)")
    eval_runs: int = option(5, "fresh networks to train and test (default 5)", flags=("--eval-runs", "--runs"),
                            type=positive_int, group=EVAL_PROTOCOL)
    eval_epochs: int = option(1000, "training epochs per network (default 1000)",
                              flags=("--eval-epochs", "--epochs"), type=positive_int, group=EVAL_PROTOCOL)
    eval_batch: int = option(256, "training batch (default 256)", type=positive_int, group=EVAL_PROTOCOL)
    model: list[str] = option([], "one or more architectures, e.g. --model ConvNet VGG11 ResNet18 (case-insensitive; "
                                  "see 'ddtool plugins'); default: the synthetic set's, or ConvNet. One result per "
                                  "model", several=True, metavar="NAME", group=NETWORK)
    accuracy: str = option("final", "final (default): each network's test accuracy after its last epoch; "
                                    "max-over-checkpoints: the best of a test every 20 epochs (--test-every) and "
                                    "the last, as MTT and DD-Ranking report (chosen on the test set, so optimistic; "
                                    "the output marks it and gives the final epoch beside it)",
                           choices=ACCURACIES, group=EVAL_PROTOCOL)
    test_every: int | None = option(None, f"epochs between the tests of --accuracy max-over-checkpoints (default "
                                          f"{CHECKPOINT_EPOCHS}, DD-Ranking's); each test passes over the whole test "
                                          f"set, so a larger N is cheaper on a CPU", metavar="N", type=positive_int,
                                    group=EVAL_PROTOCOL)
    scores: bool = option(False, "DD-Ranking's Label- and Augmentation-Robust Scores (LRS, ARS) of --synthetic: trains "
                                 "it and random real images with hard and soft labels, with and without DSA (needs "
                                 "--teacher and a stored full-data accuracy; see docs/coresets.md)")

    def check(self) -> None:
        if (self.synthetic is None) == (self.random_ipc is None):
            raise UsageError("give exactly one of --synthetic FILE or --random-ipc N")
        if self.random_ipc is not None and not self.dataset:
            raise UsageError("--random-ipc needs --dataset")
        if self.test_every is not None and self.accuracy != "max-over-checkpoints":
            raise UsageError("--test-every sets the tests of --accuracy max-over-checkpoints; add that, or drop "
                             "--test-every")

    @property
    def checkpoint_epochs(self) -> int:
        """Epochs between the tests of max-over-checkpoints; 0 in the final mode (no tests along the way)."""
        if self.accuracy != "max-over-checkpoints":
            return 0
        return self.test_every or CHECKPOINT_EPOCHS


# ---------------------------------------------------------------------------- train-full


@dataclass(kw_only=True)
class TrainFullSettings(CompileSettings, ImageSettings, NetworkSettings, CommonSettings):
    """``ddtool train-full``: the full-data accuracy (recovery ratios) and KD teachers."""

    dataset: str = option("fashion-mnist", "dataset name (default fashion-mnist)")
    model: str = option("ConvNet", "architecture (case-insensitive; see 'ddtool plugins'); default ConvNet",
                        metavar="NAME", group=NETWORK)
    train_epochs: int = option(50, "training epochs (default 50)", flags=("--epochs",), type=positive_int)
    lr: float = option(0.01, "SGD learning rate (default 0.01)", type=positive_learning_rate)
    batch_size: int = option(256, "batch size (default 256)", type=positive_int)
    runs: int = option(1, "networks to train and test (default 1)", type=positive_int)
    no_dsa: bool = option(False, "train without augmentation")
    save_model: str | None = option(None, "save the first network (a teacher for 'ddtool eval --protocol kd "
                                          "--teacher FILE')", metavar="FILE")
    full_results: str | None = option(None, "JSON store to add the accuracy to (default $DDTOOL_HOME/full-data.json, "
                                            "else ~/.cache/ddtoolbox/full-data.json)", metavar="FILE")
    json: str | None = option(None, "also write the result to this JSON file")
