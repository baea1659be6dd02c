"""Point the book at another GitHub repository: one setting, written everywhere.

The book's home is ``repository.url`` in ``_config.yml``. The launch buttons read it
there; every chapter repeats it twice, in its Colab badge and in its install cell,
because a chapter opened alone in Colab has no ``_config.yml`` to read;
``tests/test_colab.py`` checks that all of them agree. This script changes the setting
and every copy of it (chapter sources and notebooks, README):

    python tools/set_repository.py https://github.com/OWNER/NAME

The published book is then at ``https://OWNER.github.io/NAME/`` (GitHub Pages, deployed
by ``.github/workflows/book.yml``).

Both the new URL and the one ``_config.yml`` names now must be exactly
``https://github.com/OWNER/NAME`` (no ``.git``, no trailing text): the old one is what
is searched for, so an empty or partial one would rewrite unrelated text. Only whole
occurrences are replaced (``…/NAME-data`` is another repository). Every file is
rewritten, or none: the new texts are all computed and checked first, each file is
replaced atomically, ``_config.yml`` last, and a failure part-way restores the files
already written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# GitHub: an owner is 1-39 letters, digits or single hyphens, not at either end; a
# repository name is letters, digits, '.', '-', '_' (not '.' or '..', no '.git').
OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
NAME = r"(?!\.{1,2}$)(?!.*\.git$)[A-Za-z0-9_.-]{1,100}"
URL = re.compile(rf"https://github\.com/(?P<owner>{OWNER})/(?P<name>{NAME})")


def parse_url(url, what: str = "the repository URL") -> tuple[str, str]:
    """``(owner, name)`` of ``https://github.com/OWNER/NAME`` (one trailing slash
    allowed); ValueError saying what is wrong otherwise."""
    if not isinstance(url, str):
        raise ValueError(f"{what} must be a string, got {type(url).__name__}")
    text = url[:-1] if url.endswith("/") else url
    match = URL.fullmatch(text)
    if match is None:
        hint = ""
        if text != text.strip():
            hint = " (it has spaces or a line break around it)"
        elif text.endswith(".git"):
            hint = " (leave out the .git)"
        raise ValueError(
            f"{what} must be https://github.com/OWNER/NAME, got {url!r}{hint}"
        )
    return match["owner"], match["name"]


def current_url(root: Path = ROOT) -> str:
    """The repository URL that ``_config.yml`` names now (checked: see
    :func:`parse_url`)."""
    path = root / "_config.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    url = (config or {}).get("repository", {}) if isinstance(config, dict) else None
    url = url.get("url") if isinstance(url, dict) else None
    owner, name = parse_url(
        url,
        f"repository.url in {path} (the URL to replace; set it by hand to the "
        f"repository the files name now)",
    )
    return f"https://github.com/{owner}/{name}"


def files_to_rewrite(root: Path = ROOT) -> list[Path]:
    """Every file that holds a copy of the repository URL."""
    chapters = sorted((root / "notebooks").glob("*.ipynb"))
    sources = sorted((root / "notebooks" / "src").glob("*.py"))
    return [root / "_config.yml", root / "README.md", *chapters, *sources]


def _replace(text: str, old: str, new: str) -> str:
    """``text`` with every whole occurrence of the URL ``old`` (not followed by more
    of a name) and of its Colab form ``/github/OWNER/NAME/`` replaced by ``new``'s."""
    tail = r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9_-])"  # a '.' ending a sentence is not
    text = re.sub(re.escape(old) + tail, lambda _: new, text)
    old_path, new_path = old[len("https://github.com/") :], new[19:]
    return text.replace(f"/github/{old_path}/", f"/github/{new_path}/")


def _check_rewritten(path: Path, text: str, new: str) -> None:
    """The rewritten file still parses as what it is."""
    if path.suffix == ".ipynb":
        json.loads(text)
    elif path.name == "_config.yml":
        config = yaml.safe_load(text)
        if config["repository"]["url"] != new:
            raise ValueError(f"{path}: repository.url would not be {new}")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def set_repository(new: str, root: Path = ROOT) -> list[Path]:
    """Replace the current URL (and its Colab form ``github/OWNER/NAME``) by ``new``.

    Returns the files that changed. All files change, or none (module docstring).
    """
    owner, name = parse_url(new, "the new repository URL")
    new = f"https://github.com/{owner}/{name}"
    old = current_url(root)
    updates = []
    for path in files_to_rewrite(root):
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        updated = _replace(text, old, new)
        if updated != text:
            _check_rewritten(path, updated, new)
            updates.append((path, text, updated))
    # _config.yml last: until it is written, a rerun still finds the old URL there
    updates.sort(key=lambda update: update[0].name == "_config.yml")
    written = []
    try:
        for path, text, updated in updates:
            _write_atomic(path, updated)
            written.append((path, text))
    except BaseException:
        for path, text in reversed(written):
            _write_atomic(path, text)
        raise
    return [path for path, _, _ in updates]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="https://github.com/OWNER/NAME")
    args = parser.parse_args(argv)
    try:
        changed = set_repository(args.url)
    except (ValueError, OSError, yaml.YAMLError) as e:
        parser.error(str(e))
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    owner, name = parse_url(args.url)
    print(f"published book: https://{owner}.github.io/{name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
