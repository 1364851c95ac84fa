"""docs/architecture.md's layer table is the import-linter layering, row for row, so the map cannot drift."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def linter_layers():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    rows = cfg["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [{m.strip() for m in row.split("|")} for row in rows]


def doc_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    return [set(re.findall(r"`([\w.]+)`", row.split("|")[2])) for row in rows]


def test_the_layer_table_is_the_import_linter_layering():
    assert doc_layers() == linter_layers()


def test_the_architecture_doc_stays_short():
    assert len((ROOT / "docs" / "architecture.md").read_text().splitlines()) <= 130   # about two pages
