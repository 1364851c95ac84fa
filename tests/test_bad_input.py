"""Every bad input gets one line naming the problem and the fix, exit status 2, no traceback."""

import gzip

import pytest
import torch

from ddtoolbox.data import DatasetInfo, register_dataset
from ddtoolbox.testing import TOY_DISTILL, toy_images


def _assert_clean_error(r, *needles):
    assert r.code == 2, (r.out, r.err)
    lines = [l for l in r.err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("ddtool: error:")
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def other_dataset():
    """A second toy dataset, so a buffer can be used with the wrong one."""
    info = DatasetInfo("toy-other", 1, (16, 16), 4, (0.3,), (0.3,), ("a", "b", "c", "d"))
    register_dataset("toy-other", info, lambda folder, split: toy_images(10, 5), replace=True)
    return "toy-other"


def distill(ddtool, toy_dataset, toy_buffer, out, *extra, dataset=None, buffer=None):
    return ddtool("distill", "--dataset", dataset or toy_dataset, "--buffer", buffer or toy_buffer,
                  "--out", out, "--iterations", "1", *TOY_DISTILL, *extra)


def test_wrong_data_root(ddtool, tmp_path):
    r = ddtool("eval", "--random-ipc", "1", "--dataset", "fashion-mnist", "--data-root", tmp_path / "nowhere")
    _assert_clean_error(r, "nowhere")


def test_unknown_dataset(ddtool, toy_buffer, tmp_path):
    _assert_clean_error(ddtool("distill", "--dataset", "imagenot", "--buffer", toy_buffer, "--out", tmp_path),
                        "imagenot", "fashion-mnist")


def test_unknown_matcher(ddtool, toy_dataset, toy_buffer, tmp_path):
    _assert_clean_error(distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--matcher", "nope"), "nope", "mtt")


def test_unknown_plugin(ddtool, toy_dataset, toy_buffer, tmp_path):
    _assert_clean_error(distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--plugin", "no_such_plugin"), "no_such_plugin")


def test_buffer_for_another_dataset(ddtool, toy_dataset, toy_buffer, other_dataset, tmp_path):
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, dataset=other_dataset)
    _assert_clean_error(r, toy_dataset, other_dataset)


def test_buffer_for_another_model(ddtool, toy_dataset, toy_buffer, tmp_path):
    _assert_clean_error(distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--model", "ConvNetD4"), "ConvNetD4")


def test_buffer_too_short(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--max-start-epoch", "9")
    _assert_clean_error(r, "--max-start-epoch")


def test_not_a_buffer(ddtool, toy_dataset, tmp_path):
    _assert_clean_error(distill(ddtool, toy_dataset, None, tmp_path / "o", buffer=tmp_path), "buffer")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_buffer_file(ddtool, toy_dataset, toy_buffer, tmp_path, damage):
    import shutil

    copy = tmp_path / "buf"
    shutil.copytree(toy_buffer, copy)
    for f in copy.glob("expert_*.pt"):
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not a tensor file" * 10)
    r = distill(ddtool, toy_dataset, None, tmp_path / "o", buffer=copy)
    _assert_clean_error(r, "expert_00", "corrupt")
    assert not (tmp_path / "o" / "synthetic.pt").exists()


def test_corrupt_metadata(ddtool, toy_dataset, toy_buffer, tmp_path):
    import shutil

    copy = tmp_path / "buf"
    shutil.copytree(toy_buffer, copy)
    (copy / "buffer.json").write_text("{not json")
    _assert_clean_error(distill(ddtool, toy_dataset, None, tmp_path / "o", buffer=copy), "buffer.json")


def test_pickled_code_is_refused(ddtool, tmp_path):
    """A synthetic file that would run code when unpickled is rejected, not executed."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"images": Evil()}, path)
    r = ddtool("eval", "--synthetic", path)
    _assert_clean_error(r, "evil.pt")
    assert "pwned" not in r.out


def test_truncated_synthetic(ddtool, toy_dataset, toy_buffer, tmp_path):
    assert distill(ddtool, toy_dataset, toy_buffer, tmp_path / "o").code == 0
    path = tmp_path / "o" / "synthetic.pt"
    path.write_bytes(path.read_bytes()[:100])
    _assert_clean_error(ddtool("eval", "--synthetic", path), "synthetic.pt", "corrupt")


def test_missing_synthetic(ddtool, tmp_path):
    _assert_clean_error(ddtool("eval", "--synthetic", tmp_path / "none.pt"), "none.pt", "does not exist")


@pytest.mark.parametrize("ipc", ["0", "-3"])
def test_ipc_below_one(ddtool, toy_dataset, toy_buffer, tmp_path, ipc):
    _assert_clean_error(distill(ddtool, toy_dataset, toy_buffer, tmp_path, "--ipc", ipc), "--ipc")


@pytest.mark.parametrize("flag", ["--lr-img", "--lr-lr", "--lr-teacher"])
def test_negative_learning_rate(ddtool, toy_dataset, toy_buffer, tmp_path, flag):
    _assert_clean_error(distill(ddtool, toy_dataset, toy_buffer, tmp_path, flag, "-1"), flag)


def test_negative_eval_lr(ddtool, toy_dataset):
    _assert_clean_error(ddtool("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--lr", "-0.1"), "--lr")


def test_cuda_without_cuda(ddtool, toy_dataset, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _assert_clean_error(ddtool("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--device", "cuda"), "cuda")


def test_existing_buffer_needs_resume(ddtool, toy_dataset, toy_buffer):
    _assert_clean_error(ddtool("buffer", "--dataset", toy_dataset, "--out", toy_buffer), "--resume")


def test_corrupt_idx_file(ddtool, tmp_path):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (root / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    r = ddtool("eval", "--random-ipc", "1", "--dataset", "fashion-mnist", "--data-root", tmp_path)
    _assert_clean_error(r, "idx")
