"""Every shipped preset loads, names only options that exist, and carries the published numbers."""

from __future__ import annotations

import json

import pytest

from ddtoolbox.cli import manager
from ddtoolbox.cli.parsing import build_parser
from ddtoolbox.plugins import PluginManager
from ddtoolbox.presets import check_preset, read_preset
from ddtoolbox.testing import TOY_DISTILL
from ddtoolbox_datm import PRESET_DIR

#: options that only exist when ddtoolbox-edf (plugins cpd and dae) is installed
EDF_PREFIXES = ("cpd_", "dae_")
IMAGENET_SUBSETS = ("imagenette", "imagewoof", "imagemeow", "imageyellow", "imagefruit", "imagesquawk")
COMP_DD = tuple(f"cdd-{c}-{d}" for c in ("bird", "dog", "car") for d in ("easy", "hard"))

# The EDF paper's Table 8 (ImageNet subsets) and Table 11 (Comp-DD), transcribed independently of
# the preset files: per IPC (cpd_alpha, dae_beta, dae_every, batch_syn, lr_img, lr_y); every row has
# T = 10000 iterations and syn_steps 40.
def _rows(y1, y10, y50, b10=1.0, b50=2.0):
    return {1: (0.0, 1.0, 50, 1000, 10000, y1), 10: (0.25, b10, 100, 400, 1000, y10),
            50: (0.375, b50, 200, 200, 100, y50)}


PAPER = {
    "imagenette": _rows(2.0, 2.0, 5.0), "imagewoof": _rows(2.0, 2.0, 5.0, b10=2.0, b50=1.0),
    "imagemeow": _rows(3.0, 2.0, 5.0), "imageyellow": _rows(3.0, 3.0, 5.0),
    "imagefruit": _rows(3.0, 2.0, 5.0), "imagesquawk": _rows(3.0, 3.0, 5.0),
    "cdd-bird-easy": _rows(2.0, 3.0, 5.0), "cdd-bird-hard": _rows(2.0, 3.0, 5.0),
    "cdd-dog-easy": _rows(2.0, 5.0, 5.0), "cdd-dog-hard": _rows(2.0, 2.0, 5.0),
    "cdd-car-easy": _rows(3.0, 3.0, 5.0), "cdd-car-hard": _rows(3.0, 3.0, 5.0),
}

# The authors' per-config values (their configs/ImageNet/<subset>/ConvIN/IPC*.yaml), which the presets
# follow: threshold / lr_y / batch_syn / lr_img / syn_steps / start -> max @ expansion_end, then any
# value that is not the common one (lr_lr 1e-5, beta 1, lr_teacher 0.01, CPD alpha as in the paper).
# The configs' subset names map to ours: birds_easy = cdd-bird-easy, dogs_hard = cdd-dog-hard, ...
CONFIGS = {
    "imagenette": ("1.5 / 2 / 1000 / 1e4 / 40 / 5->10@1000", "1.5 / 2 / 200 / 1000 / 40 / 10->20@1000",
                   "1.5 / 5 / 128 / 1000 / 80 / 20->40@2000"),
    "imagewoof": ("2.0 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 250 / 1000 / 40 / 10->20@1000, lr_lr 1e-6, beta 2",
                  "1.5 / 5 / 250 / 100 / 40 / 20->40@2000, beta 2"),
    "imagemeow": ("2.0 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 2 / 250 / 1000 / 40 / 10->20@1000",
                  "1.1 / 5 / 128 / 100 / 80 / 20->40@2000"),
    "imageyellow": ("1.5 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 250 / 1000 / 40 / 10->20@1000",
                    "1.5 / 5 / 200 / 100 / 40 / 20->40@1000"),
    "imagefruit": ("1.1 / 5 / 1000 / 1e4 / 40 / 20->40@1000", "1.1 / 5 / 200 / 1000 / 40 / 20->40@1000",
                   "1.1 / 5 / 128 / 100 / 80 / 20->40@1000"),
    "imagesquawk": ("1.5 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 250 / 1000 / 40 / 10->20@1000",
                    "1.1 / 5 / 128 / 100 / 80 / 20->40@1000, lr_teacher 0.005, alpha 0.5"),
    "cdd-bird-easy": ("1.7 / 2 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 200 / 1000 / 40 / 10->20@1000",
                      "1.0 / 5 / 200 / 100 / 40 / 20->40@1000"),
    "cdd-bird-hard": ("1.5 / 2 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 200 / 1000 / 40 / 10->20@1000",
                      "1.0 / 5 / 200 / 100 / 40 / 20->40@2000"),
    "cdd-car-easy": ("2.0 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 200 / 1000 / 40 / 10->20@1000",
                     "1.0 / 5 / 200 / 100 / 40 / 20->40@2000"),
    "cdd-car-hard": ("2.0 / 3 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 3 / 200 / 1000 / 40 / 10->20@1000",
                     "1.5 / 5 / 200 / 100 / 40 / 20->40@2000"),
    "cdd-dog-easy": ("2.0 / 2 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 5 / 250 / 1000 / 40 / 10->20@1000",
                     "1.0 / 5 / 200 / 100 / 40 / 20->40@2000"),
    "cdd-dog-hard": ("2.5 / 2 / 1000 / 1e4 / 40 / 5->10@1000", "2.0 / 2 / 200 / 1000 / 40 / 10->20@1000",
                     "1.0 / 5 / 200 / 100 / 40 / 20->40@2000"),
}


