"""Choosing the easy and hard subset of each category from per-class complexity scores.

EDF ranks the classes of each hand-picked category by complexity and takes the ten least complex
as the *easy* subset and the ten most complex as the *hard* one (Section 3). Categories come from a
TOML file (one key per category, a list of wnids, ImageNet indices or class names); the eight of
the paper ship as ``categories.toml`` beside this module and are the default.

Ties are broken by wnid (then name) so the same scores always give the same subsets.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ddtoolbox.errors import UsageError, warn

SIZE = 10
DEFAULT_CATEGORIES = "categories.toml"



def load_categories(path=None) -> tuple[dict[str, list[str]], str]:
    """Category -> class keys (wnids or names), and where they came from."""
    from ddtoolbox.data.imagenet_subsets import imagenet_wnids

    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_CATEGORIES).read_text(encoding="utf-8")
        where = f"the default ({DEFAULT_CATEGORIES}: EDF's eight categories)"
    else:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"--categories file {p} does not exist; give a TOML file like "
                             f"'bird = [\"n01530575\", ...]' (one key per category)")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--categories file {p} cannot be read ({exc})") from exc
        where = str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--categories file {where} is not valid TOML ({exc}); write one key per category, "
                         f"e.g. bird = [\"n01530575\", \"n01531178\"]") from exc
    wnids = imagenet_wnids()
    out: dict[str, list[str]] = {}
    for cat, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"--categories {where}: '{cat}' must be a non-empty list of wnids, ImageNet indices or "
                             f"class names")
        keys = []
        for e in entries:
            if isinstance(e, int) and not isinstance(e, bool):
                if not 0 <= e < len(wnids):
                    raise UsageError(f"--categories {where}: '{cat}' lists ImageNet index {e}, outside 0..999")
                keys.append(wnids[e])
            elif isinstance(e, str) and e.strip():
                keys.append(e.strip())
            else:
                raise UsageError(f"--categories {where}: '{cat}' has entry {e!r}; use wnids, indices or class names")
        out[cat] = list(dict.fromkeys(keys))
    if not out:
        raise UsageError(f"--categories {where} defines no category")
    return out, where


def select(rows: list[dict], categories: dict[str, list[str]], size: int = SIZE, warn=warn) -> dict:
    """Easy and hard ``size`` classes of each category, with their scores and the subset means."""
    from ddtoolbox.data.imagenet_subsets import COMPDD, imagenet_wnids, wnid_to_index

    by_key: dict[str, dict] = {}
    for r in rows:
        for key in (r.get("wnid"), r.get("name")):
            if key:
                by_key.setdefault(key, r)
    result = {}
    for cat, keys in categories.items():
        scored = [by_key[k] for k in keys if k in by_key and by_key[k]["images"] > 0]
        scored = list({id(r): r for r in scored}.values())
        unscored = [k for k in keys if k not in by_key or by_key[k]["images"] == 0]
        if len(scored) < size:
            raise UsageError(f"category '{cat}' has {len(scored)} scored classes, fewer than the {size} a subset "
                             f"needs (no score for {', '.join(unscored[:10])}{', ...' if len(unscored) > 10 else ''}); "
                             f"score those classes or lower --size")
        if unscored:
            warn(f"category '{cat}': {len(unscored)} of its {len(keys)} classes have no score and are left out "
                 f"({', '.join(unscored[:6])}{', ...' if len(unscored) > 6 else ''})")
        ranked = sorted(scored, key=lambda r: (r["complexity"], r.get("wnid") or "", r["name"]))
        easy, hard = ranked[:size], ranked[::-1][:size]
        shared = [r["wnid"] or r["name"] for r in easy if r in hard]
        if shared:
            warn(f"category '{cat}' has only {len(scored)} scored classes, fewer than 2 x {size}: its easy and hard "
                 f"subsets share {', '.join(shared)}")

        def entry(r):
            return {"wnid": r.get("wnid") or None, "name": r["name"],
                    "imagenet_index": wnid_to_index(r["wnid"]) if r.get("wnid") else None,
                    "complexity": r["complexity"], "high_activation_fraction": r["high_activation_fraction"],
                    "images": r["images"]}

        out = {"classes_ranked": len(scored), "easy": [entry(r) for r in easy], "hard": [entry(r) for r in hard],
               "easy_complexity": sum(r["complexity"] for r in easy) / size,
               "hard_complexity": sum(r["complexity"] for r in hard) / size}
        if cat in COMPDD:
            # how the selection compares with the paper's (meaningful with the paper's model and data)
            wn = imagenet_wnids()
            pub_hard, pub_easy = ({wn[i] for i in idx} for idx in COMPDD[cat])
            out["published_overlap"] = {"easy": sum(e["wnid"] in pub_easy for e in out["easy"]),
                                        "hard": sum(e["wnid"] in pub_hard for e in out["hard"])}
        result[cat] = out
    return result
