"""Cluttered Fashion-MNIST: reproducible, the object is where it should be, and it is registered."""

import numpy as np
import pytest

from ddtoolbox.data import dataset_info, find_data_root, list_datasets, load_dataset
from ddtoolbox.data.cluttered import CANVAS, MEAN, OBJECT_SIZE, STD, dataset_stats, make_cluttered
from ddtoolbox.errors import UsageError


def garments(n=40, seed=0):
    """Stand-ins for Fashion-MNIST: black 28 x 28 images with one bright blob in the centre."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        x[i, 6:22, 8:20] = rng.integers(100, 256)
    return x


def test_same_seed_same_images_other_seed_or_stream_different():
    x = garments()
    a, b = make_cluttered(x, 3), make_cluttered(x, 3)
    assert a.shape == (40, CANVAS, CANVAS) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, make_cluttered(x, 4))
    assert not np.array_equal(a, make_cluttered(x, 3, stream=1))


def test_object_is_shrunk_and_placed_among_distractors():
    x = garments(60)
    only_object = make_cluttered(x, 0, distractors=0)
    cluttered = make_cluttered(x, 0)
    for i in range(60):
        ys, xs = np.nonzero(only_object[i])
        h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert 9 <= h <= 16 and 6 <= w <= 12     # a 16 x 12 blob in an 18-24 px garment: shrunk by 0.64-0.86
        # the object is drawn on top (pixel-wise max): nothing darkens it
        assert (cluttered[i] >= only_object[i]).all()
    extra = (cluttered > 0).sum((1, 2)) - (only_object > 0).sum((1, 2))
    assert (extra > 0).mean() > 0.9        # distractors add bright pixels elsewhere
    assert (only_object > 0).mean() < 0.1  # the object itself covers little of the canvas


def test_settings_are_checked():
    with pytest.raises(ValueError):
        make_cluttered(garments(4), 0, object_size=(30, 70))


def test_registered_like_any_dataset():
    assert "cluttered-fashion-mnist" in list_datasets()
    info = dataset_info("cluttered-fmnist")
    assert info.name == "cluttered-fashion-mnist" and info.image_size == (CANVAS, CANVAS) and info.channels == 1
    assert info.class_names == dataset_info("fashion-mnist").class_names
    try:
        find_data_root("fashion-mnist")
    except UsageError:
        pytest.skip("Fashion-MNIST files not installed")
    test = load_dataset("cluttered-fashion-mnist", "test")
    plain = load_dataset("fashion-mnist", "test")
    assert len(test) == len(plain) and test.labels.equal(plain.labels)
    # normalised with the registered statistics: the test split is close to zero mean, unit std
    assert abs(float(test.images.mean())) < 0.05 and abs(float(test.images.std()) - 1) < 0.05
    assert dataset_stats(np.array([[[0, 255]]], np.uint8)) == (0.5, 0.5)
    assert 0 < MEAN[0] < 0.2860 and 0 < STD[0] < 0.3530   # darker and flatter than plain Fashion-MNIST


def test_boxes_are_tight_around_the_garment_and_reproducible():
    x = garments(60)
    only, boxes = make_cluttered(x, 0, distractors=0, return_boxes=True)
    assert boxes.shape == (60, 4) and boxes.dtype == np.int64
    for img, (x0, y0, x1, y1) in zip(only, boxes):
        ys, xs = np.nonzero(img)
        # every garment pixel is inside the box, and each edge of the box touches one
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= x0 < x1 <= CANVAS and 0 <= y0 < y1 <= CANVAS
    # the same draws with distractors: boxes unchanged, images unchanged by asking for boxes
    cluttered, same = make_cluttered(x, 0, return_boxes=True)
    assert np.array_equal(boxes, same) and np.array_equal(cluttered, make_cluttered(x, 0))
    again = make_cluttered(x, 0, return_boxes=True)[1]
    assert np.array_equal(again, same)
    assert not np.array_equal(make_cluttered(x, 1, return_boxes=True)[1], same)
    # a blank garment gets its whole placed square
    blank = np.zeros((3, 28, 28), np.uint8)
    _, b = make_cluttered(blank, 0, distractors=0, return_boxes=True)
    assert ((b[:, 2] - b[:, 0]) >= OBJECT_SIZE[0]).all() and ((b[:, 2] - b[:, 0]) == (b[:, 3] - b[:, 1])).all()


def test_the_registered_dataset_carries_its_boxes():
    try:
        find_data_root("fashion-mnist")
    except UsageError:
        pytest.skip("Fashion-MNIST files not installed")
    test = load_dataset("cluttered-fashion-mnist", "test")
    assert test.boxes is not None and test.boxes.shape == (len(test), 4)
    sub = test.subset(n_per_class=3, generator=0)
    assert sub.boxes.shape == (30, 4)
    # the garment is brighter inside its box than the canvas is on average
    x0, y0, x1, y1 = test.boxes[0].tolist()
    assert test.images[0, 0, y0:y1, x0:x1].mean() > test.images[0].mean()
    assert load_dataset("fashion-mnist", "test").boxes is None
