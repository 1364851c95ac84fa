"""``--zca``: Kornia's ZCA whitening (eps 0.1) fitted on the training split, applied to train and test."""

import json

import pytest
import torch
from kornia.enhance import ZCAWhitening

from ddtoolbox.data import DatasetInfo, load_dataset, register_dataset
from ddtoolbox.data.zca import EPS, MAX_FEATURES, fit_zca, unwhiten, whiten
from ddtoolbox.errors import UsageError
from ddtoolbox.io import load_tensors
from ddtoolbox.testing import TOY_BUFFER, TOY_DISTILL, toy_images


def _correlated(n=4000, c=2, h=3, w=3, seed=0):
    """Images whose pixels are strongly correlated, with variances from 0.01 to 25."""
    g = torch.Generator().manual_seed(seed)
    d = c * h * w
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.logspace(-1, 0.7, d, dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ mix.t() / d ** 0.5 + 0.3
    return x.to(torch.float32).view(n, c, h, w)


def _cov(x):
    flat = x.reshape(len(x), -1).to(torch.float64)
    centred = flat - flat.mean(0)
    return centred.t() @ centred / (len(x) - 1)


def test_whitened_training_data_has_identity_covariance_up_to_eps():
    x = _correlated()
    zca = fit_zca(x)
    assert isinstance(zca, ZCAWhitening) and zca.eps == EPS == 0.1 and zca.compute_inv
    white = whiten(zca, x)
    cov = _cov(x)
    s, u = torch.linalg.eigh(cov)
    expected = u @ torch.diag(s / (s + EPS)) @ u.t()        # what eps leaves of the identity
    assert torch.allclose(_cov(white), expected, atol=2e-4)
    # along the strong directions (variance >> eps) it is the identity
    strong = s > 100 * EPS
    projected = u[:, strong].t() @ _cov(white) @ u[:, strong]
    assert torch.allclose(projected, torch.eye(int(strong.sum()), dtype=torch.float64), atol=1.5e-2)
    assert white.reshape(len(x), -1).mean(0).abs().max() < 1e-4   # centred


def test_the_fit_is_kornias():
    x = _correlated(n=500, seed=1)
    ours = fit_zca(x, chunk=64)
    theirs = ZCAWhitening(eps=0.1, compute_inv=True).fit(x.to(torch.float64))
    assert torch.allclose(ours.mean_vector.double(), theirs.mean_vector, atol=1e-6)
    assert torch.allclose(ours.transform_matrix.double(), theirs.transform_matrix, atol=1e-5)
    assert torch.allclose(ours.transform_inv.double(), theirs.transform_inv, atol=1e-5)
    assert torch.allclose(whiten(ours, x).double(), theirs(x.double()), atol=1e-4)


def test_chunking_does_not_change_the_fit():
    x = _correlated(n=300, seed=2)
    a, b = fit_zca(x, chunk=7), fit_zca(x, chunk=10_000)
    assert torch.allclose(a.transform_matrix, b.transform_matrix, atol=1e-6)
    assert torch.allclose(a.mean_vector, b.mean_vector, atol=1e-7)


def test_inverse_round_trips():
    x = _correlated(n=600, seed=3)
    zca = fit_zca(x)
    y = torch.randn(20, 2, 3, 3)
    assert torch.allclose(unwhiten(zca, whiten(zca, y)), y, atol=1e-4)
    assert torch.allclose(whiten(zca, unwhiten(zca, y)), y, atol=1e-4)
    assert not torch.allclose(whiten(zca, y), y, atol=1e-2)


def test_large_images_are_refused_with_the_reason():
    side = int((MAX_FEATURES / 3) ** 0.5) + 1
    with pytest.raises(UsageError, match="drop --zca"):
        fit_zca(torch.zeros(4, 3, side, side))


# ---------------------------------------------------------------------------- through the registry and the CLI


@pytest.fixture(scope="module")
def toy_rgb():
    """A 3-channel 8 x 8 toy dataset (192 numbers per image), enough images to whiten."""
    info = DatasetInfo("toy-rgb", 3, (8, 8), 4, (0.3, 0.3, 0.3), (0.3, 0.3, 0.3), ("a", "b", "c", "d"))

    def load(folder, split):
        x, y = toy_images(80 if split == "train" else 20, seed=0 if split == "train" else 1)
        x = torch.nn.functional.avg_pool2d(x, 2).repeat(1, 3, 1, 1)
        x = (x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(len(x)))).clamp(0, 1)
        return x, y

    register_dataset("toy-rgb", info, load, replace=True)
    return "toy-rgb"


def test_registry_whitens_test_images_with_the_train_fit(toy_rgb):
    plain_train, plain_test = load_dataset(toy_rgb, "train"), load_dataset(toy_rgb, "test")
    train, test = load_dataset(toy_rgb, "train", zca=True), load_dataset(toy_rgb, "test", zca=True)
    assert train.info.zca and test.info.zca and not plain_test.info.zca
    assert train.whitening is test.whitening
    fitted = fit_zca(plain_train.images)
    assert torch.allclose(test.images, whiten(fitted, plain_test.images), atol=1e-5)
    assert torch.allclose(train.unwhiten(train.images), plain_train.images, atol=1e-4)
    assert plain_train.unwhiten(plain_train.images) is plain_train.images
    # a subset keeps the transform
    assert train.subset(n_per_class=2, generator=0).whitening is train.whitening


