"""Point the book at another GitHub repository: one setting, written everywhere.

The book's home is ``repository.url`` in ``_config.yml``. The launch buttons read it
there; every chapter repeats it twice, in its Colab badge and in its install cell,
because a chapter opened alone in Colab has no ``_config.yml`` to read;
``tests/test_colab.py`` checks that all of them agree. This script changes the setting
and every copy of it (chapter sources and notebooks, README):

    python tools/set_repository.py https://github.com/OWNER/NAME

The published book is then at ``https://OWNER.github.io/NAME/`` (GitHub Pages, deployed
by ``.github/workflows/book.yml``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
URL = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def current_url(root: Path = ROOT) -> str:
    """The repository URL that ``_config.yml`` names now."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/")


def files_to_rewrite(root: Path = ROOT) -> list[Path]:
    """Every file that holds a copy of the repository URL."""
    chapters = sorted((root / "notebooks").glob("*.ipynb"))
    sources = sorted((root / "notebooks" / "src").glob("*.py"))
    return [root / "_config.yml", root / "README.md", *chapters, *sources]


def set_repository(new: str, root: Path = ROOT) -> list[Path]:
    """Replace the current URL (and its Colab form ``github/OWNER/NAME``) by ``new``.

    Returns the files that changed.
    """
    new = new.rstrip("/")
    if not URL.match(new):
        raise ValueError(f"expected https://github.com/OWNER/NAME, got {new!r}")
    old = current_url(root)
    pairs = [(old, new), (f"/github/{old[19:]}/", f"/github/{new[19:]}/")]
    changed = []
    for path in files_to_rewrite(root):
        text = path.read_text(encoding="utf-8")
        updated = text
        for a, b in pairs:
            updated = updated.replace(a, b)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="https://github.com/OWNER/NAME")
    args = parser.parse_args(argv)
    try:
        changed = set_repository(args.url)
    except ValueError as e:
        parser.error(str(e))
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    owner, name = args.url.rstrip("/")[19:].split("/")
    print(f"published book: https://{owner}.github.io/{name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