def config_values(row: str, ipc: int, dataset: str) -> dict:
    """One table cell as the preset keys it fixes."""
    head, *rest = [part.strip() for part in row.split(",")]
    threshold, lr_y, batch, lr_img, steps, window = [p.strip() for p in head.split("/")]
    start, tail = window.split("->")
    top, end = tail.split("@")
    values = dict(threshold=float(threshold), lr_y=float(lr_y), batch_syn=int(batch), lr_img=int(float(lr_img)),
                  syn_steps=int(steps), current_max_start_epoch=int(start), max_start_epoch=int(top),
                  expansion_end_epoch=int(end), lr_lr=1e-5, dae_beta=1.0, lr_teacher=0.01,
                  cpd_alpha=PAPER[dataset][ipc][0])
    names = {"lr_lr": "lr_lr", "beta": "dae_beta", "lr_teacher": "lr_teacher", "alpha": "cpd_alpha"}
    for extra in rest:
        key, value = extra.split()
        values[names[key]] = float(value)
    return values


# DATM's published CIFAR-10 settings (the authors' configs)
DATM_CIFAR10 = {
    1: dict(syn_steps=80, expert_epochs=2, lr_img=100, lr_lr=1e-7, lr_y=5.0, batch_syn=10, threshold=1.1,
            min_start_epoch=0, max_start_epoch=4, no_sequential_generation=True),
    10: dict(syn_steps=80, expert_epochs=2, lr_img=100, lr_lr=1e-5, lr_y=2.0, batch_syn=100, threshold=1.0,
             current_max_start_epoch=10, max_start_epoch=20, expansion_end_epoch=1000),
    50: dict(syn_steps=80, expert_epochs=2, lr_img=1000, lr_lr=1e-5, lr_y=2.0, batch_syn=500,
             current_max_start_epoch=20, max_start_epoch=40, expansion_end_epoch=2000),
}


@pytest.fixture(scope="module")
def pm():
    return manager()


@pytest.fixture(scope="module")
def parsers(pm):
    return build_parser(pm).commands


def edf_installed(pm) -> bool:
    return {"cpd", "dae"} <= set(pm.plugin_names())


def ours(pm):
    return {name: e for name, e in pm.presets.items() if e.plugin == "datm"}


