"""What a dataset *is*, independent of where its files live.

Kept separate from the loaders so that code which only needs shapes, class names or
normalisation constants (model construction, picture saving, reading a saved synthetic set)
never has to touch the disk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Frozen and made of tuples so it can be hashed, compared and stored next to a synthetic set:
    a distilled set is only meaningful together with the normalisation it was learned under.

    The last two fields describe how the loaded pixels were made rather than the dataset itself;
    buffers and synthetic sets record them and the commands refuse to mix sets that differ:

    * ``resize``: how the images were brought to ``image_size``: ``None`` for datasets stored at
      their size, ``"squash"`` (whole image resized, aspect ratio not kept) or ``"crop"`` (shorter
      side resized, then a centred square) for prepared ImageNet subsets and resized image folders.
    * ``zca``: the images are ZCA-whitened after normalisation (:mod:`ddtoolbox.data.zca`).
    * ``source``: which copy of the data the pixels are: the content id of a prepared store
      (:mod:`ddtoolbox.data.store`), or None for files read as they are (IDX, CIFAR batches).
    """

    name: str
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize: str | None = None
    zca: bool = False
    source: str | None = None

    def __post_init__(self) -> None:
        # These are programming errors in a registration, not user input, hence ValueError.
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need {self.channels} entries, one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std entries must be positive")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"{self.name}: image_size must be (H, W) with positive entries")
        if self.resize not in RESIZE_MODES + (None,):
            raise ValueError(f"{self.name}: resize must be one of {RESIZE_MODES} or None, got {self.resize!r}")


#: how images of other sizes are brought to a square: the whole image resized (the reference
#: implementations' way for ImageNet subsets), or the shorter side resized and the centre cropped
RESIZE_MODES = ("squash", "crop")


# Normalisation constants. These are the values the dataset-distillation literature uses (DC, DSA,
# DM, MTT all share them), so synthetic sets stay comparable with published ones even where they
# differ slightly from the exact statistics of the pixels (CIFAR-10's std is the classic example).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2861,), (0.3530,)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# Fine labels in label-index order (alphabetical), as stored in cifar-100-python/meta.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)


def image_record(info: DatasetInfo) -> dict:
    """How the images of ``info`` were made, as buffers and synthetic sets record it.

    ``source`` is recorded only when known, so records of unprepared data read as they always did.
    """
    record = {"resize": info.resize, "zca": bool(info.zca)}
    if info.source:
        record["source"] = info.source
    return record


def check_same_images(now: DatasetInfo, recorded: dict, what: str, remake: str) -> None:
    """Refuse to combine images made differently (:func:`image_record`) in one line that names the fix.

    :param now: the info of the split loaded now.
    :param recorded: what ``what`` (a buffer, a synthetic set, the train split) was made from; a
        record without ``resize`` or ``zca`` keys counts as unresized and un-whitened, and one
        without ``source`` (made before copies were told apart) fits any copy.
    :param remake: the other way out, e.g. "make the buffer again with 'ddtool buffer'".
    """
    from ddtoolbox.errors import UsageError

    then = recorded.get("resize")
    if now.resize != then:
        if then is None:
            raise UsageError(f"{what} does not record a --resize, but the {now.name} images found now were prepared "
                             f"with --resize {now.resize}; {remake}")
        found = f"--resize {now.resize}" if now.resize else "no recorded --resize"
        raise UsageError(f"{what} was made from {now.name} prepared with --resize {then}, but the cache found now has "
                         f"{found}; point --data-root at a cache from 'ddtool data prepare --resize {then}', or {remake}")
    then_source = recorded.get("source")
    if then_source and now.source != then_source:
        found = f"copy {now.source}" if now.source else "files that are not a prepared store"
        raise UsageError(f"{what} was made from the {now.name} copy {then_source}, but the data found now is {found}; "
                         f"point --data-root at the copy it was made from (its meta.json has that content_id), "
                         f"or {remake}")
    zca = bool(recorded.get("zca", False))
    if bool(now.zca) != zca:
        if zca:
            raise UsageError(f"{what} was made from ZCA-whitened images; add --zca, or {remake}")
        raise UsageError(f"{what} was made from images without ZCA whitening; drop --zca, or {remake}")
