"""Each chapter is a jupytext pair (``jupytext.toml``): ``notebooks/src/NAME.py``, the
py:percent source that is edited, and ``notebooks/NAME.ipynb``, the same cells with the
outputs the book shows. ``jupytext --sync notebooks/src/NAME.py`` brings the notebook
up to date and keeps the outputs of unchanged cells."""

import ast
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_config
from jupytext.paired_paths import paired_paths

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str]]:
    """``(cell type, source)`` of each cell of ``path`` read with jupytext."""
    return [(c.cell_type, c.source) for c in jupytext.read(path).cells]


def sync_hint(stem: str) -> str:
    return (
        f"run `jupytext --sync notebooks/src/{stem}.py`, then re-execute the chapter "
        f"(`python tools/execute_book.py --only {stem}`)"
    )


def test_every_notebook_has_a_source():
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupytext_pairs_the_notebook_with_its_source(nb):
    config = load_jupytext_config(str(nb))
    assert config is not None, "no jupytext.toml at the repository root"
    formats = config.default_formats(str(nb.relative_to(ROOT)))
    pair = [p for p, _ in paired_paths(str(nb.relative_to(ROOT)), "ipynb", formats)]
    assert pair == [f"notebooks/{nb.name}", f"notebooks/src/{nb.stem}.py"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_source_is_a_python_percent_script(src):
    """Magics are commented (``# %pip``) so the source is Python; the header names the
    percent format (without it jupytext guesses "hydrogen" from the indented ``# %pip``
    and would leave the magic commented in the notebook)."""
    text = src.read_text(encoding="utf-8")
    ast.parse(text, filename=str(src))
    header = jupytext.read(src).metadata["jupytext"]["text_representation"]
    assert header["format_name"] == "percent", header


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_source_matches_stored_notebook(src):
    source_cells = cells(src)
    empty = [i for i, (_, text) in enumerate(source_cells) if not text.strip()]
    assert not empty, f"{src.name}: empty cells {empty} (a doubled `# %%` marker?)"
    assert source_cells == cells(ROOT / "notebooks" / f"{src.stem}.ipynb"), (
        f"notebooks/{src.stem}.ipynb differs from its source: {sync_hint(src.stem)}"
    )