def test_every_file_is_registered(pm):
    files = sorted(PRESET_DIR.rglob("*.toml"))
    names = {f"{p.relative_to(PRESET_DIR).parts[0]}/{p.relative_to(PRESET_DIR / p.relative_to(PRESET_DIR).parts[0]).with_suffix('').as_posix()}" for p in files}
    assert names == set(ours(pm))
    assert len(names) == 3 + 3 * len(PAPER)
    expected = {f"edf/{d}/ipc{i}" for d in PAPER for i in (1, 10, 50)} | {f"datm/cifar10/ipc{i}" for i in (1, 10, 50)}
    assert names == expected
    for f in files:
        assert read_preset(f)["description"]


def _check_value(action, key, value):
    """The value must be what the option's own parser would produce."""
    if action.const is not None and action.nargs == 0:        # store_true / store_false
        assert isinstance(value, bool), key
    elif action.dest == "plugins":
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), key
    elif action.type is not None:
        assert action.type(str(value)) == value, key
    else:
        assert isinstance(value, str), key


def test_every_preset_names_only_known_options(pm, parsers):
    edf = edf_installed(pm)
    for name, entry in ours(pm).items():
        for command, values in entry.obj.items():
            assert command in parsers, (name, command)
            actions = {a.dest: a for a in parsers[command]._actions}
            for key, value in values.items():
                if key not in actions and not edf and key.startswith(EDF_PREFIXES):
                    continue        # validated when ddtoolbox-edf is installed
                assert key in actions, f"preset {name} sets unknown {command} option {key}"
                _check_value(actions[key], key, value)
        if edf:
            check_preset(name, entry.obj, parsers)


def test_presets_are_consistent(pm):
    for name, entry in ours(pm).items():
        d, b = entry.obj["distill"], entry.obj["buffer"]
        assert pm.matcher(d["matcher"]).name == "datm"
        assert d["dataset"] == b["dataset"] and d["model"] == b["model"]
        assert d["max_start_epoch"] + d["expert_epochs"] <= b["train_epochs"], name
        assert 0 <= d["min_start_epoch"] < d.get("current_max_start_epoch", 1) <= d["max_start_epoch"], name
        assert b["trainer"] == "ftd" and b["lr"] == 0.01
        assert d["lr_teacher"] == (0.005 if name == "edf/imagesquawk/ipc50" else 0.01), name
        if edf_installed(pm):
            for plugin in d.get("plugins", []):
                assert plugin in pm.plugin_names()
        if "ftd" in pm.trainers:
            assert pm.trainer(b["trainer"]).name == "ftd"


def test_edf_presets_are_the_authors_configs(pm):
    """Every edf/* preset carries its config's values; the rest of the paper's table where the config is silent."""
    presets = ours(pm)
    assert set(CONFIGS) == set(PAPER)
    for dataset, rows in CONFIGS.items():
        for ipc, row in zip((1, 10, 50), rows):
            d = presets[f"edf/{dataset}/ipc{ipc}"].obj["distill"]
            expected = config_values(row, ipc, dataset)
            assert {k: d[k] for k in expected} == expected, (dataset, ipc)
            k = PAPER[dataset][ipc][2]
            assert (d["ipc"], d["iterations"], d["expert_epochs"], d["min_start_epoch"], d["dae_every"]) == \
                (ipc, 10000, 2, 0, k), (dataset, ipc)
            assert d["dataset"] == dataset and d["model"] == "ConvNetD5" and d["plugins"] == ["cpd", "dae"]


def test_edf_presets_say_where_they_leave_the_paper(pm):
    """Each value that differs from Table 8/11 has a comment in the preset file naming both numbers."""
    for dataset, per_ipc in PAPER.items():
        table = "Table 11" if dataset.startswith("cdd-") else "Table 8"
        for ipc, (alpha, beta, _, batch, lr_img, lr_y) in per_ipc.items():
            path = PRESET_DIR / "edf" / dataset / f"ipc{ipc}.toml"
            text, d = path.read_text(), read_preset(path)["distill"]
            paper = {"cpd_alpha": alpha, "dae_beta": beta, "batch_syn": batch, "lr_img": lr_img, "lr_y": lr_y,
                     "syn_steps": 40}
            for key, value in paper.items():
                note = f"# {key} {d[key]:g}: the config's value; {table} gives {value:g}."
                assert (note in text) == (d[key] != value), (path, key, d[key], value)


