"""The ImageNet-1K subsets of the distillation literature, as class lists, and their registration.

A subset is ten ImageNet-1K classes. Each is stored as ImageNet class *indices* (the position of the
class's WordNet id in the sorted list of the 1000 ImageNet-1K wnids, which is how pretrained models
number their outputs) and resolved to wnids (how ImageNet's folders are named) through the shipped
``imagenet_wnids.txt``. The class order of a prepared subset is the published list's order, so label
``i`` of ``imagenette`` is ImageNet output ``indices[i]`` and a pretrained model's logits can be
mapped to the subset's labels (EDF's DAE relies on that: ``--dae-class-map imagenette``).

Sources: ImageNette/ImageWoof (fast.ai), ImageMeow/ImageYellow/ImageFruit/ImageSquawk (MTT), the
IN1K-CIFAR-10 set of EDF's Figure 1, and the sixteen Comp-DD subsets of EDF's Appendix D.1 (its
wnids, cross-checked against these indices by the tests).

The paper's Music-Hard lists banjo (n02787622) twice. The list is kept as published, so the
registry says what the paper says, but the duplicate is reported (:func:`duplicates`, a warning
when the subset is prepared) and the prepared dataset has the nine distinct classes: two classes
with identical images would only teach a network to guess between them.

Every subset is registered as a dataset (``--dataset imagenette``) whose files are the cache that
``ddtool data prepare`` writes (see :mod:`ddtoolbox.data.prepare`); :mod:`ddtoolbox.data.builtin`
registers each subset as a dataset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .info import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo

WNID_FILE = "imagenet_wnids.txt"
IMAGE_SIZE = 128  # the ImageNet-subset convention: 128 x 128 (see prepare.py for how images are resized)


@lru_cache(maxsize=1)
def _wnid_table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files(__package__).joinpath(WNID_FILE).read_text(encoding="utf-8")
    rows = [line.split(" ", 1) for line in text.splitlines() if line.strip()]
    wnids = tuple(r[0] for r in rows)
    names = tuple(r[1].strip() if len(r) > 1 else r[0] for r in rows)
    # the index <-> wnid correspondence rests on these two facts; a damaged install must not
    # silently shift every class by one
    if len(wnids) != 1000 or list(wnids) != sorted(set(wnids)):
        raise RuntimeError(f"{WNID_FILE} is damaged: expected 1000 sorted, distinct wnids; reinstall ddtoolbox")
    return wnids, names


def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K wnids, sorted: ``imagenet_wnids()[i]`` is output ``i`` of a pretrained model."""
    return _wnid_table()[0]


def imagenet_class_names() -> tuple[str, ...]:
    """The first WordNet lemma of each class ("tench", "goldfish", ...), in index order."""
    return _wnid_table()[1]


@lru_cache(maxsize=1)
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def wnid_to_index(wnid: str) -> int | None:
    """ImageNet-1K index of ``wnid``, or None for a wnid that is not one of the 1000 classes."""
    return _wnid_index().get(wnid)


@lru_cache(maxsize=1)
def _name_index() -> dict[str, int]:
    # the first lemmas are distinct across the 1000 classes ("crane" vs "crane_bird"), so a name
    # identifies a class as well as its wnid does
    return {n.lower(): i for i, n in enumerate(imagenet_class_names())}


def resolve_class(key: str) -> int | None:
    """ImageNet-1K index of a wnid or a class name ("tench", case-insensitive), or None."""
    i = wnid_to_index(key)
    return i if i is not None else _name_index().get(key.strip().lower())


@dataclass(frozen=True)
class ImageNetSubset:
    """One published subset: its registered name, ImageNet-1K indices (published order) and source."""

    name: str
    title: str
    indices: tuple[int, ...]
    source: str

    @property
    def wnids(self) -> tuple[str, ...]:
        table = imagenet_wnids()
        return tuple(table[i] for i in self.indices)

    @property
    def distinct_indices(self) -> tuple[int, ...]:
        """The classes a prepared dataset holds: published order, later repeats dropped."""
        return tuple(dict.fromkeys(self.indices))

    @property
    def class_names(self) -> tuple[str, ...]:
        names = imagenet_class_names()
        return tuple(names[i] for i in self.distinct_indices)


def duplicates(subset: ImageNetSubset) -> dict[int, list[int]]:
    """ImageNet index -> positions in the published list, for every index listed more than once."""
    counts = Counter(subset.indices)
    return {i: [p for p, j in enumerate(subset.indices) if j == i] for i, n in counts.items() if n > 1}


