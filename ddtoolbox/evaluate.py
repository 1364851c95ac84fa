"""Evaluation protocols: how good is a synthetic set at training a fresh network?

The standard protocol (MTT/DATM/EDF): a freshly initialised network, SGD with momentum 0.9 and
weight decay 5e-4 at the learned learning rate, one x0.1 decay at the midpoint, DSA on every
training batch, test once at the end; mean and standard deviation over several networks. Each
network draws its own initialisation (and, for the random baseline, its own random real images),
so the spread measures what a user would see from one run to the next.

Protocols (``ddtool eval --protocol``; everything but the loss is the standard protocol above, so
results differ only in what the student is trained to match):

* ``standard``: cross-entropy on the hard class labels (MTT, FTD, random real images).
* ``soft``: soft cross-entropy on the synthetic set's *learned* soft labels (DATM, EDF); tested with
  hard labels like every protocol.
* ``kd``: knowledge distillation as SRe2L/RDED evaluate: a frozen teacher trained on the real data
  (``ddtool train-full --save-model``) sees the *same augmented batch* as the student, and the
  student minimises ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (batch mean).
* ``soft-no-teacher``: EDF's Table 10: soft labels kept, teacher dropped from the training loop. The
  soft labels are the teacher's outputs on the un-augmented images, computed once before training
  (the "relabel" step of SRe2L/RDED), or the set's learned labels when no teacher is given; the
  loss is the soft cross-entropy of ``soft``.
* ``auto`` (default): ``soft`` when the set has learned labels, else ``standard``.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import compiled, parallel
from .config import PROTOCOLS, EvalSettings, TrainFullSettings
from .errors import Diverged, UsageError
from .finite import first_non_finite, require_finite_accuracy, require_finite_network
from .losses import DEFAULT_TEMPERATURE, accuracy, kd_loss, soft_cross_entropy
from .models import canonical_model_name, create_model, model_options
from .runtime import honours_threads


def max_mark(every: int) -> str:
    """How a line of results says its accuracies are maxima over checkpoints, not the standard final ones."""
    return f" [MAX over checkpoints every {every} epochs, picked on the test set: not the final accuracy]"


@dataclass
class Protocol:
    """What the student minimises; see the module docstring.

    :param name: ``standard``, ``soft``, ``kd`` or ``soft-no-teacher`` (resolved, never ``auto``).
    :param teacher: the frozen teacher (``kd``; ``soft-no-teacher`` when relabelling).
    :param temperature: the KD temperature.
    """

    name: str = "standard"
    teacher: torch.nn.Module | None = None
    temperature: float = DEFAULT_TEMPERATURE

    def __post_init__(self):
        if self.name not in PROTOCOLS or self.name == "auto":
            raise UsageError(f"unknown protocol '{self.name}'; choose one of {', '.join(PROTOCOLS)}")
        if self.name == "kd" and self.teacher is None:
            raise UsageError("--protocol kd needs --teacher FILE (a network from 'ddtool train-full --save-model')")
        if not self.temperature > 0:
            raise UsageError(f"--temperature must be positive (got {self.temperature})")

    @property
    def soft_targets(self) -> bool:
        return self.name in ("soft", "soft-no-teacher")

    @torch.no_grad()
    def prepare_targets(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """The training targets: for ``soft-no-teacher`` with a teacher, its logits on ``images``."""
        if self.name != "soft-no-teacher" or self.teacher is None:
            return targets
        return torch.cat([self.teacher(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])

    def loss(self, net: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of ``net`` on one (augmented) batch ``x``."""
        logits = net(x)
        if self.name == "kd":
            with torch.no_grad():
                teacher_logits = self.teacher(x)   # the same augmented batch as the student's
            return kd_loss(logits, teacher_logits, self.temperature)
        if self.soft_targets:
            return soft_cross_entropy(logits, targets)
        return F.cross_entropy(logits, targets)


