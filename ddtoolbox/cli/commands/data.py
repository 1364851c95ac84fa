"""``ddtool data`` (prepare photo datasets; list the ImageNet subsets) and ``ddtool compdd`` (score, select, stats).

Both live here because they are one workflow: prepare the subsets a paper uses, or score classes
to build new ones. The work is done by :mod:`ddtoolbox.data` and :mod:`ddtoolbox.compdd`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ddtoolbox import hookimpl
from ddtoolbox.config import CommonSettings
from ddtoolbox.errors import UsageError
from ddtoolbox.options import add_arguments, positive_float, positive_int


def add_common(p) -> None:
    add_arguments(p, CommonSettings)


@hookimpl
def register_commands(register):
    register("data", setup=setup_data, run=_need_action,
             help="prepare photo datasets (CIFAR, ImageNet subsets, your own trees) once; list the ImageNet subsets")
    register("compdd", setup=setup_compdd, run=_need_action,
             help="Comp-DD: Grad-CAM complexity scores, easy/hard subset selection, activation statistics")


def setup_data(p, pm) -> None:
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))

    q = dsub.add_parser("subsets", help="list the registered ImageNet subsets (ImageNette ... Comp-DD)")
    q.add_argument("--show", default=None, metavar="NAME", help="print one subset's classes (index, wnid, name)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_subsets)

    q = dsub.add_parser("prepare", help="decode a tree of images once into a store that --dataset NAME loads, with a "
                                        "record of where it came from")
    src = q.add_argument_group("source (one of)")
    src.add_argument("--source", default=None, metavar="TREE",
                     help="a class-folder tree: TREE/train/<class>/* and TREE/val/<class>/* (or test/); with --dataset")
    src.add_argument("--imagenet-root", default=None, metavar="DIR",
                     help="full ImageNet in ImageFolder layout: DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG; with --subset")
    q.add_argument("--dataset", default=None, metavar="NAME",
                   help="with --source: cifar10, cifar100, an ImageNet subset (class folders named by wnid or class name), "
                        "or a new name, which becomes a dataset of its own")
    q.add_argument("--subset", nargs="+", default=None, metavar="NAME",
                   help="with --imagenet-root: subset(s) to prepare, e.g. imagenette cdd-bird-hard (see 'ddtool data "
                        "subsets'); 'all' for every one")
    q.add_argument("--out", default=None, metavar="DIR",
                   help="store folder (one dataset only; default DATA_ROOT/NAME for --data-root or $DDTOOL_DATA, "
                        "else ~/.cache/ddtoolbox/NAME: where --dataset NAME looks)")
    q.add_argument("--size", type=positive_int, default=None, metavar="N",
                   help="square size in pixels (ImageNet subsets: default 128, any N; new datasets: needed when the "
                        "images differ in size; CIFAR keeps its 32)")
    q.add_argument("--resize", choices=("squash", "crop"), default=None,
                   help="squash (default): the whole image resized to NxN, aspect ratio not kept, as the MTT/DATM/EDF "
                        "code does; crop: shorter side to N, then a centred NxN crop. Recorded in the store; "
                        "buffers and synthetic sets made from one kind are refused with the other")
    q.add_argument("--workers", type=positive_int, default=4, help="decoding threads (default 4)")
    q.add_argument("--data-root", default=None, help="write the store to DATA_ROOT/NAME")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_prepare)



def setup_compdd(p, pm) -> None:
    csub = p.add_subparsers(dest="compdd_command", metavar="ACTION", parser_class=type(p))

    q = csub.add_parser("score", help="per-class complexity (share of Grad-CAM pixels >= 0.5) as a CSV")
    src = q.add_argument_group("images (one of)")
    src.add_argument("--dataset", default=None, help="a registered dataset or imagefolder:PATH")
    src.add_argument("--imagenet-root", default=None, metavar="DIR",
                     help="stream classes from an ImageFolder-layout ImageNet instead (no cache needed)")
    src.add_argument("--categories", default=None, metavar="FILE|default",
                     help="with --imagenet-root: score every class of a categories file ('default': EDF's eight)")
    src.add_argument("--subset", default=None, metavar="NAME", help="with --imagenet-root: score one registered subset's classes")
    src.add_argument("--wnids", default=None, metavar="W1,W2,...", help="with --imagenet-root: score these classes")
    src.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                     help="for imagefolder:PATH: resize (shorter side) and centre-crop every image to N px")
    src.add_argument("--split", choices=("train", "test"), default="train",
                     help="which split to score (default train; test = ImageNet val/)")
    src.add_argument("--max-per-class", type=positive_int, default=None, metavar="N",
                     help="score at most N images per class (default all, as the paper)")
    _model_args(q, default_model="resnet18")
    q.add_argument("--threshold", type=positive_float, default=0.5, help="high-activation threshold (default 0.5)")
    q.add_argument("--batch", type=positive_int, default=64, help="images per Grad-CAM pass (default 64)")
    q.add_argument("--out", default="compdd-scores.csv", help="CSV to write (default compdd-scores.csv); "
                   "a .json beside it records how it was made")
    q.add_argument("--per-image", default=None, metavar="CSV", help="also write every image's score")
    add_common(q)
    q.set_defaults(func=cmd_score)

    q = csub.add_parser("select", help="rank each category's classes; write its easy and hard subsets")
    q.add_argument("--scores", required=True, help="CSV from 'ddtool compdd score'")
    q.add_argument("--categories", default=None, metavar="FILE",
                   help="TOML: category = [wnids, indices or class names] (default: EDF's eight categories)")
    q.add_argument("--size", type=positive_int, default=10, help="classes per subset (default 10)")
    q.add_argument("--out", default="compdd-subsets.json", help="JSON to write (default compdd-subsets.json)")
    q.set_defaults(func=cmd_select)

    q = csub.add_parser("stats", help="Grad-CAM activation statistics of a dataset (Figure 1b): numbers and histograms; "
                                      "for datasets with object boxes (cluttered-fashion-mnist) also how much of the "
                                      "map falls inside the box")
    q.add_argument("--dataset", required=True, help="a registered dataset or imagefolder:PATH")
    q.add_argument("--split", choices=("train", "test"), default="test", help="split to measure (default test)")
    q.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                   help="for imagefolder:PATH: resize (shorter side) and centre-crop every image to N px")
    q.add_argument("--max-images", type=positive_int, default=1000, metavar="N",
                   help="measure about N images, the same number from each class (default 1000)")
    _model_args(q, default_model=None)
    q.add_argument("--threshold", type=positive_float, default=0.5, help="high-activation threshold (default 0.5)")
    q.add_argument("--bins", type=positive_int, default=20, help="histogram bins over [0, 1] (default 20)")
    q.add_argument("--batch", type=positive_int, default=128, help="images per Grad-CAM pass (default 128)")
    q.add_argument("--label", default=None, help="name in the plot legend (default: the dataset)")
    q.add_argument("--out", required=True, metavar="JSON", help="numbers to write; the PNG goes beside it")
    q.add_argument("--png", default=None, help="histogram PNG (default: --out with .png)")
    q.add_argument("--compare", nargs="+", default=[], metavar="JSON",
                   help="earlier stats JSON files to draw beside this one")
    q.add_argument("--examples", type=int, default=2, metavar="N",
                   help="also write N images per class with their maps overlaid in red, as OUT-maps.png "
                        "(default 2; 0 for none)")
    add_common(q)
    q.set_defaults(func=cmd_stats)


def _model_args(q, default_model):
    g = q.add_argument_group("model (Grad-CAM network)")
    g.add_argument("--model", default=default_model,
                   help="a torchvision classifier (resnet18, ...) or a ddtoolbox network (ConvNet, ResNet18, ...)"
                        + (f"; default {default_model}" if default_model else ""))
    g.add_argument("--weights", default=None, metavar="FILE", help="its state dict (torch.save(model.state_dict(), FILE))")
    g.add_argument("--buffer", default=None, metavar="DIR",
                   help="instead: the final snapshot of an expert of this 'ddtool buffer' folder")
    g.add_argument("--expert", type=int, default=0, help="which expert of --buffer (default 0)")
    g.add_argument("--layer", action="append", default=None, metavar="NAME",
                   help="Grad-CAM layer (module name; repeatable, maps are summed); default the last conv block")
    g.add_argument("--class-map", default=None, metavar="MAP",
                   help="model output of each class: '0,217,...', a subset name, or a file (default: automatic)")
    g.add_argument("--width", type=positive_int, default=None, help="ddtoolbox network width (its default if omitted)")
    g.add_argument("--depth", type=positive_int, default=None, help="ddtoolbox network depth")
    g.add_argument("--norm", default=None, help="ddtoolbox network normalisation")


def _need_action(args, pm):
    raise UsageError(f"'ddtool {args.command}' needs an action; see 'ddtool {args.command} --help'")


def _model_options(args) -> dict:
    """The options given for a ddtoolbox network (``--width`` ...); a torchvision model takes none."""
    return {k: v for k in ("width", "depth", "norm") if (v := getattr(args, k)) is not None}


def _build_cam(args, info, device):
    from ddtoolbox.compdd.models import build

    model = None if args.buffer and args.model in (None, "resnet18") else args.model
    return build(info, model=model, weights=args.weights, buffer=args.buffer, expert=args.expert,
                 model_options=_model_options(args), layers=args.layer, device=device)


# ---------------------------------------------------------------------------- data


def cmd_subsets(args, pm):
    from ddtoolbox.data.imagenet_subsets import SUBSETS, duplicate_warning, get_subset, imagenet_class_names

    if args.show:
        s = get_subset(args.show)
        names = imagenet_class_names()
        rows = [{"position": p, "imagenet_index": i, "wnid": w, "name": names[i]}
                for p, (i, w) in enumerate(zip(s.indices, s.wnids))]
        if args.json:
            print(json.dumps({"name": s.name, "title": s.title, "source": s.source, "classes": rows,
                              "warning": duplicate_warning(s)}, indent=2))
            return
        print(f"{s.title} ({s.name}), from {s.source}:")
        for r in rows:
            print(f"  {r['position']:>2}  {r['imagenet_index']:>3}  {r['wnid']}  {r['name']}")
        if duplicate_warning(s):
            print(f"  note: {duplicate_warning(s)}")
        return
    if args.json:
        print(json.dumps({n: {"title": s.title, "indices": list(s.indices), "wnids": list(s.wnids),
                              "source": s.source, "warning": duplicate_warning(s)} for n, s in SUBSETS.items()},
                         indent=2))
        return
    for name, s in SUBSETS.items():
        distinct = len(s.distinct_indices)
        note = f"  ({distinct} distinct: {s.wnids[0]} repeated, see --show)" if distinct != len(s.indices) else ""
        print(f"  {name:<17} {len(s.indices)} classes  {s.source}{note}")


def cmd_prepare(args, pm):
    import time

    from ddtoolbox.data.imagenet_subsets import SUBSETS, get_subset
    from ddtoolbox.data.prepare import prepare_subset, prepare_tree

    if (args.source is None) == (args.imagenet_root is None):
        raise UsageError("give exactly one of --source TREE (with --dataset NAME) or --imagenet-root DIR (with --subset NAME)")
    started = time.monotonic()
    if args.source is not None:
        if not args.dataset or args.subset:
            raise UsageError("--source TREE needs --dataset NAME (not --subset): the dataset the tree holds")
        records = [prepare_tree(args.source, args.dataset, args.out, data_root=args.data_root, size=args.size,
                                resize=args.resize, workers=args.workers, progress=not args.quiet,
                                check_target=_store_folder_check(args))]
    else:
        if not args.subset or args.dataset:
            raise UsageError("--imagenet-root DIR needs --subset NAME (not --dataset): which subset(s) to take from it")
        names = list(SUBSETS) if [n.lower() for n in args.subset] == ["all"] else args.subset
        subsets = [get_subset(n) for n in names]  # all names checked before any work
        if args.out and len(subsets) > 1:
            raise UsageError("--out names one store folder; with several --subset names use --data-root DIR instead")
        records = [prepare_subset(args.imagenet_root, s, args.out, data_root=args.data_root, workers=args.workers,
                                  progress=not args.quiet, resize=args.resize or "squash", size=args.size or 128,
                                  check_target=_store_folder_check(args))
                   for s in subsets]
    for r in records:
        counts = r["images_per_class"]
        h, w = r["image_size"]
        grey = sum(r["greyscale_converted"].values())
        print(f"{r['dataset']}: {sum(counts['train'])} train and {sum(counts['test'])} test images, "
              f"{len(r['class_names'])} classes, {h}x{w} ({r['transform']})"
              + (f", {grey} greyscale converted" if grey else "")
              + f"; content id {r['content_id']}; in {r['path']}")
    print(f"took {time.monotonic() - started:.1f} s")


def _store_folder_check(args):
    """The check ``prepare`` runs on each store folder before decoding: writable, or one line naming the option."""
    from ddtoolbox.outputs import check_writable

    option = "--out" if args.out else "--data-root" if args.data_root else "$DDTOOL_DATA or the cache folder"
    return lambda folder: check_writable(folder, what="store folder", option=option)


# ---------------------------------------------------------------------------- compdd


def _score_source(args):
    """(info, batches, total, description) for the images ``score`` measures."""
    from ddtoolbox.data import load_dataset

    from ddtoolbox.compdd.complexity import dataset_batches, imagenet_batches, imagenet_info

    picks = [o for o in ("categories", "subset", "wnids") if getattr(args, o)]
    if (args.dataset is None) == (args.imagenet_root is None):
        raise UsageError("give exactly one of --dataset NAME or --imagenet-root DIR")
    if args.dataset:
        if picks:
            raise UsageError(f"--{picks[0]} only applies with --imagenet-root; drop it (--dataset scores all its classes)")
        ds = load_dataset(args.dataset, args.split, args.data_root, image_size=args.image_size)
        batches, total = dataset_batches(ds, args.batch, args.max_per_class, args.seed)
        return ds.info, batches, total, f"{ds.info.name} {args.split}"
    if len(picks) != 1:
        raise UsageError("with --imagenet-root give exactly one of --categories FILE|default, --subset NAME or --wnids LIST")
    wnids = _wnids_to_score(args, picks[0])
    split = "train" if args.split == "train" else "val"
    batches, total = imagenet_batches(args.imagenet_root, wnids, split, args.batch, args.max_per_class)
    return imagenet_info(wnids), batches, total, f"ImageNet {split}/ at {args.imagenet_root}, {len(wnids)} classes"


def _wnids_to_score(args, pick):
    from ddtoolbox.data.imagenet_subsets import get_subset, imagenet_wnids, resolve_class

    if pick == "subset":
        s = get_subset(args.subset)
        return [s.wnids[s.indices.index(i)] for i in s.distinct_indices]
    if pick == "categories":
        from ddtoolbox.compdd.select import load_categories

        cats, _ = load_categories(None if args.categories == "default" else args.categories)
        keys = list(dict.fromkeys(k for ks in cats.values() for k in ks))
    else:
        keys = [k.strip() for k in args.wnids.split(",") if k.strip()]
        keys = [imagenet_wnids()[int(k)] if k.isdigit() and int(k) < 1000 else k for k in keys]
    bad = [k for k in keys if resolve_class(k) is None]
    if bad:
        raise UsageError(f"not ImageNet-1K classes: {', '.join(bad[:8])}; streaming from --imagenet-root needs wnids, "
                         f"indices 0-999 or ImageNet class names (see 'ddtool data subsets --show NAME')")
    return list(dict.fromkeys(imagenet_wnids()[resolve_class(k)] for k in keys))


def _check_outputs(*files) -> None:
    """Every output file writable before any image is scored: a bad path costs seconds, not a scoring run."""
    from ddtoolbox.outputs import check_file_writable

    for path, option in files:
        if path:
            check_file_writable(path, option=option)


def cmd_score(args, pm):
    from ddtoolbox.io import write_json
    from ddtoolbox.runtime import resolve_device, seed_everything

    from ddtoolbox.compdd.complexity import score_classes, write_csv
    from ddtoolbox.compdd.models import class_targets

    _check_outputs((args.out, "--out"), (args.per_image, "--per-image"))
    device = resolve_device(args.device)
    seed_everything(args.seed)
    info, batches, total, what = _score_source(args)
    cam = _build_cam(args, info, device)
    targets = class_targets(info, cam.num_outputs, args.class_map)
    rows, images = score_classes(cam, batches, targets, info, total, device, args.threshold, not args.quiet)
    out = write_csv(args.out, rows)
    if args.per_image:
        write_csv(args.per_image, images, ("index", "class", "high_activation_fraction", "mean_activation"))
    write_json(Path(out).with_suffix(".json"), {
        "what": "per-class Grad-CAM complexity (Comp-DD)", "images": what, "model": cam.description,
        "threshold": args.threshold, "scored_images": total, "max_per_class": args.max_per_class,
        "complexity": "1 - share of pixels with activation >= threshold (mean over the class's images)",
    })
    ranked = sorted((r for r in rows if r["images"]), key=lambda r: r["complexity"])
    print(f"scored {total} images of {len(rows)} classes ({what}) with {cam.description}")
    if ranked:
        print(f"least complex: {ranked[0]['name']} ({ranked[0]['complexity']:.4f}); most complex: "
              f"{ranked[-1]['name']} ({ranked[-1]['complexity']:.4f})")
    print(f"wrote {out}")


def cmd_select(args, pm):
    from ddtoolbox.io import write_json

    from ddtoolbox.compdd.complexity import read_scores
    from ddtoolbox.compdd.select import load_categories, select

    _check_outputs((args.out, "--out"))
    rows = read_scores(args.scores)
    cats, where = load_categories(args.categories)
    result = select(rows, cats, args.size)
    write_json(args.out, {"scores": str(args.scores), "categories": where, "size": args.size,
                          "rule": "easy = the classes with the lowest complexity, hard = the highest",
                          "subsets": result})
    for cat, r in result.items():
        fmt = lambda entries: ", ".join(e["wnid"] or e["name"] for e in entries)  # noqa: E731
        print(f"{cat}: easy {r['easy_complexity']:.4f} [{fmt(r['easy'])}]")
        print(f"{' ' * len(cat)}  hard {r['hard_complexity']:.4f} [{fmt(r['hard'])}]")
    print(f"wrote {args.out}")


def cmd_stats(args, pm):
    from ddtoolbox.data import load_dataset
    from ddtoolbox.io import read_json, write_json
    from ddtoolbox.runtime import resolve_device, seed_everything

    from ddtoolbox.compdd.complexity import dataset_batches
    from ddtoolbox.compdd.models import class_targets
    from ddtoolbox.compdd.stats import activation_stats, plot_stats, summary_line

    _check_outputs((args.out, "--out"), (args.png, "--png"))
    device = resolve_device(args.device)
    seed_everything(args.seed)
    others = [read_json(p, "--compare file", "give a JSON written by 'ddtool compdd stats'") for p in args.compare]
    for p, o in zip(args.compare, others):
        if "high_activation_fraction" not in o or "pixel_histogram" not in o:
            raise UsageError(f"--compare file {p} was not written by 'ddtool compdd stats'")
    ds = load_dataset(args.dataset, args.split, args.data_root, image_size=args.image_size)
    per_class = math.ceil(args.max_images / ds.info.num_classes)
    batches, total = dataset_batches(ds, args.batch, per_class, args.seed, with_boxes=ds.boxes is not None)
    cam = _build_cam(args, ds.info, device)
    targets = class_targets(ds.info, cam.num_outputs, args.class_map)
    result = activation_stats(cam, batches, targets, total, device, threshold=args.threshold, bins=args.bins,
                              progress=not args.quiet)
    result = {"label": args.label or ds.info.name, "dataset": ds.info.name, "split": args.split,
              "model": cam.description, **result}
    write_json(args.out, result)
    png = args.png or str(Path(args.out).with_suffix(".png"))
    for o in others:
        print(summary_line(o))
    print(summary_line(result))
    plot_stats([*others, result], png)
    print(f"wrote {args.out} and {png}")
    if args.examples > 0:
        from ddtoolbox import gradcam as G
        from ddtoolbox.viz import save_image_grid

        batches, _ = dataset_batches(ds, 10**9, args.examples, args.seed)
        images, labels = next(batches)
        maps = G.gradcam_maps(cam.model, images.to(device), targets.to(device)[labels.to(device)], cam.layers)
        grid = Path(args.out).with_name(Path(args.out).stem + "-maps.png")
        save_image_grid(grid, images, labels, ds.info, max_per_class=args.examples, overlay=maps.cpu())
        print(f"wrote {grid} (maps overlaid in red)")