def duplicate_warning(subset: ImageNetSubset) -> str | None:
    """The one-line warning for a subset with a repeated class, or None."""
    dup = duplicates(subset)
    if not dup:
        return None
    names, wnids = imagenet_class_names(), imagenet_wnids()
    listed = "; ".join(f"{wnids[i]} ({names[i]}) at positions {', '.join(map(str, pos))}" for i, pos in dup.items())
    return (f"{subset.title} as published lists {listed}: it has {len(subset.distinct_indices)} distinct classes, "
            f"not {len(subset.indices)}; the prepared dataset holds those {len(subset.distinct_indices)} "
            f"(see docs/compdd.md)")


_FASTAI = "fast.ai imagenette repository"
_MTT = "Cazenavette et al. 2022 (MTT)"
_EDF_FIG1 = "EDF (the seed paper), Figure 1"
_EDF_D1 = "EDF (the seed paper), Appendix D.1 (Comp-DD)"

_CLASSIC = [
    ("imagenette", "ImageNette", (0, 217, 482, 491, 497, 566, 569, 571, 574, 701), _FASTAI),
    ("imagewoof", "ImageWoof", (193, 182, 258, 162, 155, 167, 159, 273, 207, 229), _FASTAI),
    ("imagemeow", "ImageMeow", (281, 282, 283, 284, 285, 291, 292, 290, 289, 287), _MTT),
    ("imagesquawk", "ImageSquawk", (84, 130, 88, 144, 145, 22, 96, 9, 100, 89), _MTT),
    ("imagefruit", "ImageFruit", (953, 954, 949, 950, 951, 957, 952, 945, 943, 948), _MTT),
    ("imageyellow", "ImageYellow", (309, 986, 954, 951, 987, 779, 599, 291, 72, 11), _MTT),
    ("in1k-cifar10", "IN1K-CIFAR-10", (404, 136, 130, 283, 354, 252, 31, 339, 628, 864), _EDF_FIG1),
]

#: category -> (hard, easy) as published (Appendix D.1 gives wnids; these are their indices)
COMPDD = {
    "bird": ((14, 19, 91, 15, 13, 95, 10, 16, 20, 12), (130, 140, 83, 142, 134, 139, 88, 90, 144, 21)),
    "car": ((802, 660, 829, 627, 609, 575, 573, 867, 734, 408), (581, 535, 717, 817, 511, 436, 656, 757, 661, 751)),
    "dog": ((239, 238, 247, 195, 151, 266, 157, 181, 154, 217), (193, 180, 227, 167, 246, 248, 224, 177, 269, 252)),
    "fish": ((0, 391, 389, 395, 4, 396, 2, 394, 50, 103), (5, 1, 6, 397, 390, 3, 392, 393, 148, 147)),
    "snake": ((46, 42, 41, 40, 43, 58, 65, 59, 53, 52), (64, 57, 55, 56, 61, 62, 68, 67, 54, 60)),
    "insect": ((301, 326, 324, 305, 325, 300, 318, 320, 70, 322), (323, 314, 310, 309, 306, 308, 302, 313, 303, 315)),
    "round": ((852, 805, 736, 892, 429, 574, 722, 522, 752, 971), (417, 560, 953, 826, 426, 981, 430, 890, 746, 768)),
    # 420 (n02787622, banjo) twice: as published
    "music": ((420, 594, 420, 579, 402, 776, 486, 401, 546, 558), (542, 687, 494, 566, 642, 513, 875, 683, 889, 881)),
}


def _build() -> dict[str, ImageNetSubset]:
    out = {name: ImageNetSubset(name, title, idx, src) for name, title, idx, src in _CLASSIC}
    for cat, (hard, easy) in COMPDD.items():
        for level, idx in (("hard", hard), ("easy", easy)):
            name = f"cdd-{cat}-{level}"
            out[name] = ImageNetSubset(name, f"CDD-{cat.capitalize()}-{level.capitalize()}", idx, _EDF_D1)
    return out


SUBSETS: dict[str, ImageNetSubset] = _build()


def subset_names() -> list[str]:
    return list(SUBSETS)


def get_subset(name: str) -> ImageNetSubset:
    """The subset called ``name`` (case-insensitive; ``compdd-`` is accepted for ``cdd-``)."""
    from ddtoolbox.errors import UsageError

    key = name.strip().lower().replace("compdd-", "cdd-").replace("comp-dd-", "cdd-")
    if key not in SUBSETS:
        raise UsageError(f"unknown ImageNet subset '{name}'; use one of {', '.join(SUBSETS)} "
                         f"(see 'ddtool data subsets')")
    return SUBSETS[key]


def class_maps() -> dict[str, tuple[int, ...]]:
    """Subset name -> ImageNet output index of each class of the prepared dataset (label order)."""
    return {name: s.distinct_indices for name, s in SUBSETS.items()}


def subset_info(subset: ImageNetSubset) -> DatasetInfo:
    return DatasetInfo(subset.name, 3, (IMAGE_SIZE, IMAGE_SIZE), len(subset.distinct_indices),
                       IMAGENET_MEAN, IMAGENET_STD, subset.class_names)