def resolve_protocol(name: str, has_learned_labels: bool, teacher=None,
                     temperature: float = DEFAULT_TEMPERATURE) -> Protocol:
    """Turn ``--protocol`` (and ``--teacher``) into a :class:`Protocol`, or say what is missing."""
    if name not in PROTOCOLS:
        raise UsageError(f"unknown protocol '{name}'; choose one of {', '.join(PROTOCOLS)}")
    if name == "auto":
        if teacher is not None:
            raise UsageError("--teacher is used by --protocol kd or soft-no-teacher; add one of them")
        name = "soft" if has_learned_labels else "standard"
    if name in ("standard", "soft") and teacher is not None:
        raise UsageError(f"--protocol {name} does not use a teacher; drop --teacher or use --protocol kd")
    if name == "soft" and not has_learned_labels:
        raise UsageError("--protocol soft needs a synthetic set with learned soft labels (e.g. from --matcher datm); "
                         "use --protocol standard, or kd / soft-no-teacher with --teacher")
    if name == "soft-no-teacher" and teacher is None and not has_learned_labels:
        raise UsageError("--protocol soft-no-teacher needs soft labels: give --teacher FILE to compute them, "
                         "or a synthetic set with learned labels")
    return Protocol(name, teacher, temperature)


@dataclass
class TrainRecipe:
    """How one network is trained on a (synthetic) set: the standard protocol's fixed choices."""

    model: str
    model_options: dict
    epochs: int = 1000
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: object = None         #: DSA or None
    test_every: int = 0            #: --accuracy max-over-checkpoints: also test every N epochs, keep the best
    compile: bool = False          #: train through torch.compile (:mod:`ddtoolbox.compiled`)


