"""The TensorBoard and W&B loggers on the toy fixtures: what they log, read back with each library's
own readers; that they change no result; and the one line a missing library gives."""

import json
import struct
import time
import sys

import pytest
import torch

from ddtoolbox.testing import TOY_DISTILL

ITERATIONS = 4
EVALS = ("--eval-every", "2", "--eval-runs", "2", "--eval-epochs", "2")


def distill(ddtool, toy_dataset, toy_buffer, out, *extra):
    return ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", out,
                  "--iterations", str(ITERATIONS), "--seed", "3", "--no-report", *TOY_DISTILL, *EVALS, *extra)


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B offline, with its settings, cache and data folders in the test's own folder."""
    for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")


def history(metrics_file) -> list[dict]:
    return json.loads(metrics_file.read_text())["history"]


def test_loggers_change_no_result(ddtool, toy_dataset, toy_buffer, tmp_path, wandb_offline):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    plain = distill(ddtool, toy_dataset, toy_buffer, tmp_path / "plain")
    logged = distill(ddtool, toy_dataset, toy_buffer, tmp_path / "logged", "--plugin", "tensorboard",
                     "--plugin", "wandb", "--tensorboard-every", "1", "--wandb-every", "1")
    assert plain.code == 0 and logged.code == 0, logged.err
    a = torch.load(tmp_path / "plain" / "synthetic.pt", weights_only=True)
    b = torch.load(tmp_path / "logged" / "synthetic.pt", weights_only=True)
    assert a["images"].numpy().tobytes() == b["images"].numpy().tobytes()     # bit for bit
    assert a["lr"].item() == b["lr"].item()
    numbers = lambda h: [{k: v for k, v in r.items() if k != "eval_seconds"} for r in h]   # noqa: E731
    assert numbers(history(tmp_path / "plain" / "metrics.json")) == numbers(history(tmp_path / "logged" / "metrics.json"))


# ---------------------------------------------------------------------------- TensorBoard


def test_tensorboard_logs_every_record(ddtool, toy_dataset, toy_buffer, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--plugin", "tensorboard", "--tensorboard-every", "3")
    assert r.code == 0, r.err
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    records = history(tmp_path / "metrics.json")
    for key in ("loss", "syn_lr", "skipped", "eval_mean", "eval_std"):
        assert key in tags["scalars"], tags["scalars"]
        expected = [(rec["iteration"] + 1, float(rec[key])) for rec in records if key in rec]
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(s, pytest.approx(v, rel=1e-6)) for s, v in expected]
    assert [e.step for e in events.Scalars("eval_mean")] == [2, 4]
    # the images: at the start, every 3 iterations, at the end
    assert [e.step for e in events.Images("synthetic_images")] == [0, 3, 4]
    assert all(e.width > 0 and e.height > 0 for e in events.Images("synthetic_images"))
    assert "settings/text_summary" in tags["tensors"]


def test_tensorboard_dir_option(ddtool, toy_dataset, toy_buffer, tmp_path):
    pytest.importorskip("tensorboard")
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path / "run", "--plugin", "tensorboard",
                "--tensorboard-dir", tmp_path / "tb")
    assert r.code == 0, r.err
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")) and not (tmp_path / "run" / "tensorboard").exists()


# ---------------------------------------------------------------------------- W&B


def wandb_records(path):
    """The records of a ``.wandb`` file, parsed with W&B's own protobuf classes.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, a magic number, a version), then
    32 KiB blocks of chunks, each with a 7-byte header (checksum, length, kind: 1 whole record, 2
    first, 3 middle, 4 last part); a block's tail shorter than a chunk header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:           # zero padding up to the block's end
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def _has_exit_record(path) -> bool:
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path))
    except Exception:       # a record still being written does not parse yet
        return False


def test_wandb_offline_run_holds_the_history(ddtool, toy_dataset, toy_buffer, tmp_path, wandb_offline):
    pytest.importorskip("wandb")
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--plugin", "wandb", "--wandb-every", "3",
                "--wandb-project", "toy")
    assert r.code == 0, r.err
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb-core writes the offline file from its own process and may still be flushing it when
    # finish() returns (seen as a 7-byte file under load): wait for the run's exit record
    deadline = time.monotonic() + 60
    while not _has_exit_record(run_file):
        assert time.monotonic() < deadline, f"{run_file} never got its exit record"
        time.sleep(0.2)
    rows, config = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows.setdefault(record.history.step.num, {}).update(row)
        elif kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            assert record.run.project == "toy" and record.run.display_name == tmp_path.name
    assert sorted(rows) == list(range(ITERATIONS + 1))
    for rec in history(tmp_path / "metrics.json"):
        row = rows[rec["iteration"] + 1]
        for key in ("loss", "syn_lr", "eval_mean"):
            if key in rec:
                assert row[key] == pytest.approx(rec[key], rel=1e-9), key
        assert row["skipped"] == float(rec["skipped"])
    assert [s for s, row in sorted(rows.items()) if "synthetic_images/path" in row] == [0, 3, 4]
    images = list(tmp_path.glob("wandb/offline-run-*/files/media/images/synthetic_images_*.png"))
    assert len(images) == 3
    assert config["ipc"] == 2 and config["plugins"] == "wandb,mtt"


# ---------------------------------------------------------------------------- missing libraries


@pytest.mark.parametrize("plugin, modules", [("tensorboard", ("torch.utils.tensorboard", "tensorboard")),
                                             ("wandb", ("wandb",))])
def test_missing_library_is_one_line_naming_the_install(ddtool, toy_dataset, toy_buffer, tmp_path, monkeypatch,
                                                        plugin, modules):
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)     # import -> ImportError
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--plugin", plugin)
    assert r.code == 2, (r.out, r.err)
    lines = [l for l in r.err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.err
    assert f"pip install 'ddtoolbox-loggers[{plugin}]'" in lines[0] and f"--plugin {plugin}" in lines[0]
    assert not (tmp_path / "synthetic.pt").exists()
