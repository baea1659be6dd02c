"""Every chapter runs in Colab as it is: its first cell installs the library when
missing, its Colab links open the right notebook of this repository, and it reads data
only through ``betavae_lib.data``."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml
from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
HTML = ROOT / "_build" / "html"

_eb = load_tool("execute_book")
CHAPTERS = _eb.toc_notebooks(ROOT)


def colab_link(path: str) -> str:
    """The Colab URL of notebook ``path`` (relative to the book root) for this
    repository and branch."""
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    book = CONFIG["repository"].get("path_to_book", "").strip("/")
    branch = CONFIG["repository"].get("branch", "main")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_repo}/blob/{branch}/" + (
        f"{book}/{path}" if book else path
    )


def code_cells(path: str) -> list[str]:
    nb = nbformat.read(ROOT / path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def python_of(cell: str) -> str:
    """The cell as IPython runs it (``%pip`` becomes
    ``get_ipython().run_line_magic(...)``)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell)


# Run only the cell's install fallback (its first try/except): once with betavae_lib
# importable, then once with it hidden until the fake ``%pip`` "installs" it. One
# interpreter, so torch is imported once.
FALLBACK_PROBE = r"""
import ast, importlib.abc, json, sys

class Hide(importlib.abc.MetaPathFinder):
    hidden = False
    def find_spec(self, name, path=None, target=None):
        if self.hidden and name.split(".")[0] == "betavae_lib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

hide = Hide()
sys.meta_path.insert(0, hide)

class FakeIPython:
    def run_line_magic(self, magic, line):
        calls.append([magic, line])
        hide.hidden = False  # as if pip had installed it

tree = ast.parse(sys.argv[1])
first_try = next(node for node in tree.body if isinstance(node, ast.Try))
code = compile(ast.Module(body=[first_try], type_ignores=[]), "setup cell", "exec")
results = {}
for library in ("installed", "missing"):
    for name in [m for m in sys.modules if m.split(".")[0] == "betavae_lib"]:
        del sys.modules[name]
    hide.hidden, calls = library == "missing", []
    namespace = {"get_ipython": FakeIPython}
    exec(code, namespace)
    imported = getattr(namespace.get("betavae_lib"), "__name__", None)
    results[library] = {"calls": calls, "imported": imported}
print(json.dumps(results))
"""


def run_fallback(cell: str) -> dict:
    """``{"installed": {"calls": [...], "imported": ...}, "missing": {...}}`` for the
    cell's fallback."""
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_PROBE, python_of(cell)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Reading files a Colab runtime does not have. Data comes from betavae_lib.data
# (load_dataset), which downloads and checks what it needs.
LOCAL_READS = {
    "open()": r"(?<![\w.])open\(",
    "numpy load": r"\b(?:np|numpy)\.(?:load|loadtxt|genfromtxt|fromfile)\(",
    "torch.load": r"\btorch\.load\(",
    "pickle/json load": r"\b(?:pickle|json|joblib)\.load\(",
    "pandas read": r"\bread_(?:csv|parquet|pickle|json|excel|table)\(",
    "image read": r"\b(?:imread|Image\.open)\(",
    "h5py": r"\bh5py\.File\(",
    "repository or absolute path": r"""["'](?:\.\./|/work/|/home/|/Users/|/content/"""
    r"""|~/|[A-Za-z]:\\)""",
    "BETAVAE_DATA_DIR set in a chapter": r"environ\[?\W*BETAVAE_DATA_DIR\W*\]?\s*="
    r"|setenv\(\W*BETAVAE_DATA_DIR",
    "Path.read_*": r"\.read_(?:bytes|text)\(",
}


def without_comments(code: str) -> str:
    """``code`` (a cell, magics allowed) as Python with its comments removed."""
    code = python_of(code)
    try:
        tokens = [
            t
            for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type != tokenize.COMMENT
        ]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return code


def local_reads(code: str) -> list[str]:
    """Names of the ``LOCAL_READS`` patterns found in ``code`` (comments ignored)."""
    code = without_comments(code)
    return [name for name, pattern in LOCAL_READS.items() if re.search(pattern, code)]


# ------------------------------------------------------------------------------ tests
def test_launch_buttons_and_repository_are_configured():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), REPO_URL
    assert CONFIG["launch_buttons"]["colab_url"].startswith(
        "https://colab.research.google.com"
    )
    assert (
        colab_link("notebooks/01_first_vae.ipynb")
        == f"https://colab.research.google.com/github/{REPO_URL[19:]}/blob/main/notebooks/01_first_vae.ipynb"
    )


