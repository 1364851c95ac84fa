"""Property-based bad input: whatever a hand edit or another tool leaves in buffer.json, synthetic.pt or a
preset, ddtool answers with exit 0 (the value happened to be valid) or exit 2 and one line, never a
traceback or an internal error.

``DDTOOL_HYPOTHESIS=thorough`` runs many more cases (the default keeps the suite quick).
"""

import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddtoolbox.cli.testing import run_cli
from ddtoolbox.testing import TOY_DISTILL

settings.register_profile("quick", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile(os.environ.get("DDTOOL_HYPOTHESIS", "quick"))

#: what a JSON or TOML field can be made to hold
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)

TRIED = {"buffer.json": 0, "synthetic.pt": 0, "preset": 0}


def check_answer(r, what):
    """Exit 0, exit 2 with exactly one error line, or exit 3 with one line saying the run diverged (an
    edited lr, say, can make it so); never a traceback (exit 1 is an internal error)."""
    assert "Traceback" not in r.err, r.err
    assert r.code in (0, 2, 3), f"{what}: exit {r.code}: {r.err}"
    lines = [line for line in r.err.splitlines() if line.strip() and not line.startswith("ddtool: warning")]
    if r.code == 2:
        assert len(lines) == 1 and lines[0].startswith("ddtool: error: "), r.err
    if r.code == 3:
        assert len(lines) == 1 and lines[0].startswith("ddtool: diverged"), r.err


def mutate(obj: dict, path: list, value, delete: bool):
    """``obj`` with the field at ``path`` replaced by ``value`` (or deleted)."""
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def field_paths(obj, prefix=()):
    out = []
    for key, value in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
        out.append([*prefix, key])
        if isinstance(value, (dict, list)) and value and len(out) < 80:
            out += field_paths(value, [*prefix, key])
    return out


# ---------------------------------------------------------------------------- buffer.json


@given(data=st.data())
def test_any_edit_of_buffer_json(toy_dataset, toy_buffer, data):
    meta = json.loads((Path(toy_buffer) / "buffer.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        buf = Path(tmp) / "buffer"
        shutil.copytree(toy_buffer, buf)
        if data.draw(st.integers(0, 9), "whole file") == 0:
            (buf / "buffer.json").write_bytes(data.draw(st.binary(max_size=64), "bytes"))
        else:
            path = data.draw(st.sampled_from(field_paths(meta)), "field")
            edited = mutate(json.loads(json.dumps(meta)), path, data.draw(VALUES, "value"),
                            data.draw(st.booleans(), "delete"))
            (buf / "buffer.json").write_text(json.dumps(edited))
        r = run_cli("distill", "--dataset", toy_dataset, "--buffer", buf, "--out", Path(tmp) / "out", *TOY_DISTILL,
                    "--iterations", "1")
    TRIED["buffer.json"] += 1
    check_answer(r, "buffer.json")


# ---------------------------------------------------------------------------- synthetic.pt

TENSORS = st.sampled_from([
    torch.zeros(0), torch.zeros(3), torch.zeros(2, 2), torch.zeros(8, 1, 16, 16, dtype=torch.float64),
    torch.full((8, 1, 16, 16), float("nan")), torch.zeros(8, 3, 16, 16), torch.zeros(8, 1, 9, 9),
    torch.zeros(8, dtype=torch.long) + 7, torch.zeros(8, dtype=torch.long) - 1, torch.zeros(5, dtype=torch.long),
    torch.tensor([0.01, 0.02]), torch.tensor(-1.0), torch.tensor(float("inf")), torch.zeros(8, 4),
    torch.full((8, 4), float("nan")), torch.zeros(8, 9), torch.zeros(8, 1, 16, 16, dtype=torch.int32),
])


@pytest.fixture(scope="module")
def synthetic_record(toy_dataset, toy_buffer, tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    r = run_cli("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out, *TOY_DISTILL,
                "--iterations", "1", "--matcher", "datm")
    assert r.code == 0, r.err
    record = torch.load(out / "synthetic.pt", weights_only=True)
    record["meta"]["published"] = False          # exercise the fields themselves, not the manifest check
    return record


@given(data=st.data())
def test_any_edit_of_synthetic_pt(synthetic_record, data):
    record = {k: (v.clone() if isinstance(v, torch.Tensor) else json.loads(json.dumps(v)))
              for k, v in synthetic_record.items()}
    choice = data.draw(st.sampled_from(["tensor", "meta", "delete", "garbage"]), "kind")
    if choice == "tensor":
        record[data.draw(st.sampled_from(["images", "labels", "lr", "targets"]))] = data.draw(TENSORS)
    elif choice == "meta":
        mutate(record, ["meta", data.draw(st.sampled_from(sorted(record["meta"])))], data.draw(VALUES),
               data.draw(st.booleans()))
    elif choice == "delete":
        del record[data.draw(st.sampled_from(sorted(record)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.pt"
        if choice == "garbage":
            path.write_bytes(data.draw(st.binary(max_size=64)))
        else:
            torch.save(record, path)
        r = run_cli("eval", "--synthetic", path, "--runs", "1", "--epochs", "1", "--width", "8", "--device", "cpu",
                    "--quiet")
    TRIED["synthetic.pt"] += 1
    check_answer(r, "synthetic.pt")


# ---------------------------------------------------------------------------- presets

PRESET_KEYS = st.sampled_from(["iterations", "syn_steps", "lr_img", "ipc", "matcher", "plugins", "cpd_alpha",
                               "threshold", "unroll", "no_dsa", "dataset", "eval_runs", "no_such_key", "seed",
                               "checkpoint_every", "on_divergence"])


@given(values=st.dictionaries(PRESET_KEYS, VALUES, min_size=1, max_size=3),
       section=st.sampled_from(["distill", "eval", "nonsense"]))
def test_any_preset_values(toy_dataset, toy_buffer, tmp_path_factory, values, section):
    folder = tmp_path_factory.mktemp("preset")
    (folder / "genpreset.py").write_text(textwrap.dedent(f"""
        from ddtoolbox import hookimpl
        @hookimpl
        def register_presets(register):
            register("gen/x", {{{section!r}: {values!r}}}, "generated")
    """))
    sys.path.insert(0, str(folder))
    try:
        r = run_cli("distill", "--plugin", "genpreset", "--preset", "gen/x", "--dataset", toy_dataset,
                    "--buffer", toy_buffer, "--out", folder / "out", *TOY_DISTILL, "--iterations", "1")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("genpreset", None)
    TRIED["preset"] += 1
    check_answer(r, f"preset {section} {values}")


def test_report_how_many_cases_were_tried():
    """Runs last in this module: the counts for the record (pytest -s shows them)."""
    print(f"\nbad-metadata cases tried: {TRIED}")
    assert sum(TRIED.values()) > 0 or os.environ.get("PYTEST_XDIST_WORKER")


def test_a_float64_synthetic_set_is_evaluated_not_crashed(synthetic_record, tmp_path):
    """Found by the property test above: float64 images met float32 networks in a traceback."""
    record = dict(synthetic_record, images=synthetic_record["images"].double(),
                  targets=synthetic_record["targets"].double())
    torch.save(record, tmp_path / "f64.pt")
    r = run_cli("eval", "--synthetic", tmp_path / "f64.pt", "--runs", "1", "--epochs", "1", "--width", "8",
                "--device", "cpu", "--quiet")
    assert r.code == 0, r.err
