"""ImageNet subsets: the class lists, the shipped wnid table, and ``ddtool data prepare``."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddtoolbox.data import dataset_info, list_datasets, load_dataset
from ddtoolbox.data.imagenet_subsets import (
    SUBSETS, duplicate_warning, duplicates, get_subset, imagenet_class_names, imagenet_wnids, resolve_class,
)
from ddtoolbox.data.info import IMAGENET_MEAN, IMAGENET_STD
from ddtoolbox.errors import UsageError
from ddtoolbox.cli.testing import run_cli

# EDF Appendix D.1, copied from the paper's text: the wnids must be what our indices resolve to
PAPER_D1 = {
    "cdd-bird-hard": "n01537544 n01592084 n01824575 n01558993 n01534433 n01843065 n01530575 n01560419 n01601694 n01532829",
    "cdd-bird-easy": "n02007558 n02027492 n01798484 n02033041 n02012849 n02025239 n01818515 n01820546 n02051845 n01608432",
    "cdd-dog-hard": "n02107683 n02107574 n02109525 n02096585 n02085620 n02113712 n02086910 n02093647 n02086079 n02102040",
    "cdd-dog-easy": "n02096294 n02093428 n02105412 n02089973 n02109047 n02109961 n02105056 n02092002 n02114367 n02110627",
    "cdd-car-hard": "n04252077 n03776460 n04335435 n03670208 n03594945 n03445924 n03444034 n04467665 n03977966 n02704792",
    "cdd-car-easy": "n03459775 n03208938 n03930630 n04285008 n03100240 n02814533 n03770679 n04065272 n03777568 n04037443",
    "cdd-snake-hard": "n01693334 n01687978 n01685808 n01682714 n01688243 n01737021 n01751748 n01739381 n01728920 n01728572",
    "cdd-snake-easy": "n01749939 n01735189 n01729977 n01734418 n01742172 n01744401 n01756291 n01755581 n01729322 n01740131",
    "cdd-insect-hard": "n02165456 n02281787 n02280649 n02172182 n02281406 n02165105 n02264363 n02268853 n01770081 n02277742",
    "cdd-insect-easy": "n02279972 n02233338 n02219486 n02206856 n02174001 n02190166 n02167151 n02231487 n02168699 n02236044",
    "cdd-fish-hard": "n01440764 n02536864 n02514041 n02641379 n01494475 n02643566 n01484850 n02640242 n01698640 n01873310",
    "cdd-fish-easy": "n01496331 n01443537 n01498041 n02655020 n02526121 n01491361 n02606052 n02607072 n02071294 n02066245",
    "cdd-round-hard": "n04409515 n04254680 n03982430 n04548280 n02799071 n03445777 n03942813 n03134739 n04039381 n09229709",
    "cdd-round-easy": "n02782093 n03379051 n07753275 n04328186 n02794156 n09835506 n02802426 n04540053 n04019541 n04118538",
    "cdd-music-hard": "n02787622 n03495258 n02787622 n03452741 n02676566 n04141076 n02992211 n02672831 n03272010 n03372029",
    "cdd-music-easy": "n03250847 n03854065 n03017168 n03394916 n03721384 n03110669 n04487394 n03838899 n04536866 n04515003",
}
IMAGENETTE = ("tench", "English springer", "cassette player", "chain saw", "church", "French horn", "garbage truck",
              "gas pump", "golf ball", "parachute")


def test_wnid_table_is_the_sorted_imagenet_1k_list():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and list(wnids) == sorted(set(wnids))
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert imagenet_class_names()[0] == "tench" and imagenet_class_names()[999] == "toilet tissue"
    assert resolve_class("n01443537") == 1 and resolve_class("Goldfish") == 1 and resolve_class("nope") is None


def test_every_subset_lists_ten_classes_and_matches_the_papers_wnids():
    assert len(SUBSETS) == 7 + 16
    for name, s in SUBSETS.items():
        assert len(s.indices) == 10, name
        assert all(0 <= i < 1000 for i in s.indices)
    for name, text in PAPER_D1.items():
        assert list(get_subset(name).wnids) == text.split(), name
    assert get_subset("imagenette").class_names == IMAGENETTE
    assert get_subset("imagemeow").class_names[:5] == ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")


def test_music_hard_duplicate_is_kept_and_reported():
    s = get_subset("cdd-music-hard")
    assert len(s.indices) == 10 and len(s.distinct_indices) == 9
    assert duplicates(s) == {420: [0, 2]}
    msg = duplicate_warning(s)
    assert "n02787622" in msg and "9 distinct" in msg
    # no other list has a repeat
    assert [n for n, x in SUBSETS.items() if duplicates(x)] == ["cdd-music-hard"]
    info = dataset_info("cdd-music-hard")
    assert info.num_classes == 9 and info.class_names[0] == "banjo"
    r = run_cli("data", "subsets")
    assert r.code == 0 and "cdd-music-hard" in r.out and "9 distinct" in r.out


def test_subsets_are_registered_datasets():
    names = set(list_datasets())
    assert set(SUBSETS) <= names
    info = dataset_info("imagewoof")
    assert info.image_size == (128, 128) and info.mean == IMAGENET_MEAN and info.std == IMAGENET_STD
    assert info.class_names[0] == "Australian terrier"      # published order, not wnid order
    assert dataset_info("compdd-bird-hard").name == "cdd-bird-hard"  # alias
    with pytest.raises(UsageError, match="unknown ImageNet subset"):
        get_subset("imagenet-nope")


# ---------------------------------------------------------------------------- prepare


def make_tree(root, wnids, n_train=2, n_val=1, seed=0):
    """Tiny JPEGs in ImageNet's ImageFolder layout (odd sizes, one greyscale, to exercise the transform)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for w in wnids:
            d = root / split / w
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                arr = rng.integers(0, 255, (12 + 3 * k, 20, 3), dtype=np.uint8)
                im = Image.fromarray(arr)
                (im.convert("L") if k == 1 else im).save(d / f"{w}_{k}.JPEG", quality=90)
    return root


