"""The schema of every file ddtoolbox writes, in one place: the source of ``docs/formats.md``.

Readers outside ddtoolbox (an evaluation script, another toolbox, a notebook) depend on these
files, so their layout is a contract like the hooks are. Keeping the schema as data here, rather
than as prose, gives three things at once: ``docs/formats.md`` is generated from it
(``python -m ddtoolbox.schemas > docs/formats.md``; a test fails when the doc is stale), a test
writes each file at toy scale and checks it with :func:`check`, and a reader can validate a file it
was handed (``check(torch.load(path, weights_only=True), SYNTHETIC)``).

A kind is a small type expression: ``int``, ``float`` (``number``: int or float), ``str``, ``bool``,
``null``, ``dict``, ``list[KIND]``, ``tensor[DTYPE](DIMS)`` (``tensor[float](N, C, H, W)``:
any floating dtype, four dimensions), and ``A | B``. A field whose dict or list entries have a
layout of their own names that layout (``of``).

Versioning: each schema has a ``version``. A change that removes, renames or retypes a field
raises it; adding an optional field does not. Files that record their version say so in
``format`` / ``format_version``; a reader should refuse a version newer than it knows.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

__all__ = ["Field", "Schema", "SCHEMAS", "check", "render"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    doc: str
    required: bool = True
    of: "Schema | None" = None       #: the layout of a dict value, or of each entry of a list of dicts


@dataclass(frozen=True)
class Schema:
    title: str            #: what the doc's section is called
    file: str             #: where the file lies
    version: int
    doc: str
    fields: tuple[Field, ...]
    extra: str = ""       #: what other keys may appear ("" when none may)
    recorded: str = ""    #: how the file records its format and version


# ---------------------------------------------------------------------------- the layouts

SYNTHETIC_META = Schema("`meta` of synthetic.pt and metrics.json", "", 1,
                        "Plain values only, so `torch.load(weights_only=True)` reads them; "
                        "`ddtoolbox.load_set` turns them back into a `DatasetInfo`.", (
    Field("format", "str", "`\"ddtoolbox-synthetic\"`"),
    Field("format_version", "int", "this schema's version (absent in files from before it was recorded: read as 1)",
          required=False),
    Field("ddtoolbox_version", "str", "the version that wrote the file"),
    Field("dataset", "str", "the dataset's registered name"),
    Field("channels", "int", "C"),
    Field("image_size", "list[int]", "[H, W]"),
    Field("num_classes", "int", "K"),
    Field("class_names", "list[str]", "K names, in label order"),
    Field("mean", "list[number]", "per-channel mean the images were normalised with"),
    Field("std", "list[number]", "per-channel std the images were normalised with"),
    Field("ipc", "int", "images per class"),
    Field("model", "str", "the architecture the set was distilled for (`ddtool eval`'s default network)"),
    Field("model_options", "dict", "its options (`width`, `norm`, ...)"),
    Field("matcher", "str", "`--matcher`"),
    Field("plugins", "list[str]", "the active plugins, the matcher's included"),
    Field("iterations", "int", "outer iterations run"),
    Field("syn_steps", "int | null", "student steps per iteration; `null` when the matcher does not use it"),
    Field("expert_epochs", "int | null", "expert epochs matched; `null` when the matcher does not use it"),
    Field("unused", "list[str]", "the core options the matcher declared it does not use (`Matcher.unused`)",
          required=False),
    Field("seed", "int", "`--seed`"),
    Field("buffer", "str | null", "the buffer folder, `null` for a matcher without one"),
    Field("seconds", "number", "distillation time over all resumes"),
    Field("soft_labels", "bool", "whether `targets` holds learned soft labels (eval then uses soft cross-entropy)"),
    Field("unroll", "str", "how the student unroll kept its graph (`\"none\"` without an unroll)"),
    Field("parallel", "str", "`none`, `batch` or `segments`"),
    Field("world_size", "int", "processes that ran it"),
    Field("resize", "str | null", "how images were brought to `image_size` (`squash`, `crop`, or `null`)"),
    Field("zca", "bool", "whether the images are ZCA-whitened"),
    Field("source", "str", "the content id of the prepared store the images came from (`sha256:` + 16 hex digits; "
          "absent for data read as it is); a set is refused on another copy", required=False),
    Field("dsa_crop_ratio", "number", "the DSA crop reach the run used"),
    Field("published", "bool", "`true`; the folder's `manifest.json` vouches for the file"),
))

SYNTHETIC = Schema("synthetic.pt", "OUT/synthetic.pt", 1,
                   "The distilled set: a dict saved with `torch.save`, loadable with `weights_only=True` "
                   "(`ddtoolbox.load_set(path)` loads and checks it). Images are normalised with `meta.mean` / "
                   "`meta.std` (and whitened when `meta.zca`), classes in order.", (
    Field("images", "tensor[float](N, C, H, W)", "the synthetic images, N = ipc x K"),
    Field("labels", "tensor[int64](N)", "the class of each image"),
    Field("lr", "tensor[float]()", "the learned student learning rate (`ddtool eval`'s default lr)"),
    Field("targets", "tensor[float](N, K)", "learned soft labels; only when `meta.soft_labels`", required=False),
    Field("meta", "dict", "how the set was made", of=SYNTHETIC_META),
), extra="tensors or plain values a matcher adds with `extra_state()` (FTD's EMA)",
    recorded="`meta.format` = `\"ddtoolbox-synthetic\"`, `meta.format_version`")

HISTORY_RECORD = Schema("history entry", "", 1, "One outer iteration.", (
    Field("iteration", "int", "0-based; -1 for what a plugin logged before the first iteration"),
    Field("loss", "number", "the matching loss", required=False),
    Field("syn_lr", "number", "the learned lr after the update", required=False),
    Field("skipped", "bool", "the update was skipped (matcher) or dropped (divergence)", required=False),
    Field("diverged", "str", "why the update was dropped (`--on-divergence skip`)", required=False),
    Field("eval_mean", "number", "`--eval-every` accuracy (0-1)", required=False),
    Field("eval_std", "number", "its standard deviation", required=False),
    Field("eval_seconds", "number", "its time", required=False),
), extra="the matcher's segment (`expert`, `start_epoch`, ...) and what plugins logged: numbers, strings, booleans, "
         "`null`, and lists or dicts of them")

ENVIRONMENT = Schema("environment", "", 1, "Where the result was made.", (
    Field("date", "str", "UTC, ISO 8601"),
    Field("device", "str", "in words, e.g. `cpu (1 thread)`"),
    Field("host", "str", ""), Field("cpu", "str", ""), Field("python", "str", ""), Field("torch", "str", ""),
    Field("kornia", "str", ""), Field("ddtoolbox", "str", ""),
), extra="`cuda` and GPU details where present")

METRICS = Schema("metrics.json", "OUT/metrics.json", 1, "What the run did, as JSON.", (
    Field("format_version", "int", "this schema's version (absent in files from before it was recorded: read as 1)",
          required=False),
    Field("meta", "dict", "as in synthetic.pt", of=SYNTHETIC_META),
    Field("environment", "dict", "", of=ENVIRONMENT),
    Field("config", "dict", "every `DistillConfig` field by name (`ddtool distill --help`), as the run used it"),
    Field("options", "dict", "active plugin -> its options by field name"),
    Field("final_lr", "number", "the learned lr at the end"),
    Field("seconds_per_iteration", "number", ""),
    Field("divergent_updates_skipped", "int", "updates dropped by `--on-divergence skip`"),
    Field("history", "list[dict]", "one entry per iteration", of=HISTORY_RECORD),
), recorded="`format_version`")

MANIFEST = Schema("manifest.json", "OUT/manifest.json (every folder a command publishes)", 1,
                  "Written last: the set of files it lists is complete and unchanged when every SHA-256 matches "
                  "(`ddtoolbox.outputs.check_published`).", (
    Field("format", "str", "`\"ddtoolbox-output-set\"`"),
    Field("format_version", "int", "this schema's version (absent: 1)", required=False),
    Field("what", "str", "what wrote the set, e.g. `distill mtt`"),
    Field("ddtoolbox_version", "str", ""),
    Field("written", "str", "local time, `%Y-%m-%dT%H:%M:%S%z`"),
    Field("files", "dict", "file name -> SHA-256 (hex) of its content"),
), recorded="`format`, `format_version`")

EXPERT_ENTRY = Schema("expert entry", "", 1, "One finished expert.", (
    Field("file", "str", "`expert_NNN.pt`, beside buffer.json"),
    Field("test_accuracy", "number", "the expert's final test accuracy (0-1)"),
    Field("train_seconds", "number", ""),
    Field("sha256", "str", "SHA-256 of the expert file, so a damaged file is reported as corrupt rather than as "
          "divergence (absent in buffers from before it was recorded)", required=False),
))

BUFFER = Schema("buffer.json", "BUFFER/buffer.json", 1,
                "The metadata of a buffer of expert trajectories (`ddtool buffer`); it lists only finished experts, "
                "so it is valid at every moment of a run.", (
    Field("format", "str", "`\"ddtoolbox-buffer\"`"),
    Field("format_version", "int", "this schema's version"),
    Field("ddtoolbox_version", "str", ""),
    Field("dataset", "str", ""),
    Field("model", "str", "the experts' architecture"),
    Field("model_options", "dict", "its options"),
    Field("channels", "int", ""), Field("image_size", "list[int]", "[H, W]"), Field("num_classes", "int", ""),
    Field("mean", "list[number]", ""), Field("std", "list[number]", ""),
    Field("train_images", "int", "training images the experts saw"),
    Field("epochs", "int", "epochs per expert: each trajectory has `epochs + 1` snapshots"),
    Field("lr", "number", "the experts' SGD lr (a distillation's initial student lr)"),
    Field("batch_size", "int", ""),
    Field("trainer", "str", "`--trainer`"),
    Field("trainer_options", "dict", "the trainer plugin's options"),
    Field("seed", "int", ""),
    Field("augmentation", "str", "`dsa` or `none`"),
    Field("train_subset_per_class", "int | null", "`--train-subset`"),
    Field("zca", "bool", ""), Field("resize", "str | null", ""), Field("dsa_crop_ratio", "number", ""),
    Field("source", "str", "content id of the prepared store (absent for data read as it is)", required=False),
    Field("compile", "bool", "whether the experts were trained through torch.compile (absent: eager)",
          required=False),
    Field("num_params", "int", "P, parameters per network"),
    Field("experts", "list[dict]", "the finished experts", of=EXPERT_ENTRY),
), recorded="`format`, `format_version`")

EXPERT = Schema("expert_NNN.pt", "BUFFER/expert_NNN.pt", 1, "One expert's trajectory.", (
    Field("trajectory", "tensor[float](E, P)", "E = `epochs + 1` flat parameter vectors, epoch 0 first"),
))

CHECKPOINT = Schema("checkpoint.pt", "OUT/checkpoint.pt (while a run is unfinished)", 1,
                    "Everything the next iteration depends on (`ddtool distill --resume`); removed when the run "
                    "publishes its result. Loadable with `weights_only=True`.", (
    Field("format", "str", "`\"ddtoolbox-checkpoint\"`"),
    Field("format_version", "int", "this schema's version"),
    Field("ddtoolbox_version", "str", ""),
    Field("iteration", "int", "the last finished iteration (0-based)"),
    Field("config", "dict", "the run's `DistillConfig` fields"),
    Field("plugins", "list[str]", "the active plugins"),
    Field("options", "dict", "plugin -> its options by field name"),
    Field("images", "tensor[float](N, C, H, W)", ""),
    Field("labels", "tensor[int64](N)", ""),
    Field("targets", "tensor", "`labels`, or learned soft labels (N, K)"),
    Field("syn_lr", "tensor[float]()", ""),
    Field("optimisers", "dict", "`images`, `lr` (and `targets`) -> `optimizer.state_dict()`"),
    Field("rng", "dict", "every random generator's state", of=Schema("rng", "", 1, "", (
        Field("torch", "tensor[uint8](S)", "torch's CPU generator (Kornia draws from it too)"),
        Field("numpy", "dict", "NumPy's legacy global generator"),
        Field("python", "dict", "Python's `random`"),
        Field("cuda", "list", "each CUDA device's generator, when CUDA was in use", required=False),
        Field("run", "tensor[uint8](S)", "`run.generator`, the run's own generator", required=False),
    ))),
    Field("matcher", "dict", "`matcher.state_dict()`"),
    Field("plugin_state", "dict", "plugin -> its `state` dict"),
    Field("history", "list[dict]", "as in metrics.json", of=HISTORY_RECORD),
    Field("seconds", "float", "run time so far"),
    Field("device", "str", "the kind of device it ran on (`cpu`, `cuda`)", required=False),
), recorded="`format`, `format_version`")

BENCH_RESULT = Schema("bench result.json", "BENCH/cells/<dataset>/ipc<N>/<method>/result.json", 1,
                      "One finished benchmark cell (`ddtool bench`); the cell counts as done exactly when this file "
                      "exists.", (
    Field("dataset", "str", ""), Field("ipc", "int", ""), Field("method", "str", "the spec's method name"),
    Field("mean", "number", "mean test accuracy (0-1) over every trained network"),
    Field("std", "number", ""),
    Field("runs", "list[number]", "each network's accuracy"),
    Field("settings", "dict", "what the spec asked of the cell (a changed spec is noticed by comparing it)"),
    Field("commands", "list[str]", "the exact `ddtool` command lines"),
    Field("seconds", "number", "over every attempt"),
    Field("seeds", "list[int]", "with `[bench] seeds`", required=False),
    Field("per_seed", "list[dict]", "with `[bench] seeds`: `seed`, `mean`, `std`, `runs`, `seconds`", required=False),
    Field("seconds_this_attempt", "number", "with `[bench] seeds`", required=False),
), extra="the environment of the bench run (`device`, `date`, versions)",
    recorded="not recorded: version 1 (a change will add `format_version` 2)")

SCHEMAS = (SYNTHETIC, METRICS, MANIFEST, BUFFER, EXPERT, CHECKPOINT, BENCH_RESULT)


# ---------------------------------------------------------------------------- checking

_TENSOR = re.compile(r"^tensor(?:\[(\w+)\])?(?:\((.*)\))?$")


def _split(kind: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets and parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in kind:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def matches(value, kind: str) -> bool:
    """Whether ``value`` is of ``kind`` (see the module's docstring for the kinds)."""
    import torch

    for alt in _split(kind, "|"):
        if alt == "null" and value is None:
            return True
        if alt == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue
        if (alt == "int" and isinstance(value, int)) or (alt == "float" and isinstance(value, float)) \
                or (alt == "number" and isinstance(value, (int, float))) or (alt == "str" and isinstance(value, str)) \
                or (alt == "dict" and isinstance(value, dict)) or (alt == "list" and isinstance(value, list)):
            return True
        if alt.startswith("list[") and isinstance(value, list):
            if all(matches(v, alt[5:-1]) for v in value):
                return True
        m = _TENSOR.match(alt)
        if m and isinstance(value, torch.Tensor):
            dtype, dims = m.groups()
            if dtype == "float" and not value.is_floating_point():
                continue
            if dtype not in (None, "float") and str(value.dtype) != f"torch.{dtype}":
                continue
            if dims is not None and value.dim() != len([d for d in dims.split(",") if d.strip()]):
                continue
            return True
    return False


def check(obj, schema: Schema, where: str = "") -> list[str]:
    """Every way ``obj`` departs from ``schema``, one line each (empty: it fits)."""
    where = where or schema.title
    if not isinstance(obj, dict):
        return [f"{where}: not a dict but {type(obj).__name__}"]
    problems = []
    known = {f.name for f in schema.fields}
    for f in schema.fields:
        if f.name not in obj:
            if f.required:
                problems.append(f"{where}: lacks '{f.name}'")
            continue
        value = obj[f.name]
        if not matches(value, f.kind):
            shown = (f"a {value.dtype} tensor of shape {tuple(value.shape)}" if hasattr(value, "shape")
                     else repr(value)[:60])
            problems.append(f"{where}.{f.name}: {shown} is not {f.kind}")
        elif f.of is not None:
            for i, entry in enumerate(value if isinstance(value, list) else [value]):
                label = f"{where}.{f.name}[{i}]" if isinstance(value, list) else f"{where}.{f.name}"
                problems += check(entry, f.of, label)
    if not schema.extra:
        problems += [f"{where}: unexpected key '{k}'" for k in obj if k not in known]
    return problems


# ---------------------------------------------------------------------------- the document

INTRO = """# File formats

<!-- Generated by `python -m ddtoolbox.schemas > docs/formats.md` from ddtoolbox/schemas.py; do not edit:
tests/test_schemas.py fails when this file and the schemas differ. -->

Every file ddtoolbox writes, field by field. Tensor files are dicts saved with `torch.save` and load
with `torch.load(path, weights_only=True)`; JSON files are UTF-8. Every file is written to a
temporary name and renamed into place, so a reader never sees half of one.

Kinds: `int`, `float`, `number` (int or float), `str`, `bool`, `null`, `dict`, `list[KIND]`,
`tensor[DTYPE](DIMS)` (`float`: any floating dtype; the dimensions name the shape), `A | B`.
**Versions**: each schema has one. Removing, renaming or retyping a field raises it; adding an
optional field does not. A reader should refuse a version newer than it knows.

To check a file in Python: `ddtoolbox.schemas.check(obj, ddtoolbox.schemas.SYNTHETIC)` returns the
list of problems (empty when it fits); the schemas are `SYNTHETIC`, `METRICS`, `MANIFEST`, `BUFFER`,
`EXPERT`, `CHECKPOINT` and `BENCH_RESULT`.
"""


def _table(schema: Schema) -> list[str]:
    lines = ["| field | kind | required | what |", "| --- | --- | --- | --- |"]
    for f in schema.fields:
        doc = f.doc + (f" (see *{f.of.title}* below)" if f.of is not None and not f.of.title.startswith("`meta`")
                       else "")
        lines.append(f"| `{f.name}` | `{f.kind}` | {'yes' if f.required else 'no'} | {doc} |")
    if schema.extra:
        lines.append(f"\nOther keys: {schema.extra}.")
    return lines


def render() -> str:
    """``docs/formats.md``."""
    out = [INTRO]
    seen = set()
    for schema in SCHEMAS:
        out += [f"## {schema.title} (version {schema.version})", "", f"`{schema.file}`. {schema.doc}"]
        if schema.recorded:
            out.append(f"Format and version recorded in: {schema.recorded}.")
        out += [""] + _table(schema) + [""]
        for f in schema.fields:
            if f.of is not None and f.of.title not in seen:
                seen.add(f.of.title)
                out += [f"### {f.of.title}", ""] + ([f.of.doc, ""] if f.of.doc else []) + _table(f.of) + [""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