@pytest.fixture(scope="module")
def zca_buffer(toy_rgb, tmp_path_factory):
    from ddtoolbox.cli.testing import run_cli

    out = tmp_path_factory.mktemp("zca-buffer")
    r = run_cli("buffer", "--dataset", toy_rgb, "--out", out, *TOY_BUFFER, "--num-experts", "1", "--zca")
    assert r.code == 0, r.err
    return out


def _one_line(r, *needles):
    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_zca_is_recorded_and_mismatches_are_refused(ddtool, toy_rgb, zca_buffer, tmp_path, monkeypatch):
    assert json.loads((zca_buffer / "buffer.json").read_text())["zca"] is True
    distill = ("distill", "--dataset", toy_rgb, "--buffer", zca_buffer, *TOY_DISTILL, "--iterations", "1")
    _one_line(ddtool(*distill, "--out", tmp_path / "plain"), "ZCA-whitened", "add --zca")

    import ddtoolbox.distillation as D

    pictured = {}
    real = D.save_image_grid

    def spy(path, images, labels, info, **kw):
        pictured["images"] = images.clone()
        return real(path, images, labels, info, **kw)

    monkeypatch.setattr(D, "save_image_grid", spy)
    r = ddtool(*distill, "--out", tmp_path / "run", "--zca")
    assert r.code == 0, r.err
    record = load_tensors(tmp_path / "run" / "synthetic.pt", "synthetic set", "")
    assert record["meta"]["zca"] is True
    # the picture shows the images un-whitened; the stored images stay whitened
    train = load_dataset(toy_rgb, "train", zca=True)
    assert torch.allclose(pictured["images"], unwhiten(train.whitening, record["images"]), atol=1e-5)
    assert not torch.allclose(pictured["images"], record["images"], atol=1e-2)

    synthetic = tmp_path / "run" / "synthetic.pt"
    evaluate = ("eval", "--synthetic", synthetic, "--runs", "1", "--epochs", "1", "--device", "cpu", "--quiet")
    _one_line(ddtool(*evaluate), "ZCA-whitened", "add --zca")
    r = ddtool(*evaluate, "--zca", "--json", tmp_path / "eval.json")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "eval.json").read_text())["zca"] is True


def test_a_plain_buffer_refuses_zca(ddtool, toy_dataset, toy_buffer, tmp_path):
    r = ddtool("distill", "--dataset", toy_dataset, "--buffer", toy_buffer, "--out", tmp_path, *TOY_DISTILL,
               "--iterations", "1", "--zca")
    _one_line(r, "without ZCA", "drop --zca")


def test_train_full_with_zca_keeps_its_accuracy_and_teacher_apart(ddtool, toy_dataset, tmp_path):
    """A full-data accuracy or a teacher is only used on images made the same way: the store keeps
    a whitened and a plain entry apart, and a teacher of the other kind is refused in one line."""
    from ddtoolbox.full_results import lookup_full

    store = tmp_path / "full.json"
    for zca in (True, False):
        r = ddtool("train-full", "--dataset", toy_dataset, "--width", "8", "--epochs", "2", "--lr", "0.05",
                   "--device", "cpu", "--quiet", "--full-results", store, "--save-model", tmp_path / f"t{zca}.pt",
                   *(["--zca"] if zca else []))
        assert r.code == 0, r.err
    white = lookup_full(store, toy_dataset, "ConvNet", {"width": 8}, {"zca": True})
    plain = lookup_full(store, toy_dataset, "ConvNet", {"width": 8})
    assert white["zca"] is True and plain["zca"] is False and white["runs"] != plain["runs"]
    assert load_tensors(tmp_path / "tTrue.pt", "teacher", "-")["zca"] is True

    kd = ("eval", "--random-ipc", "1", "--dataset", toy_dataset, "--width", "8", "--runs", "1", "--epochs", "1",
          "--protocol", "kd", "--device", "cpu", "--quiet", "--full-results", store)
    for zca in (True, False):
        r = ddtool(*kd, "--teacher", tmp_path / f"t{zca}.pt", "--json", tmp_path / "e.json", *(["--zca"] if zca else []))
        assert r.code == 0, r.err
        assert json.loads((tmp_path / "e.json").read_text())["full_accuracy"] == (white if zca else plain)["mean"]
    _one_line(ddtool(*kd, "--teacher", tmp_path / "tTrue.pt"), "tTrue.pt", "ZCA-whitened", "add --zca")
    _one_line(ddtool(*kd, "--teacher", tmp_path / "tFalse.pt", "--zca"), "tFalse.pt", "without ZCA", "--zca")