def test_local_read_scanner_flags_what_it_should():
    flagged = {
        "x = np.load('digits.npz')": "numpy load",
        "with open(path) as f:\n    pass": "open()",
        "state = torch.load('model.pt')": "torch.load",
        "images = load_dataset('mnist', root='../data')": "repository or absolute path",
        "os.environ['BETAVAE_DATA_DIR'] = '/tmp'": "BETAVAE_DATA_DIR set in a chapter",
    }
    for code, name in flagged.items():
        assert name in local_reads(code), code
    for code in (
        "train = load_dataset('mnist', 'train')",
        "webbrowser.open(url)",
        "fig.savefig('fig.png')",
        "# np.load('x') in a comment",
        "model = checkpoints.load(saved_path)",
    ):
        assert local_reads(code) == [], code


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: Path(p).stem)
def test_first_cell_installs_the_library_when_missing(path):
    first = code_cells(path)[0]
    import_line = r"\s+import betavae_lib(?:\s+# noqa: F401)?\s*"
    assert re.search(rf"^try:\s*\n{import_line}$", first, flags=re.M), (
        "no `try: import betavae_lib`"
    )
    assert re.search(
        r"^except ImportError:\s*\n\s+%pip install .*\n\s+import betavae_lib",
        first,
        flags=re.M,
    ), "no `except ImportError:` with `%pip install` and the import again"
    pip_line = next(line for line in first.splitlines() if "%pip install" in line)
    name = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]["name"]
    # The URL is the cell's BOOK_REPO, which IPython expands in the magic's line.
    repo = re.search(r'^BOOK_REPO = "([^"]+)"$', first, flags=re.M)
    assert repo, 'no BOOK_REPO = "https://github.com/..." in the setup cell'
    assert repo.group(1) == REPO_URL, f"BOOK_REPO is {repo.group(1)}, not {REPO_URL}"
    assert f"{name} @ git+{{BOOK_REPO}}" in pip_line, (
        f"installs something other than this repository: {pip_line}"
    )

    assert run_fallback(first) == {
        "installed": {"calls": [], "imported": "betavae_lib"},
        "missing": {
            "calls": [["pip", pip_line.split("%pip ", 1)[1].strip()]],
            "imported": "betavae_lib",
        },
    }


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: Path(p).stem)
def test_colab_badge_opens_this_notebook(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    first_md = next(c.source for c in nb.cells if c.cell_type == "markdown")
    links = re.findall(
        r"\]\((https://colab\.research\.google\.com/github/[^)\s]+)\)", first_md
    )
    assert links == [colab_link(path)], (
        f"Colab badge links {links}, expected {colab_link(path)}"
    )


@pytest.mark.skipif(
    not (HTML / "index.html").is_file(),
    reason="the book is not built (`jupyter-book build .`)",
)
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: Path(p).stem)
def test_built_page_launch_button_opens_this_notebook(path):
    page = HTML / f"{path[:-6]}.html"
    assert page.is_file(), f"{page} missing: rebuild the book"
    text = page.read_text(encoding="utf-8")
    buttons = re.findall(r'<a href="([^"]+)"[^>]*title="Launch on Colab"', text)
    assert buttons == [colab_link(path)], buttons
    assert buttons[0].endswith(f"notebooks/{Path(path).name}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: Path(p).stem)
def test_no_local_file_reads(path):
    found = {
        i: hits
        for i, code in enumerate(code_cells(path))
        if (hits := local_reads(code))
    }
    assert not found, f"code cells reading local files (use betavae_lib.data): {found}"


def test_set_repository_rewrites_every_copy_of_the_url(tmp_path):
    """tools/set_repository.py changes the one setting and every copy of it."""
    import shutil

    tool = load_tool("set_repository")
    for path in tool.files_to_rewrite(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    new = "https://github.com/someone/a-fork"
    changed = tool.set_repository(new, root=tmp_path)
    assert tmp_path / "_config.yml" in changed
    assert tool.current_url(tmp_path) == new
    for path in tool.files_to_rewrite(tmp_path):
        text = path.read_text(encoding="utf-8")
        assert REPO_URL not in text and REPO_URL[19:] not in text, path
    for path in CHAPTERS:
        first = nbformat.read(tmp_path / path, as_version=4).cells[0].source
        assert f"/github/someone/a-fork/blob/main/{path}" in first
    with pytest.raises(ValueError, match="OWNER/NAME"):
        tool.set_repository("https://example.org/x", root=tmp_path)