def test_edf_presets_use_edfs_crop_ratio(pm):
    for name, entry in ours(pm).items():
        if name.startswith("edf/"):
            assert entry.obj["distill"]["dsa_crop_ratio"] == entry.obj["eval"]["dsa_crop_ratio"] == 0.25, name
            assert entry.obj["buffer"]["dsa_crop_ratio"] == 0.125, name
        else:
            assert all("dsa_crop_ratio" not in v for v in entry.obj.values()), name


def test_datm_presets_match_the_published_settings(pm):
    presets = ours(pm)
    for ipc, expected in DATM_CIFAR10.items():
        d = presets[f"datm/cifar10/ipc{ipc}"].obj["distill"]
        assert {k: d[k] for k in expected} == expected
        assert (d["dataset"], d["model"], d["ipc"], d["iterations"]) == ("cifar10", "ConvNet", ipc, 10000)
    assert "threshold" not in presets["datm/cifar10/ipc50"].obj["distill"]
    for ipc in DATM_CIFAR10:      # DATM whitens CIFAR-10 everywhere: experts, distillation, evaluation
        assert all(section["zca"] is True for section in presets[f"datm/cifar10/ipc{ipc}"].obj.values())
    assert all(not section.get("zca", False) for name, e in presets.items() if name.startswith("edf/")
               for section in e.obj.values())


def test_presets_command_lists_and_shows(ddtool, pm):
    r = ddtool("presets")
    assert r.code == 0, r.err
    assert "edf/imagenette/ipc10" in r.out and "datm/cifar10/ipc10" in r.out
    shown = ["datm/cifar10/ipc1"] + ([f"edf/{d}/ipc{i}" for d in PAPER for i in (1, 10, 50)] if edf_installed(pm) else [])
    for name in shown:
        r = ddtool("presets", "--show", name)
        assert r.code == 0, (name, r.err)
    r = ddtool("presets", "--show", "datm/cifar10/ipc1")
    assert "--threshold 1.1" in r.out and "--no-sequential-generation" in r.out and "--trainer ftd" in r.out
    if edf_installed(pm):
        r = ddtool("presets", "--show", "edf/imagenette/ipc10")
        assert "--threshold 1.5" in r.out and "--dsa-crop-ratio 0.25" in r.out and "--batch-syn 200" in r.out
        r = ddtool("presets", "--show", "edf/cdd-dog-hard/ipc1")
        assert "--threshold 2.5" in r.out


def test_preset_fills_options_and_flags_win(ddtool, toy_dataset, toy_buffer, tmp_path):
    # datm/cifar10/ipc1 on the toy set: dataset, sizes and lr_img overridden; the rest from the preset
    flags = ("distill", "--preset", "datm/cifar10/ipc1", "--dataset", toy_dataset, "--buffer", toy_buffer,
             "--out", tmp_path, *TOY_DISTILL, "--iterations", "1", "--syn-steps", "2", "--batch-syn", "4")
    r = ddtool(*flags)          # the preset whitens; the toy buffer was not
    assert r.code == 2 and "drop --zca" in r.err, r.err
    r = ddtool(*flags, "--no-zca")
    assert r.code == 0, r.err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    args, datm = metrics["config"], metrics["options"]["datm"]
    assert args["matcher"] == "datm" and args["syn_steps"] == 2 and args["batch_syn"] == 4
    assert args["max_start_epoch"] == 3 and args["lr_img"] == 10.0          # TOY_DISTILL wins
    assert args["lr_lr"] == 1e-7 and args["lr_y"] == 5.0 and datm["threshold"] == 1.1
    assert datm["no_sequential_generation"] is True and args["eval_batch"] == 128 and args["zca"] is False
