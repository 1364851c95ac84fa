"""``ddtoolbox.load_set``: a finished run's synthetic.pt, typed, with its DatasetInfo, checked as eval checks it."""

import pytest
import torch

from ddtoolbox import UsageError, distill, load_set
from ddtoolbox.data import load_dataset
from ddtoolbox.testing import toy_config


@pytest.fixture(scope="module")
def toy_run(toy_buffer, tmp_path_factory):
    out = tmp_path_factory.mktemp("sets") / "run"
    run = distill(toy_config(toy_buffer, out, iterations=2))
    return out, run


def test_load_set_gives_the_runs_tensors_and_dataset(toy_run, toy_dataset):
    out, run = toy_run
    s = load_set(out / "synthetic.pt")
    assert torch.equal(s.images, run.images.detach()) and torch.equal(s.labels, run.labels)
    assert s.lr == pytest.approx(run.syn_lr.item()) and isinstance(s.lr, float)
    assert s.info == run.info == load_dataset(toy_dataset, "train").info      # rebuilt from meta alone
    assert s.ipc == 2 and not s.soft_labels and s.targets is None and s.extra == {}
    assert s.meta["matcher"] == "mtt"
    assert load_set(out).path == out / "synthetic.pt"                      # a run folder works too


def test_pixels_undo_the_normalisation(toy_run):
    s = load_set(toy_run[0])
    std, mean = s.info.std[0], s.info.mean[0]
    torch.testing.assert_close(s.pixels(), s.images * std + mean)


def test_a_bad_set_is_one_line(toy_run, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_set(tmp_path / "nothing.pt")
    (tmp_path / "synthetic.pt").write_bytes((toy_run[0] / "synthetic.pt").read_bytes())
    with pytest.raises(UsageError, match="manifest"):      # copied away from its run: not a published result
        load_set(tmp_path / "synthetic.pt")


def test_info_from_a_buffers_metadata(toy_buffer, toy_dataset):
    import json
    from pathlib import Path

    from ddtoolbox.sets import info_from_meta

    info = info_from_meta(json.loads((Path(toy_buffer) / "buffer.json").read_text()))
    real = load_dataset(toy_dataset, "train").info
    assert (info.name, info.channels, info.image_size, info.num_classes, info.mean, info.std) == \
        (real.name, real.channels, real.image_size, real.num_classes, real.mean, real.std)
    assert info.class_names == ("0", "1", "2", "3")          # buffer.json records no class names
    with pytest.raises(UsageError, match="does not describe its dataset"):
        info_from_meta({"dataset": "x"})
