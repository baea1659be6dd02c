"""Each chapter's editable source (notebooks/src/NAME.py) builds to the cells stored in notebooks/NAME.ipynb."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nbbuild import build  # noqa: E402

SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))


def _cells(path: Path) -> list[tuple[str, str]]:
    return [
        (c["cell_type"], "".join(c["source"]))
        for c in json.loads(path.read_text())["cells"]
    ]


def test_every_notebook_has_a_source():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks == [p.stem for p in SOURCES]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_source_matches_stored_notebook(src, tmp_path):
    built = tmp_path / "built.ipynb"
    build(str(src), str(built))
    assert _cells(built) == _cells(ROOT / "notebooks" / f"{src.stem}.ipynb"), (
        f"notebooks/{src.stem}.ipynb differs from its source: rebuild it with tools/nbbuild.py and re-execute it"
    )