def test_prepare_writes_a_cache_that_the_dataset_loads(tmp_path):
    s = get_subset("imagenette")
    root = make_tree(tmp_path / "imagenet", s.wnids)
    r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "imagenette", "--data-root", tmp_path / "dd",
                "--quiet", "--workers", "2")
    assert r.code == 0, r.err
    assert "20 train and 10 test images" in r.out
    meta = json.loads((tmp_path / "dd" / "imagenette" / "meta.json").read_text())
    assert meta["wnids"] == list(s.wnids) and meta["images_per_class"]["train"] == [2] * 10

    train = load_dataset("imagenette", "train", tmp_path / "dd")
    test = load_dataset("imagenette", "test", tmp_path / "dd")
    assert train.images.shape == (20, 3, 128, 128) and test.images.shape == (10, 3, 128, 128)
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    # the reference transform, recomputed independently: the whole image squashed to 128 x 128, ImageNet stats
    from torchvision.transforms import functional as TF

    assert meta["resize"] == "squash" and train.info.resize == test.info.resize == "squash"
    with Image.open(root / "train" / s.wnids[3] / f"{s.wnids[3]}_0.JPEG") as im:
        ref = TF.to_tensor(TF.resize(im.convert("RGB"), [128, 128]))
    ref = TF.normalize(ref, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(train.images[6], ref, atol=0.6 / 255 / min(IMAGENET_STD))


def test_prepare_names_every_missing_folder(tmp_path):
    s = get_subset("imagesquawk")
    root = make_tree(tmp_path / "imagenet", s.wnids[:7], n_train=1)
    (root / "val" / s.wnids[0]).rename(root / "val" / "n00000000")
    r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "imagesquawk", "--out", tmp_path / "o", "--quiet")
    assert r.code == 2 and r.err.count("\n") == 1
    for w in s.wnids[7:]:
        assert r.err.count(w) == 2          # missing in train/ and val/
    assert f"val/ lacks 4 class folder(s): {s.wnids[0]}" in r.err
    assert not (tmp_path / "o").exists()
    r = run_cli("data", "prepare", "--imagenet-root", tmp_path / "nowhere", "--subset", "imagesquawk", "--quiet")
    assert r.code == 2 and "does not exist" in r.err
    (tmp_path / "flat" / "train").mkdir(parents=True)
    r = run_cli("data", "prepare", "--imagenet-root", tmp_path / "flat", "--subset", "imagesquawk", "--quiet")
    assert r.code == 2 and "no val/ folder" in r.err


def test_prepare_music_hard_warns_and_keeps_nine_classes(tmp_path):
    s = get_subset("cdd-music-hard")
    root = make_tree(tmp_path / "imagenet", set(s.wnids), n_train=1)
    r = run_cli("data", "prepare", "--imagenet-root", root, "--subset", "cdd-music-hard", "--out", tmp_path / "m",
                "--quiet")
    assert r.code == 0, r.err
    assert "warning" in r.err and "n02787622" in r.err and "9 distinct" in r.err
    ds = load_dataset("cdd-music-hard", "train", tmp_path / "m")
    assert ds.info.num_classes == 9 and len(ds) == 9
    # a cache of another subset is refused rather than loaded under the wrong class names
    with pytest.raises(UsageError, match="holds dataset 'cdd-music-hard'"):
        load_dataset("cdd-music-easy", "train", tmp_path / "m")
