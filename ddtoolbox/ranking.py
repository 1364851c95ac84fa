"""``ddtool eval --scores``: DD-Ranking's LRS and ARS of a set, from the accuracies they need.

The scores (:mod:`ddtoolbox.scores`) compare the set with random real images at the same IPC
under the same labels and augmentation, so a set cannot score well through its soft labels or
DSA alone. The accuracies, each over ``--runs`` networks seeded alike (network r of every
evaluation is one round):

===================  =============================================  ==============================
name                 what trains                                    used by
===================  =============================================  ==============================
``syn_hard``         the set, hard labels (standard), DSA           LRS (hlr); ARS of a hard set
``syn_soft``         the set, soft labels, DSA                      LRS (ior); ARS of a soft set
``random_soft``      random real images, soft labels, DSA           LRS (ior); ARS of a soft set
``random_hard``      random real images, hard labels, DSA           ARS of a hard set
``*_noaug``          the same without DSA                           ARS
full data            ``ddtool train-full``'s stored accuracy        LRS (hlr)
===================  =============================================  ==============================

Soft labels are the set's learned ones where it has them (DATM, EDF), and then random images get
the teacher's outputs on them, computed once (``soft-no-teacher``: DD-Ranking's static labels);
a set without learned labels and the random images both learn from the teacher on every
augmented batch (``kd``: DD-Ranking's teacher-in-the-loop mode). ARS uses the set's own kind of
label. Unlike DD-Ranking, the learning rates are not grid-searched: the set trains at its learned
lr, random images at 0.01 (or ``--lr`` for both), and every accuracy is the final one unless
``--accuracy max-over-checkpoints`` asks for DD-Ranking's maximum over tests (marked in the output).

With ``--json FILE`` each finished accuracy is kept in ``FILE.parts.json`` with the settings that
made it; running the same command again evaluates only what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import EvalSettings
from .errors import UsageError
from .evaluate import evaluate_synthetic, format_result, load_synthetic, max_mark
from .scores import LAMBDA, as_percentage_code_prints, augmentation_robust, label_robust

#: settings that do not change an accuracy (kept out of the reuse key)
_RUNTIME = ("quiet", "threads", "json", "data_root", "device", "dist_backend", "dist_timeout", "scores")
_NETWORK = ("width", "depth", "norm", "pooling")


def plan(learned: bool) -> dict:
    """``{name: (on the set?, protocol, teacher?, DSA?)}`` of the evaluations the scores need."""
    soft = "soft" if learned else "kd"
    random_soft = "soft-no-teacher" if learned else "kd"
    jobs = {"syn_hard": (True, "standard", False, True),
            "syn_soft": (True, soft, not learned, True),
            "random_soft": (False, random_soft, True, True)}
    if learned:
        jobs.update(syn_soft_noaug=(True, soft, False, False), random_soft_noaug=(False, random_soft, True, False))
    else:
        jobs.update(random_hard=(False, "standard", False, True), syn_hard_noaug=(True, "standard", False, False),
                    random_hard_noaug=(False, "standard", False, False))
    return jobs


def score_set(settings: EvalSettings, report=None) -> dict:
    """``ddtool eval --scores``: returns what ``--json`` writes (the set's own accuracy at the top)."""
    from .data import image_record, load_dataset
    from .full_results import lookup_full, store_path
    from .models import canonical_model_name, model_options
    from .formats import set_digest

    from . import parallel

    say = report if report is not None and parallel.is_main() else (lambda line: None)
    if not settings.synthetic:
        raise UsageError("--scores scores a set against random real images; give --synthetic FILE")
    if not settings.teacher:
        raise UsageError("--scores needs --teacher FILE (from 'ddtool train-full --save-model') to give random real "
                         "images soft labels, as DD-Ranking does")
    if settings.protocol != "auto":
        raise UsageError("--scores runs each evaluation under the protocol it needs; drop --protocol")
    if len(settings.model) > 1:
        raise UsageError("--scores scores one architecture at a time; give one --model")
    record = load_synthetic(settings.synthetic, dataset=settings.dataset)
    meta = record["meta"]
    learned = "targets" in record
    own = canonical_model_name(meta["model"])
    model = canonical_model_name(settings.model[0]) if settings.model else own
    options = model_options(model, settings, meta["model_options"] if model == own else None)
    test_set = load_dataset(settings.dataset or meta["dataset"], "test", settings.data_root, zca=settings.zca)
    full = lookup_full(store_path(settings.full_results), test_set.info.name, model, options, image_record(test_set.info))
    if full is None:
        flags = " ".join(f"--{k} {v}" for k, v in options.items() if k in _NETWORK and v is not None)
        raise UsageError(f"--scores needs the full-data accuracy of {model} on {test_set.info.name} with {options}; "
                         f"run 'ddtool train-full --dataset {test_set.info.name} --model {model} {flags}"
                         f"{' --zca' if settings.zca else ''}' first (with the same --full-results)")
    network = {k: options.get(k) for k in _NETWORK}
    if not model.startswith("ConvNet"):
        network.update(depth=None, pooling=None)
    parts_path = Path(f"{settings.json}.parts.json") if settings.json else None
    parts = _read_parts(parts_path)
    digest = set_digest(settings.synthetic)
    results = {}
    for name, (on_set, protocol, teacher, dsa) in plan(learned).items():
        sub = settings.replace(
            scores=False, json=None, model=[model], protocol=protocol, no_dsa=not dsa,
            teacher=settings.teacher if teacher else None,
            temperature=settings.temperature if protocol == "kd" else None,
            synthetic=settings.synthetic if on_set else None,
            random_ipc=None if on_set else int(meta["ipc"]),
            dataset=settings.dataset if on_set else test_set.info.name,
            **network)
        key = {k: v for k, v in sub.as_dict().items() if k not in _RUNTIME}
        key["synthetic_sha256"] = digest
        saved = parts.get(name)
        if isinstance(saved, dict) and saved.get("key") == json.loads(json.dumps(key)):
            results[name] = saved["result"]
            say(f"{name}: {format_result(saved['result'])} (kept from {parts_path})")
            continue
        result = evaluate_synthetic(sub, report=lambda line, n=name: say(f"{n}: {line}"))
        results[name] = {k: result[k] for k in ("mean", "std", "runs", "protocol", "lr", "what")}
        if parts_path is not None and parallel.is_main():    # under torchrun every rank holds the same result
            from .io import write_json

            parts[name] = {"key": key, "result": results[name]}
            write_json(parts_path, parts)
    return _summary(settings, meta, learned, full, results, say)


def _summary(settings, meta, learned, full, results, say) -> dict:
    full_hard = float(full["mean"])
    lrs_in = {"full_hard": full_hard, "syn_hard": results["syn_hard"]["runs"],
              "syn_soft": results["syn_soft"]["runs"], "random_soft": results["random_soft"]["runs"]}
    kind = "soft" if learned else "hard"
    ars_in = {"syn_aug": results[f"syn_{kind}"]["runs"], "random_aug": results[f"random_{kind}"]["runs"],
              "syn_noaug": results[f"syn_{kind}_noaug"]["runs"],
              "random_noaug": results[f"random_{kind}_noaug"]["runs"]}
    lrs = label_robust(**lrs_in)
    ars = augmentation_robust(**ars_in)
    theirs = {"LRS": as_percentage_code_prints(lrs, lrs_in), "ARS": as_percentage_code_prints(ars, ars_in)}
    marked = settings.accuracy != "final"
    for s, detail in ((lrs, f"hlr {lrs.parts['hlr']:+.4f}, ior {lrs.parts['ior']:+.4f}"),
                      (ars, f"{kind} labels; gap with DSA {ars.parts['gap_aug']:+.4f}, without "
                            f"{ars.parts['gap_noaug']:+.4f}")):
        say(f"{s.name} {s.mean:.4f} ± {s.std:.4f} over {len(s.rounds)} rounds ({detail}; accuracies as fractions, "
            f"lambda {LAMBDA}){max_mark(settings.checkpoint_epochs) if marked else ''}")
        say(f"  DD-Ranking's code, which feeds percentages into the same formula, would print: {theirs[s.name]}")
    if marked:
        say("  note: the full-data accuracy is the stored final one ('ddtool train-full' has no checkpoint maximum)")
    own = results["syn_soft" if learned else "syn_hard"]
    return {
        "what": own["what"], "mean": own["mean"], "std": own["std"], "runs": own["runs"],
        "protocol": own["protocol"], "lr": own["lr"], "accuracy": settings.accuracy,
        "test_every": settings.checkpoint_epochs or None,
        "full_accuracy": full_hard, "recovery": own["mean"] / full_hard if full_hard > 0 else None,
        "epochs": settings.eval_epochs, "dataset": meta["dataset"], "model": meta["model"],
        "scores": {"unit": "fractions", "LRS": lrs.as_dict(), "ARS": {**ars.as_dict(), "labels": kind},
                   "dd_ranking_code_would_print": theirs,
                   "accuracy": settings.accuracy + (" (MARKED: maximum over checkpoints, not the standard final "
                                                    "accuracy)" if marked else "")},
        "accuracies": results,
    }


def _read_parts(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        parts = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return parts if isinstance(parts, dict) else {}