def train_on_set(recipe: TrainRecipe, images, targets, lr: float, info, device, soft: bool = False,
                 protocol: Protocol | None = None, progress: bool = False, desc: str = "train",
                 on_epoch=None) -> torch.nn.Module:
    """Train one fresh network on ``(images, targets)`` with the standard protocol.

    ``protocol`` picks the loss (default: ``soft`` if ``soft`` else ``standard``); ``targets`` are
    class indices for ``standard``/``kd`` and label logits for the soft protocols.
    """
    protocol = protocol or Protocol("soft" if soft else "standard")
    net = create_model(recipe.model, info.channels, info.num_classes, info.image_size, **recipe.model_options).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, recipe.epochs // 2)], gamma=0.1)  # 1 epoch: no decay
    images = images.to(device)
    targets = protocol.prepare_targets(images, targets.to(device))
    n = len(images)
    forward = compiled.training_module(net, recipe.compile)
    net.train()
    for epoch in tqdm(range(recipe.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        perm = torch.randperm(n, device=device)
        for b in range(0, n, recipe.batch_size):
            idx = perm[b:b + recipe.batch_size]
            x = images[idx]
            if recipe.augment is not None:
                x, _ = recipe.augment(x)
            loss = protocol.loss(forward, x, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch, net)
    return net


def summarise(accs: list[float]) -> dict:
    return {
        "mean": statistics.fmean(accs),
        "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "runs": accs,
    }


def network_seed(seed: int, r: int) -> int:
    """The seed of evaluation network ``r``: each network depends on ``(seed, r)`` alone."""
    return seed * 1000 + r


def evaluate_set(recipe: TrainRecipe, images, targets, lr: float, test_set, runs: int, device,
                 soft: bool = False, progress: bool = True, desc: str = "eval", sampler=None,
                 protocol: Protocol | None = None, seed: int | None = None, done: dict | None = None,
                 on_network=None) -> dict:
    """Train ``runs`` fresh networks and test each; ``sampler(run)`` may supply a new set per run.

    :param seed: seed network ``r`` with :func:`network_seed` (else it draws from the generator's
        current state), which makes every network's result independent of the others, so
    :param done: ``{r: accuracy}`` of networks finished before (skipped), and
    :param on_network: ``on_network(r, accuracy)`` after each network, let an interrupted
        evaluation resume where it stopped.
    """
    if runs < 1:
        raise UsageError(f"--runs must be at least 1 (got {runs})")
    if not lr > 0:
        raise UsageError(f"the evaluation learning rate must be positive (got {lr}); pass --lr")
    x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
    world = parallel.world() if seed is not None else 1   # unseeded networks depend on order: one process
    found = dict(done or {})
    bar = tqdm(total=runs, desc=desc, unit="net", disable=not (progress and parallel.is_main()), leave=False)
    # Under torchrun network r trains on rank r % world; it is seeded by (seed, r) alone, so the
    # accuracies are the same whatever the world size. Each round of `world` networks is gathered.
    for first in range(0, runs, world):
        r = first + (parallel.rank() if world > 1 else 0)
        result = None
        if r < runs and r not in found:
            if seed is not None:
                torch.manual_seed(network_seed(seed, r))
            if sampler is not None:
                images, targets = sampler(r)
            tested = []      # --accuracy max-over-checkpoints: the intermediate tests

            def test(epoch, net_):
                if recipe.test_every and (epoch + 1) % recipe.test_every == 0 and epoch + 1 < recipe.epochs:
                    tested.append(accuracy(net_, x_test, y_test))

            net = train_on_set(recipe, images, targets, lr, test_set.info, device, soft, protocol=protocol,
                               on_epoch=test)
            final = accuracy(net, x_test, y_test) if first_non_finite(net.state_dict()) is None else math.nan
            acc = max([final, *tested]) if math.isfinite(final) else final
            result = (r, acc if math.isfinite(acc) else None, final if recipe.test_every and math.isfinite(final) else None)
        results = parallel.gather_objects(result) if world > 1 else [result]
        for item in results:
            if item is not None and item[1] is None:    # every rank stops alike, and no accuracy is recorded
                raise Diverged(f"evaluation network {item[0] + 1} diverged at lr {lr:g}: its parameters or outputs "
                               f"became NaN or infinite, so its accuracy would mean nothing; no result was written; evaluate "
                               f"with a lower --lr")
        for item in results:
            if item is None:
                continue
            found[item[0]] = item[1] if item[2] is None else (item[1], item[2])
            if on_network is not None and parallel.is_main():
                on_network(*item)
        bar.update(min(world, runs - first))
    bar.close()
    accs = [found[r] for r in range(runs)]
    summary = summarise([a[0] if isinstance(a, tuple) else a for a in accs])
    if recipe.test_every and all(isinstance(a, tuple) for a in accs):
        summary["final"] = summarise([a[1] for a in accs])   # the same networks' last epoch, beside the maximum
    return summary


def train_full(*, train_set, test_set, model: str, model_options: dict, epochs: int, lr: float,
               batch_size: int, augment, runs: int, device, save_model=None, progress: bool = True,
               compile: bool = False) -> dict:
    """Full-data training (``ddtool train-full``): ``runs`` networks on all of ``train_set`` with the
    evaluation protocol's loop, each tested; optionally the first saved (a KD teacher)."""
    if runs < 1:
        raise UsageError(f"--runs must be at least 1 (got {runs})")
    recipe = TrainRecipe(model, model_options, epochs, batch_size, augment=augment, compile=compile)
    x_test, y_test = test_set.images.to(device), test_set.labels.to(device)
    accs = []
    for r in range(runs):
        net = train_on_set(recipe, train_set.images, train_set.labels, lr, train_set.info, device,
                           progress=progress, desc=f"train-full {r + 1}/{runs}")
        require_finite_network(net, f"full-data network {r + 1}", f"lower --lr (now {lr:g})")
        accs.append(accuracy(net, x_test, y_test))
        require_finite_accuracy(accs[-1], f"full-data network {r + 1}", f"lower --lr (now {lr:g})")
        if progress:
            print(f"network {r + 1}: test accuracy {accs[-1] * 100:.2f}%")
        if r == 0 and save_model:
            from .teacher import save_model as save

            save(save_model, net, model=canonical_model_name(model), model_options=model_options,
                 info=train_set.info, extra={"test_accuracy": accs[-1], "epochs": epochs, "lr": lr,
                                             "train_images": len(train_set)})
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return summarise(accs)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


SYNTHETIC_META = {
    "dataset": str, "model": str, "model_options": dict, "matcher": str,
    "ipc": (_positive_int, "a positive integer"),
}


def load_synthetic(path, info=None, dataset: str | None = None) -> dict:
    """Load and check a ``synthetic.pt`` written by ``ddtool distill`` (or ``select``), or a set in
    another format :mod:`ddtoolbox.formats` reads (MTT's triple, a Hugging Face parquet folder).

    With ``info`` (the dataset's :class:`DatasetInfo`) the images and labels must also fit it;
    ``dataset`` names the dataset of a foreign set that does not record it.
    """
    from .formats import kind_of, read_foreign
    from .io import check_fields, load_tensors

    fix = "point --synthetic at a synthetic.pt written by 'ddtool distill'"
    if kind_of(path) == "synthetic":
        record = load_tensors(path, "synthetic set", fix)
    else:
        record = read_foreign(path, dataset)
    where = f"synthetic set {path}"
    check_fields(record, {
        "images": (lambda t: isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point(),
                   "a float tensor (N, C, H, W)"),
        "labels": (lambda t: isinstance(t, torch.Tensor) and t.dim() == 1 and t.dtype == torch.long,
                   "a 1-D int64 tensor"),
        "lr": (lambda t: isinstance(t, torch.Tensor) and t.numel() == 1 and t.is_floating_point(), "one number"),
        "meta": dict,
    }, where, fix)
    check_fields(record["meta"], SYNTHETIC_META, f"{where}'s metadata", fix)
    record["images"] = record["images"].float()      # networks are float32; a float64 or half set still trains
    images, labels, lr = record["images"], record["labels"], record["lr"]
    if len(images) == 0 or len(labels) != len(images):
        raise UsageError(f"{where} holds {len(images)} images and {len(labels)} labels; {fix}")
    if not torch.isfinite(images).all():
        raise UsageError(f"{where} contains NaN or infinite pixels; re-run the distillation with a lower --lr-img")
    if not (torch.isfinite(lr).all() and lr.item() > 0):
        raise UsageError(f"{where} has the learning rate {lr.item()}, not a positive number; pass --lr or re-run "
                         f"the distillation")
    targets = record.get("targets")
    if targets is not None:
        if not (isinstance(targets, torch.Tensor) and targets.dim() == 2 and len(targets) == len(images)
                and targets.is_floating_point()):
            raise UsageError(f"{where} has soft labels that are not a float (N, classes) tensor; {fix}")
        if not torch.isfinite(targets).all():
            raise UsageError(f"{where} has soft labels that are not finite (NaN or inf); re-run the distillation "
                             f"with a lower --lr-y")
        record["targets"] = targets.float()
    if info is not None:
        check_fits(record, info, where)
    if record["meta"].get("published"):
        from .outputs import check_published

        check_published(path, "re-run the distillation (or wait for the one writing it)")
    return record


def check_fits(record: dict, info, where: str) -> None:
    """The set's images and labels must be the dataset's shape and classes."""
    images, labels = record["images"], record["labels"]
    shape = (info.channels, *info.image_size)
    if tuple(images.shape[1:]) != shape:
        raise UsageError(f"{where} holds {tuple(images.shape[1:])} images but {info.name} has {shape}; "
                         f"evaluate it on the dataset it was distilled from")
    if labels.min().item() < 0 or labels.max().item() >= info.num_classes:
        raise UsageError(f"{where} has labels outside 0..{info.num_classes - 1} of {info.name}")
    targets = record.get("targets")
    if targets is not None and targets.shape[1] != info.num_classes:
        raise UsageError(f"{where} has soft labels over {targets.shape[1]} classes, not {info.name}'s "
                         f"{info.num_classes}")


def format_result(result: dict) -> str:
    return f"{result['mean'] * 100:.2f} ± {result['std'] * 100:.2f}%"


def recovery_ratio(distilled_mean: float, full_mean: float | None) -> float | None:
    """Distilled accuracy over full-data accuracy (None when there is no full-data accuracy)."""
    if full_mean is None:
        return None
    if not full_mean > 0:
        raise UsageError(f"the stored full-data accuracy is {full_mean}; re-run 'ddtool train-full'")
    return distilled_mean / full_mean


def format_recovery(ratio: float | None) -> str:
    return "" if ratio is None else f"recovery {ratio * 100:.1f}%"


@honours_threads
def evaluate_synthetic(settings: EvalSettings, report=None) -> dict:
    """``ddtool eval``: train fresh networks on a synthetic set (or random real images), test them.

    :param report: called with one line per model as its result is ready (the CLI prints them).
    :return: what ``--json`` writes: the first model's result at the top level, every model's under
        ``results``.
    """
    from .augment import DSA
    from .data import check_same_images, image_record, load_dataset
    from .data.normalization import check_normalisation
    from .runtime import configure_backends, seed_everything
    from .full_results import lookup_full, store_path

    device = parallel.setup(settings.device, settings.dist_backend, settings.dist_timeout)
    configure_backends(device)      # cuDNN autotuning; TF32 off, as in distillation
    compiled.prepare(settings.compile, device)
    models = [canonical_model_name(m) for m in settings.model]   # unknown names fail before any work
    if settings.synthetic:
        record = load_synthetic(settings.synthetic, dataset=settings.dataset)
        meta = record["meta"]
        test_set = load_dataset(settings.dataset or meta["dataset"], "test", settings.data_root, zca=settings.zca)
        if test_set.info.name != meta["dataset"]:
            raise UsageError(f"{settings.synthetic} was distilled from '{meta['dataset']}', not "
                             f"'{settings.dataset}'; drop --dataset")
        check_fits(record, test_set.info, f"synthetic set {settings.synthetic}")
        check_same_images(test_set.info, meta, f"synthetic set {settings.synthetic}",
                          "distil a set from these images")
        check_normalisation(test_set.info, meta, f"synthetic set {settings.synthetic}",
                            "distil a set from these images")
        models = models or [meta["model"]]
        has_learned = "targets" in record
        lr = settings.lr or float(record["lr"])
        what = f"{settings.synthetic} ({meta['matcher']}, IPC {meta['ipc']})"
        own_model = canonical_model_name(meta["model"])
    else:
        train_set = load_dataset(settings.dataset, "train", settings.data_root, zca=settings.zca)
        test_set = load_dataset(settings.dataset, "test", settings.data_root, zca=settings.zca)
        check_same_images(test_set.info, image_record(train_set.info), f"the {test_set.info.name} train split",
                          f"prepare {test_set.info.name} again ('ddtool data prepare')")
        models = models or ["ConvNet"]
        has_learned, lr, own_model = False, settings.lr or 0.01, None
        what = f"random real images, IPC {settings.random_ipc} of {test_set.info.name}"
    teacher = None
    if settings.teacher:
        from .teacher import load_teacher

        teacher, _ = load_teacher(settings.teacher, test_set.info, device)
    protocol = resolve_protocol(settings.protocol, has_learned, teacher, settings.temperature or DEFAULT_TEMPERATURE)
    if settings.temperature is not None and protocol.name != "kd":
        raise UsageError(f"--temperature is used by --protocol kd only, not {protocol.name}")
    info = test_set.info
    options_all = [model_options(m, settings, meta["model_options"] if settings.synthetic and m == own_model else None)
                   for m in models]
    for model, options in zip(models, options_all):   # bad options or sizes fail before any training
        create_model(model, info.channels, info.num_classes, info.image_size, **options)
    full_path = store_path(settings.full_results)
    augment = None if settings.no_dsa else DSA(crop_ratio=settings.dsa_crop_ratio)
    progress_file = EvalProgress(settings)
    results = []
    for model, options in zip(models, options_all):
        seed_everything(settings.seed)
        recipe = TrainRecipe(model, options, settings.eval_epochs, settings.eval_batch, augment=augment,
                             test_every=settings.checkpoint_epochs,
                             compile=settings.compile)
        common = dict(progress=not settings.quiet, protocol=protocol, seed=settings.seed,
                      done=progress_file.done(model), on_network=progress_file.recorder(model))
        if settings.synthetic:
            targets = record["targets"] if protocol.soft_targets and teacher is None else record["labels"]
            result = evaluate_set(recipe, record["images"], targets, lr, test_set, settings.eval_runs, device,
                                  desc=f"eval {model}", **common)
        else:
            def sample(r):
                generator = torch.Generator().manual_seed(network_seed(settings.seed, r))
                return train_set.sample_per_class(settings.random_ipc, generator)

            result = evaluate_set(recipe, None, None, lr, test_set, settings.eval_runs, device,
                                  desc=f"eval random {model}", sampler=sample, **common)
        full = lookup_full(full_path, info.name, model, options, image_record(info))
        full_mean = full["mean"] if full else None
        ratio = recovery_ratio(result["mean"], full_mean)
        results.append({"model": model, "model_options": options, **result,
                        "full_accuracy": full_mean, "recovery": ratio})
        if report is not None and parallel.is_main():
            rec = f"  {format_recovery(ratio)} of full-data {full_mean * 100:.2f}%" if full else ""
            report(f"{what}: {format_result(result)} over {len(result['runs'])} {model} networks "
                   f"({protocol.name} protocol){rec}{max_mark(recipe.test_every) if recipe.test_every else ''}"
                   + (f"; the same networks' final epoch: {format_result(result['final'])}" if "final" in result else ""))
    progress_file.finish()
    first = results[0]
    return {
        "what": what, "model": first["model"], "model_options": first["model_options"],
        "mean": first["mean"], "std": first["std"], "runs": first["runs"],
        "final": first.get("final"),      # max-over-checkpoints only: the final epoch of the same networks
        "full_accuracy": first["full_accuracy"], "recovery": first["recovery"],
        "accuracy": settings.accuracy, "test_every": settings.checkpoint_epochs or None, "protocol": protocol.name,
        "temperature": protocol.temperature if protocol.name == "kd" else None,
        "teacher": str(settings.teacher) if settings.teacher else None, "dataset": info.name,
        "lr": lr, "epochs": settings.eval_epochs, "dsa_crop_ratio": None if settings.no_dsa else settings.dsa_crop_ratio,
        "compile": settings.compile,
        **image_record(info), "results": results,
    }


class EvalProgress:
    """The accuracies of finished networks, kept beside ``--json FILE`` (``FILE.partial``) while an
    evaluation runs, so running the same command again after an interruption skips them.

    The file records the settings and the synthetic set's checksum; anything else is never reused.
    """

    def __init__(self, settings: EvalSettings):
        self.path = None
        self.state = {"key": None, "done": {}}
        if not settings.json:
            return
        from .formats import set_digest
        from .outputs import check_file_writable

        target = check_file_writable(settings.json, option="--json")
        self.path = target.with_name(target.name + ".partial")
        ignored = ("quiet", "threads", "json", "data_root")
        key = {k: v for k, v in settings.as_dict().items() if k not in ignored}
        key["synthetic_sha256"] = set_digest(settings.synthetic) if settings.synthetic else None
        self.state["key"] = key
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("done"), dict):
                self.state["done"] = saved["done"]

    def done(self, model: str) -> dict:
        entries = self.state["done"].get(model, {})
        if not isinstance(entries, dict):
            return {}
        # max-over-checkpoints keeps [maximum, final epoch] per network, the final mode one accuracy
        return {int(r): (float(a[0]), float(a[1])) if isinstance(a, list) else float(a) for r, a in entries.items()}

    def recorder(self, model: str):
        if self.path is None:
            return None

        def record(r: int, accuracy_: float, final: float | None = None) -> None:
            self.state["done"].setdefault(model, {})[str(r)] = accuracy_ if final is None else [accuracy_, final]
            from .io import write_json

            write_json(self.path, self.state)

        return record

    def finish(self) -> None:
        if self.path is not None and parallel.is_main():
            self.path.unlink(missing_ok=True)


@honours_threads
def train_full_data(settings: TrainFullSettings, report=None) -> dict:
    """``ddtool train-full``: train on the whole training split, test, and store the accuracy.

    :return: the stored entry (accuracy, settings, versions).
    """
    from .augment import DSA
    from .data import image_record, load_dataset
    from .full_results import store_full, store_path
    from .runtime import configure_backends, resolve_device, seed_everything

    from .outputs import check_file_writable

    device = resolve_device(settings.device)
    configure_backends(device)      # cuDNN autotuning; TF32 off, as in distillation
    compiled.prepare(settings.compile, device)
    model = canonical_model_name(settings.model)
    options = model_options(model, settings)
    for path, option in ((settings.json, "--json"), (settings.save_model, "--save-model"),
                         (store_path(settings.full_results), "--full-results")):
        if path:
            check_file_writable(path, option=option)    # before hours of training, not after
    seed_everything(settings.seed)
    train_set = load_dataset(settings.dataset, "train", settings.data_root, zca=settings.zca)
    test_set = load_dataset(settings.dataset, "test", settings.data_root, zca=settings.zca)
    info = train_set.info
    create_model(model, info.channels, info.num_classes, info.image_size, **options)  # fail before training
    result = train_full(train_set=train_set, test_set=test_set, model=model, model_options=options,
                        epochs=settings.train_epochs, lr=settings.lr, batch_size=settings.batch_size,
                        augment=None if settings.no_dsa else DSA(crop_ratio=settings.dsa_crop_ratio),
                        runs=settings.runs, device=device,
                        save_model=settings.save_model, progress=not settings.quiet, compile=settings.compile)
    recorded = {"epochs": settings.train_epochs, "lr": settings.lr, "batch_size": settings.batch_size,
                "augmentation": "none" if settings.no_dsa else "dsa", "seed": settings.seed,
                "dsa_crop_ratio": None if settings.no_dsa else settings.dsa_crop_ratio,
                "train_images": len(train_set), "compile": settings.compile}
    path = store_path(settings.full_results)
    entry = store_full(path, info.name, model, options, result, recorded, image_record(info))
    if report is not None:
        report(f"full data ({info.name}, {len(train_set)} images): {format_result(result)} over "
               f"{len(result['runs'])} {model} networks; stored in {path}"
               + (f"; network saved to {settings.save_model}" if settings.save_model else ""))
    return entry
