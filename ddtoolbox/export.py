"""``ddtool export``: a set in the formats others load, each read back by ``ddtool eval``.

* ``mtt``: MTT's ``images_best.pt`` / ``labels_best.pt`` / ``lr_best.pt`` (what the MTT family and
  DD-Ranking's ``compute_metrics(images, soft_labels, syn_lr)`` take): learned logits as the labels
  where the set has them, else the hard labels; plus ``ddtoolbox.json`` (metadata, hard labels).
* ``imagefolder``: one folder of PNGs per class (pixels clamped to [0, 1], 8-bit: for looking and
  for image-folder loaders; the exact set is the other formats).
* ``hf``: a Hugging Face dataset folder: ``data/train-00000-of-00001.parquet`` with ``image`` (PNG),
  ``label`` (class), ``pixels`` (the exact normalised float32 tensor, C x H x W flattened) and, where
  learned, ``soft_label`` (logits); ``ddtoolbox.json`` (metadata and the learned lr) beside it; and
  ``README.md``, a dataset card with the tags ``dataset-distillation`` and ``ipc-N``, the settings,
  the accuracies (from an ``eval.json``) and the provenance. Needs ``datasets`` (``pip install
  'ddtoolbox[hf]'``). ``--push REPO`` uploads the folder with ``huggingface_hub``.

Every export is published under a manifest like a run (:mod:`ddtoolbox.outputs`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import __version__
from .errors import UsageError
from .evaluate import load_synthetic

FORMATS = ("mtt", "imagefolder", "hf")
PARQUET = "data/train-00000-of-00001.parquet"


def find_set(run) -> Path:
    """``run``: a run folder (its ``synthetic.pt``) or a set file."""
    path = Path(run)
    if path.is_dir() and (path / "synthetic.pt").is_file():
        return path / "synthetic.pt"
    if path.is_file():
        return path
    raise UsageError(f"{path} is neither a run folder with synthetic.pt nor a set file; give the --out folder of "
                     f"'ddtool distill' or 'ddtool select'")


def find_eval(set_file: Path, given=None) -> dict | None:
    """The ``ddtool eval --json`` result to quote: ``given``, else ``eval.json`` in the run folder."""
    path = Path(given) if given else set_file.parent / "eval.json"
    if not path.is_file():
        if given:
            raise UsageError(f"--eval {path} does not exist; give a file written by 'ddtool eval --json'")
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--eval {path} is not readable JSON ({exc}); give a file written by 'ddtool eval --json'")
    return result if isinstance(result, dict) and "mean" in result else None


def info_of(meta: dict):
    from .data import DatasetInfo

    classes = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    return DatasetInfo(meta["dataset"], meta["channels"], tuple(meta["image_size"]), meta["num_classes"],
                       tuple(meta["mean"]), tuple(meta["std"]), tuple(classes))


def pixels_uint8(record: dict, meta: dict, data_root=None):
    """The images as (N, H, W[, C]) uint8 arrays in pixel space (ZCA undone where the set used it)."""
    from .data import denormalize, load_dataset

    images = record["images"]
    if meta.get("zca"):
        images = load_dataset(meta["dataset"], "train", data_root, zca=True).unwhiten(images)
    x = (denormalize(images, info_of(meta)).clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.permute(0, 2, 3, 1).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def _png(array) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _sidecar(record: dict, meta: dict, source: Path, evaluation) -> dict:
    return {"format": "ddtoolbox-export", "ddtoolbox_version": __version__, "lr": float(record["lr"]),
            "meta": {**{k: v for k, v in meta.items() if k != "published"},
                     "hard_labels": record["labels"].tolist()},
            "source": str(source), "evaluation": _accuracy_summary(evaluation)}


def _accuracy_summary(evaluation) -> dict | None:
    if not evaluation:
        return None
    keep = ("mean", "std", "runs", "protocol", "model", "epochs", "accuracy", "full_accuracy", "recovery")
    summary = {k: evaluation[k] for k in keep if k in evaluation}
    if isinstance(evaluation.get("scores"), dict):
        summary["scores"] = {k: evaluation["scores"][k].get("mean") for k in ("LRS", "ARS")
                             if isinstance(evaluation["scores"].get(k), dict)}
    return summary


def export_set(run, fmt: str, out, *, eval_file=None, overwrite: bool = False, push: str | None = None,
               data_root=None, report=None) -> Path:
    """Write the set of ``run`` to ``out`` in ``fmt``; returns ``out``."""
    from .io import atomic_write, write_json
    from .outputs import MANIFEST, OutputLock, check_writable, publish

    if fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt}; choose one of {', '.join(FORMATS)}")
    source = find_set(run)
    record = load_synthetic(source)
    meta = record["meta"]
    for key in ("channels", "image_size", "num_classes", "mean", "std"):
        if key not in meta:
            raise UsageError(f"{source} records no '{key}' (written by an old ddtoolbox?); distil it again to export it")
    evaluation = find_eval(source, eval_file)
    out = check_writable(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise UsageError(f"{out} already holds an export; pass --overwrite to replace it, or choose another --out")
    sidecar = _sidecar(record, meta, source, evaluation)
    files = {}
    if fmt == "mtt":
        labels = record.get("targets", record["labels"])
        files = {"images_best.pt": lambda p: _save(p, record["images"]),
                 "labels_best.pt": lambda p: _save(p, labels),
                 "lr_best.pt": lambda p: _save(p, record["lr"].reshape(())),
                 "ddtoolbox.json": lambda p: write_json(p, sidecar)}
    elif fmt == "imagefolder":
        pixels = pixels_uint8(record, meta, data_root)
        names = _folder_names(info_of(meta).class_names)
        counts: dict[int, int] = {}
        for i, c in enumerate(record["labels"].tolist()):
            k = counts[c] = counts.get(c, -1) + 1
            files[f"{names[c]}/{k:05d}.png"] = (lambda p, a=pixels[i]: _write_bytes(p, _png(a)))
        files["ddtoolbox.json"] = lambda p: write_json(p, sidecar)
    else:
        table = _hf_table(record, meta, data_root)
        card = dataset_card(meta, record, evaluation, source)
        files = {PARQUET: lambda p: _write_parquet(p, table),
                 "ddtoolbox.json": lambda p: write_json(p, sidecar),
                 "README.md": lambda p: atomic_write(p, lambda fh: fh.write(card.encode()))}
    with OutputLock(out):
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
        publish(out, files, what=f"export {fmt}")
    if report is not None:
        report(f"exported {source} ({meta['matcher']}, IPC {meta['ipc']}) as {fmt} to {out}")
    if push:
        upload(out, push, report)
    return out


def _save(path, tensor) -> None:
    """A bare tensor, as MTT saves it (``torch.load`` gives the tensor itself)."""
    from .io import atomic_write

    atomic_write(path, lambda fh: torch.save(tensor.detach().cpu().clone(), fh))


def _write_bytes(path, data: bytes) -> None:
    from .io import atomic_write

    atomic_write(path, lambda fh: fh.write(data))


def _folder_names(class_names) -> list[str]:
    import re

    names = []
    for i, n in enumerate(class_names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(n)).strip("._") or f"class_{i}"
        names.append(safe if safe not in names else f"{safe}_{i}")
    return names


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UsageError("--format hf needs the 'datasets' library; pip install 'ddtoolbox[hf]'") from None
    return datasets


def _hf_table(record: dict, meta: dict, data_root):
    """The rows as a ``datasets.Dataset`` with explicit features (Image, ClassLabel, float lists)."""
    ds = _datasets()
    pixels = pixels_uint8(record, meta, data_root)
    names = list(info_of(meta).class_names)
    columns = {"image": [{"bytes": _png(a), "path": None} for a in pixels],
               "label": record["labels"].tolist(),
               "pixels": record["images"].flatten(1).tolist()}
    features = {"image": ds.Image(), "label": ds.ClassLabel(names=names),
                "pixels": ds.List(ds.Value("float32"))}
    if "targets" in record:
        columns["soft_label"] = record["targets"].tolist()
        features["soft_label"] = ds.List(ds.Value("float32"))
    return ds.Dataset.from_dict(columns, features=ds.Features(features))


def _write_parquet(path, table) -> None:
    import io

    from .io import atomic_write

    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()              # one small file: a progress bar is noise in ddtool's output
    buf = io.BytesIO()
    table.to_parquet(buf)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def dataset_card(meta: dict, record: dict, evaluation, source: Path) -> str:
    """README.md of the Hugging Face folder: YAML front matter the Hub reads, then what the set is."""
    ipc = int(meta["ipc"])
    method = meta["matcher"] + "".join(f"+{p}" for p in meta.get("plugins", []) if p != meta["matcher"])
    lines = ["---", "tags:", "- dataset-distillation", f"- ipc-{ipc}", f"- {meta['dataset']}",
             "task_categories:", "- image-classification",
             f"pretty_name: {meta['dataset']} distilled with {method}, IPC {ipc}",
             "configs:", "- config_name: default", "  data_files:", "  - split: train", f"    path: {PARQUET}",
             "---", "", f"# {meta['dataset']}, {ipc} images per class, by {method}", "",
             f"{len(record['labels'])} images ({meta['num_classes']} classes x {ipc}) made with "
             f"ddtoolbox {meta.get('ddtoolbox_version', '?')}.", "",
             "## Columns", "",
             "- `image`: the image as a PNG (pixels clamped to [0, 1], 8-bit; for viewing)",
             "- `label`: its class",
             f"- `pixels`: the exact image the networks train on, float32, {meta['channels']} x "
             f"{' x '.join(str(s) for s in meta['image_size'])} flattened, normalised with mean {meta['mean']} and "
             f"std {meta['std']}{' and ZCA-whitened' if meta.get('zca') else ''}"]
    if "targets" in record:
        lines.append("- `soft_label`: the learned label logits (train with soft cross-entropy on them)")
    lines += [f"- learned learning rate: **{float(record['lr']):.6g}** (also in `ddtoolbox.json`)", "",
              "## Settings", "", "| setting | value |", "|---|---|"]
    for key in ("dataset", "ipc", "matcher", "plugins", "model", "model_options", "iterations", "syn_steps",
                "expert_epochs", "seed", "zca", "resize", "dsa_crop_ratio", "soft_labels", "coreset"):
        if key in meta and meta[key] not in (None, [], {}):
            value = meta[key]
            if key == "coreset":
                value = {k: v for k, v in value.items() if k not in ("indices", "forgetting_events")}
            lines.append(f"| {key} | `{json.dumps(value)}` |")
    lines += ["", "## Accuracy", ""]
    if evaluation:
        mark = (" (maximum over checkpoints, not the final accuracy)"
                if evaluation.get("accuracy") == "max-over-checkpoints" else "")
        lines.append(f"{evaluation['mean'] * 100:.2f} ± {evaluation.get('std', 0) * 100:.2f}% test accuracy over "
                     f"{len(evaluation.get('runs', []))} fresh {evaluation.get('model', '')} networks, "
                     f"{evaluation.get('protocol', '?')} protocol, {evaluation.get('epochs', '?')} epochs{mark}.")
        if evaluation.get("full_accuracy"):
            lines.append(f"Full data: {evaluation['full_accuracy'] * 100:.2f}%.")
        scores = evaluation.get("scores")
        if isinstance(scores, dict):
            for name in ("LRS", "ARS"):
                if isinstance(scores.get(name), dict):
                    lines.append(f"DD-Ranking {name}: {scores[name]['mean']:.4f} ± {scores[name]['std']:.4f} "
                                 f"(accuracies as fractions).")
    else:
        lines.append("Not evaluated when exported (run `ddtool eval --json RUN/eval.json` before exporting).")
    lines += ["", "## Provenance", "",
              f"- exported from `{source.name}` on {time.strftime('%Y-%m-%d', time.gmtime())} by ddtoolbox "
              f"{__version__}",
              f"- buffer: `{meta.get('buffer')}`, {meta.get('seconds', '?')} s to make", "",
              "## Load", "", "```python", "import datasets, torch",
              "ds = datasets.load_dataset('PATH_OR_REPO', split='train').with_format('torch')[:]",
              f"images = ds['pixels'].reshape(-1, {meta['channels']}, "
              f"{', '.join(str(s) for s in meta['image_size'])})",
              "```", "", "or `ddtool eval --synthetic FOLDER`.", ""]
    return "\n".join(lines)


def upload(folder: Path, repo: str, report=None) -> None:
    """``--push REPO``: the folder as a dataset repository on the Hugging Face Hub."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UsageError("--push needs huggingface_hub; pip install 'ddtoolbox[hf]'") from None
    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset",
                          ignore_patterns=[".ddtool.lock"])
    except Exception as exc:
        raise UsageError(f"could not push {folder} to {repo} ({type(exc).__name__}: {exc}); check the name and "
                         f"'huggingface-cli login'") from exc
    if report is not None:
        report(f"pushed to https://huggingface.co/datasets/{repo}")
