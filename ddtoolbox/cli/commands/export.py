"""``ddtool export``: a run's set -> :func:`ddtoolbox.export.export_set` (MTT triple, class folders, HF parquet)."""

from __future__ import annotations

from ... import hookimpl

DESCRIPTION = ("Write a set (the --out folder of 'ddtool distill' or 'ddtool select', or a synthetic.pt) in a format "
               "others load: mtt (images_best.pt, labels_best.pt, lr_best.pt, as the MTT family and DD-Ranking "
               "exchange them), imagefolder (one folder of PNGs per class) or hf (a Hugging Face dataset folder: "
               "parquet with the exact pixels and soft labels, and a dataset card tagged dataset-distillation and "
               "ipc-N; needs pip install 'ddtoolbox[hf]'). 'ddtool eval --synthetic FOLDER' reads mtt and hf back. "
               "See docs/coresets.md.")


def setup(p, pm) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (its synthetic.pt) or a synthetic.pt")
    p.add_argument("--format", required=True, choices=("mtt", "imagefolder", "hf"), help="mtt, imagefolder or hf")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--eval", default=None, metavar="FILE",
                   help="'ddtool eval --json' result whose accuracies the card quotes (default RUN/eval.json if any)")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.add_argument("--push", default=None, metavar="REPO",
                   help="hf only: also upload the folder to the Hugging Face Hub as dataset REPO (huggingface_hub)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset (for a ZCA set's pictures)")


def run(args, pm) -> None:
    from ...errors import UsageError
    from ...export import export_set

    if args.push and args.format != "hf":
        raise UsageError("--push uploads a Hugging Face folder; use it with --format hf")
    export_set(args.run, args.format, args.out, eval_file=args.eval, overwrite=args.overwrite, push=args.push,
               data_root=args.data_root, report=print)


@hookimpl
def register_commands(register):
    register("export", setup=setup, run=run, help="write a set as MTT's .pt triple, class folders of PNGs, or a "
                                                  "Hugging Face dataset folder", description=DESCRIPTION)
