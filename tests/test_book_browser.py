"""The built book in a real browser: every page of `_build/html` opened from disk
(file://) in headless Chromium, with no network, checked for typeset math, figures,
animations, widgets, live latent explorers (driven through their self-test hook),
missing files and JavaScript errors. Screenshots of two pages: `_build/screenshots/`.

Runs after `jupyter-book build .` (CI builds the book first); skipped when the build or
Chromium is absent.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from conftest import (
    CHROMIUM,
    chromium_args,
    console_messages,
    load_tool,
    page_requests,
)

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CDN_HOSTS = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "unpkg.com")
# sphinx-thebe (pulled in by the theme) writes its config script into every page twice;
# the second copy fails to redeclare a const while the first works, so nothing on the
# page depends on it.
KNOWN_HARMLESS = ("Identifier 'THEBE_JS_URL' has already been declared",)

pytestmark = [
    pytest.mark.skipif(
        not (HTML / "index.html").is_file(),
        reason="the book is not built: run `jupyter-book build .` first (CI does)",
    ),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (CI: apt-get install chromium)",
    ),
]


_EXECUTOR = load_tool("execute_book")


def toc_files() -> list[str]:
    """Every page of _toc.yml without suffix (``notebooks/01_first_vae``), read with
    sphinx_external_toc as Jupyter Book reads it (the executor's ``toc_documents``)."""
    return _EXECUTOR.toc_documents(ROOT)


CHAPTERS = [p[:-6] for p in _EXECUTOR.toc_notebooks(ROOT)]
PAGES = [p for p in toc_files() if (HTML / f"{p}.html").is_file()]


# ----------------------------------------------------------------------------- chromium
@dataclass
class PageLoad:
    """What Chromium saw for one page: the DOM after scripts ran, console messages,
    files and URLs loaded (``remote``: every http(s) URL in the network log;
    ``requests``: the non-file URLs the page itself asked for, not the browser's
    background requests)."""

    dom: str
    console: list[str]
    files: list[str]
    remote: list[str]
    requests: list[str]


def loaded_files(log: str) -> list[str]:
    """file:// URLs Chromium started to load (logged by
    --vmodule=file_url_loader_factory=1)."""
    return re.findall(r"FileURLLoader::Start: (file://\S+)", log)


def remote_urls(netlog: Path) -> list[str]:
    """http(s) URLs in Chromium's network log (requests it tried to make)."""
    if not netlog.is_file():
        return []
    text = netlog.read_text(encoding="utf-8", errors="replace")
    return sorted(set(re.findall(r'"url":"(https?://[^"]+)"', text)))


def open_page(url: str, work: Path) -> PageLoad:
    """Open ``url`` in headless Chromium, every host name unresolvable (as offline);
    what it saw (``work``: a fresh folder)."""
    netlog = work / "netlog.json"
    cmd = chromium_args(work / "profile") + [
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--vmodule=file_url_loader_factory=1",
        f"--log-net-log={netlog}",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"chromium failed on {url}: {done.stderr[-2000:]}"
    return PageLoad(
        dom=done.stdout,
        console=console_messages(done.stderr),
        files=loaded_files(done.stderr),
        remote=remote_urls(netlog),
        requests=page_requests(netlog),
    )


_loads: dict[str, PageLoad] = {}


def load(page: str, tmp_path_factory) -> PageLoad:
    """Open ``_build/html/<page>.html`` once per test session and keep what Chromium
    saw."""
    if page not in _loads:
        work = tmp_path_factory.mktemp("chromium")
        _loads[page] = open_page((HTML / f"{page}.html").as_uri(), work)
    return _loads[page]


def source(page: str) -> str:
    return (HTML / f"{page}.html").read_text(encoding="utf-8")


def notebook(chapter: str):
    return nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)


def outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def has_animation(nb) -> bool:
    """Whether ``nb`` stores a matplotlib ``to_jshtml`` animation."""
    return any(
        "Animation(" in "".join(o.get("data", {}).get("text/html", ""))
        for o in outputs(nb)
    )


def widget_views(nb) -> int:
    """Widget outputs ``nb`` displays whose state it stores (so the built page can
    render them)."""
    state = (
        nb.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    views = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in outputs(nb)
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    return sum(1 for model_id in views if model_id in state)


EXPLORER_BLOCK = re.compile(
    r"<style>/\* The latent explorer.*?BetaVAEExplorer\.mount\(.*?\}\)\(\);</script>",
    re.S,
)
EXPLORER_WIDGET = "betavae_lib.explorer.LatentExplorer"  # its state's _anywidget_id


def explorers(nb) -> int:
    """Live latent explorers ``nb`` stores: ``traversal.live_explorer`` widgets whose
    state the notebook keeps (the book renders them from it), and the self-contained
    ``text/html`` explorers that notebooks executed before the widget store."""
    state = (
        nb.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    count = 0
    for o in outputs(nb):
        data = o.get("data", {})
        view = data.get("application/vnd.jupyter.widget-view+json")
        if view is not None:
            model = state.get(view.get("model_id"), {}).get("state", {})
            count += model.get("_anywidget_id") == EXPLORER_WIDGET
        elif 'class="bvx"' in "".join(data.get("text/html", "")):
            count += 1
    return count


# -------------------------------------------------------------------------------- tests
def test_the_book_has_pages():
    assert CHAPTERS, "no notebook chapters in _toc.yml"
    missing = [p for p in toc_files() if not (HTML / f"{p}.html").is_file()]
    assert not missing, (
        f"pages in _toc.yml missing from the build (rebuild the book): {missing}"
    )


def test_no_cdn_for_math_requirejs_or_widgets():
    """The built HTML points at the vendored copies, never at a CDN."""
    offenders = {}
    for page in HTML.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="replace")
        srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', text)
        bad = [s for s in srcs if s.startswith(("http:", "https:", "//"))]
        if bad:
            offenders[str(page.relative_to(HTML))] = bad
    assert not offenders, f"scripts loaded from the network: {offenders}"
    static = HTML / "_static" / "vendored"
    for name in (
        "mathjax/tex-mml-chtml.js",
        "requirejs/require.js",
        "jupyter-widgets/embed-amd.js",
        "anywidget/anywidget-offline.js",
        "anywidget/index.js",
    ):
        assert (static / name).is_file(), (
            f"{name} is not in the built book's _static/vendored"
        )


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_everything_it_asks_for(page, tmp_path_factory):
    """Every file the page loads exists, no request goes to a CDN, and no script error
    is uncaught."""
    seen = load(page, tmp_path_factory)
    assert any(u.split("?")[0].endswith(f"{page}.html") for u in seen.files), (
        "Chromium did not log its file loads (--vmodule=file_url_loader_factory=1); "
        "cannot check this page"
    )
    missing = sorted(
        {
            u
            for u in seen.files
            if not Path(urllib.parse.unquote(urllib.parse.urlsplit(u).path)).exists()
        }
    )
    assert not missing, f"{page} asks for files the build lacks: {missing}"
    cdn = [u for u in seen.remote if urllib.parse.urlsplit(u).hostname in CDN_HOSTS]
    assert not cdn, f"{page} requested CDN URLs: {cdn}"
    errors = [
        m
        for m in seen.console
        if m.startswith("Uncaught") and not any(k in m for k in KNOWN_HARMLESS)
    ]
    assert not errors, f"JavaScript errors on {page}: {errors}"


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(page, tmp_path_factory):
    n_math = len(
        re.findall(r'<(?:span|div) class="math notranslate nohighlight"', source(page))
    )
    if n_math == 0:
        pytest.skip(f"{page} has no math")
    dom = load(page, tmp_path_factory).dom
    typeset = len(re.findall(r"<mjx-container\b", dom))
    assert typeset >= n_math, (
        f"{page}: {n_math} math elements, only {typeset} typeset by MathJax"
    )
    assert "<mjx-merror" not in dom, (
        f"{page}: MathJax reports a TeX error: "
        + re.search(r"<mjx-merror[^>]*>", dom).group(0)
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_figures_are_shown(chapter, tmp_path_factory):
    n_images = sum(
        1 for o in outputs(notebook(chapter)) if "image/png" in o.get("data", {})
    )
    if n_images == 0:
        pytest.skip(f"{chapter} stores no figures")
    dom = load(chapter, tmp_path_factory).dom
    srcs = [html.unescape(s) for s in re.findall(r'<img[^>]*\ssrc="([^"]+)"', dom)]
    figures = [s for s in srcs if "_images/" in s or s.startswith("data:image/")]
    assert len(figures) >= n_images, (
        f"{chapter}: {n_images} figures stored, {len(figures)} shown"
    )
    for src in figures:
        if not src.startswith("data:"):
            path = (HTML / chapter).parent / src
            assert path.is_file() and path.stat().st_size > 1000, (
                f"{chapter}: empty or missing figure {src}"
            )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_animations_play(chapter, tmp_path_factory):
    if not has_animation(notebook(chapter)):
        pytest.skip(f"{chapter} has no animation")
    dom = load(chapter, tmp_path_factory).dom
    assert 'class="animation"' in dom, f"{chapter}: no animation block in the page"
    frames = re.findall(
        r'<img id="_anim_img\w+"[^>]*\ssrc="(data:image/[^"]{100,})"', dom
    )
    assert frames, (
        f"{chapter}: the animation did not show a frame (its script did not run)"
    )
    assert re.search(r'<input id="_anim_slider\w+"', dom), (
        f"{chapter}: no animation slider"
    )
    assert "anim-buttons" in dom, f"{chapter}: no animation controls"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_widgets_render(chapter, tmp_path_factory):
    n_views = widget_views(notebook(chapter))
    if n_views == 0:
        pytest.skip(f"{chapter} stores no widget state")
    dom = load(chapter, tmp_path_factory).dom
    rendered = len(re.findall(r'<div class="widget-subarea"', dom))
    assert rendered >= n_views, (
        f"{chapter}: {n_views} widgets stored, {rendered} rendered"
    )
    assert re.search(r'class="[^"]*\bjupyter-widgets\b', dom), (
        f"{chapter}: no widget DOM"
    )


def screenshot(page: str, out: Path, tmp_path: Path) -> Path:
    cmd = chromium_args(tmp_path / "profile") + [
        "--window-size=1280,2000",
        f"--screenshot={out}",
        (HTML / f"{page}.html").as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    return out


def test_screenshots(tmp_path):
    """Screenshots of the first chapter and of the richest one (widgets, else animation,
    else the last)."""
    import matplotlib.image

    if not CHAPTERS:
        pytest.skip("no chapters")
    rich = [c for c in CHAPTERS if widget_views(notebook(c))] or [
        c for c in CHAPTERS if has_animation(notebook(c))
    ]
    pages = list(dict.fromkeys([CHAPTERS[0], (rich or CHAPTERS)[-1]]))
    if len(pages) == 1 and "book/execution" in PAGES:
        pages.append("book/execution")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for page in pages:
        out = screenshot(page, SCREENSHOTS / f"{page.replace('/', '_')}.png", tmp_path)
        pixels = matplotlib.image.imread(out)
        assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000, (
            f"{out}: {pixels.shape}"
        )
        assert pixels[..., :3].std() > 0.05, f"{out} is blank"
    (SCREENSHOTS / "pages.json").write_text(json.dumps(pages) + "\n", encoding="utf-8")


# ------------------------------------------------------------ no horizontal scrolling
# At a 1280-px-wide window no chapter code (code cells and code blocks; outputs are not
# code) and no display equation may scroll sideways. The page is copied with a <base>
# pointing at the build and a script that, once MathJax has typeset and the fonts are
# in, measures every such element and writes the numbers into the DOM that
# --dump-dom prints.
FIT_WIDTH = 1280
MEASURE_JS = r"""
(function () {
  function longest(text) {
    return text.split("\n").reduce(function (a, b) {
      return b.length > a.length ? b : a;
    }, "");
  }
  function tex(el) {
    var doc = window.MathJax && MathJax.startup && MathJax.startup.document;
    for (var item of doc ? doc.math : []) {
      if (item.typesetRoot === el) return item.math.trim();
    }
    return el.textContent;
  }
  function measure() {
    var rows = [], cells = Array.from(document.querySelectorAll("div.cell"));
    function add(kind, el, text) {
      var section = el.closest("section[id]");
      rows.push({kind: kind, cell: cells.indexOf(el.closest("div.cell")) + 1,
                 section: section ? section.id : "", text: text,
                 scroll: el.scrollWidth, client: el.clientWidth});
    }
    document.querySelectorAll("div.cell_input pre").forEach(function (el) {
      add("code cell", el, longest(el.textContent));
    });
    document.querySelectorAll("div.highlight pre").forEach(function (el) {
      if (!el.closest("div.cell")) add("code block", el, longest(el.textContent));
    });
    document.querySelectorAll("mjx-container[display]").forEach(function (el) {
      add("equation", el, tex(el));
    });
    var out = document.createElement("pre");
    out.id = "fit-report";
    out.textContent = JSON.stringify(rows);
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    var math = window.MathJax && MathJax.startup && MathJax.startup.promise;
    Promise.all([math || Promise.resolve(), document.fonts.ready]).then(function () {
      setTimeout(measure, 100);
    });
  });
})();
"""


def measure_widths(page: Path, work: Path) -> list[dict]:
    """Code and display equations of ``page`` as Chromium lays them out at
    ``FIT_WIDTH`` px: kind, cell number, section, longest line or TeX, widths."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text and "</body>" in text, f"{page}: no <head> or </body>"
    base = f'<head><base href="{page.parent.resolve().as_uri()}/">'
    text = text.replace("<head>", base, 1)
    text = text.replace("</body>", f"<script>{MEASURE_JS}</script></body>", 1)
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "measured.html"
    copy.write_text(text, encoding="utf-8")
    cmd = chromium_args(work / "profile") + [
        f"--window-size={FIT_WIDTH},900",
        "--dump-dom",
        copy.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"chromium failed on {page}: {done.stderr[-2000:]}"
    found = re.search(r'<pre id="fit-report"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, f"{page}: the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


def scrolling(rows: list[dict], kinds: tuple[str, ...]) -> list[str]:
    """The rows of ``kinds`` wider than their box, one readable line each."""
    return [
        f"{r['kind']}{' ' + str(r['cell']) if r['cell'] else ''} in #{r['section']}: "
        f"{r['scroll']} px wide in {r['client']} px: {r['text'][:120]}"
        for r in rows
        if r["kind"] in kinds and r["scroll"] > r["client"] + 1
    ]


_widths: dict[str, list[dict]] = {}


def widths(page: str, tmp_path_factory) -> list[dict]:
    if page not in _widths:
        work = tmp_path_factory.mktemp("widths")
        _widths[page] = measure_widths(HTML / f"{page}.html", work)
    return _widths[page]


def test_width_check_reports_what_scrolls_and_only_that(tmp_path):
    """A synthetic page: one long and one short code line, one wide and one narrow
    equation, and a long output (not code); only the long and the wide are reported."""
    long_line = "x = " + "1 + " * 120 + "1"
    page = tmp_path / "synthetic.html"
    page.write_text(
        "<!DOCTYPE html><html><head><style>pre{overflow:auto;font:14px monospace}"
        "mjx-container{display:block}mjx-math{display:inline-block}</style></head>"
        '<body><section id="s"><div class="cell"><div class="cell_input">'
        '<div class="highlight"><pre>short = 1</pre></div></div></div>'
        '<div class="cell"><div class="cell_input"><div class="highlight">'
        f"<pre>a = 1\n{long_line}</pre></div></div>"
        f'<div class="cell_output"><div class="highlight"><pre>{long_line}</pre>'
        "</div></div></div>"
        '<div class="highlight"><pre>pip install -r requirements.txt</pre></div>'
        '<mjx-container display="true"><mjx-math style="width:3000px">wide'
        '</mjx-math></mjx-container><mjx-container display="true">'
        '<mjx-math style="width:100px">narrow</mjx-math></mjx-container>'
        "</section></body></html>",
        encoding="utf-8",
    )
    rows = measure_widths(page, tmp_path / "work")
    assert [(r["kind"], r["cell"]) for r in rows] == [
        ("code cell", 1),
        ("code cell", 2),
        ("code block", 0),
        ("equation", 0),
        ("equation", 0),
    ]
    reported = scrolling(rows, ("code cell", "code block", "equation"))
    assert len(reported) == 2, reported
    assert (
        reported[0].startswith("code cell 2 in #s: ") and long_line[:60] in reported[0]
    )
    assert reported[1].startswith("equation in #s: ") and reported[1].endswith("wide")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_code_fits_the_page(chapter, tmp_path_factory):
    wide = scrolling(widths(chapter, tmp_path_factory), ("code cell", "code block"))
    assert not wide, (
        f"{chapter}: code scrolls sideways at {FIT_WIDTH} px (chapters are formatted "
        "at 76 columns, see notebooks/ruff.toml; wrap long strings and comments):\n"
        + "\n".join(wide)
    )


@pytest.mark.parametrize("page", PAGES)
def test_display_equations_fit_the_page(page, tmp_path_factory):
    if "math notranslate" not in source(page):
        pytest.skip(f"{page} has no math")
    wide = scrolling(widths(page, tmp_path_factory), ("equation",))
    assert not wide, (
        f"{page}: display equations scroll sideways at {FIT_WIDTH} px (break them "
        "into aligned lines):\n" + "\n".join(wide)
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_explorers_respond(chapter, tmp_path):
    """Each live explorer on the page, driven by its self-test hook (``#bvx-selftest``):
    widgets rendered by the html-manager from the stored state, or the older
    self-contained outputs.

    Setting a slider changes the canvas pixels, choosing another model changes them
    again; no script error, and the page asks for nothing outside the book.
    """
    n = explorers(notebook(chapter))
    if n == 0:
        pytest.skip(f"{chapter} has no live explorer")
    seen = open_page((HTML / f"{chapter}.html").as_uri() + "#bvx-selftest", tmp_path)
    results = [
        json.loads(html.unescape(m))
        for m in re.findall(r'<pre class="bvx-selftest"[^>]*>(.*?)</pre>', seen.dom)
    ]
    assert len(results) == n, f"{chapter}: {n} explorers stored, {len(results)} ran"
    assert len({r["id"] for r in results}) == n, "explorers share an id"
    for r in results:
        assert r["ok"], f"{chapter}: {r.get('error')}"
        assert r["slider"]["changed"], (
            f"{chapter}: moving z{r['slider']['latent']} changed nothing"
        )
        if len(r["models"]) > 1:
            assert r["model"]["changed"], (
                f"{chapter}: another model drew the same image"
            )
    errors = [
        m
        for m in seen.console
        if (m.startswith("Uncaught") and not any(k in m for k in KNOWN_HARMLESS))
        or "betavae explorer" in m
    ]
    assert not errors, f"JavaScript errors on {chapter}: {errors}"
    # Other outputs may link to the network (matplotlib's animation links a stylesheet):
    # only URLs that the page's source names outside its explorers are allowed.
    others = EXPLORER_BLOCK.sub("", source(chapter))
    added = [u for u in seen.requests if u not in others]
    assert not added, f"the explorers on {chapter} asked for URLs: {added}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_pages_with_explorers_stay_light(chapter):
    """An explorer carries its models' weights: the page must stay under 5 MB."""
    if explorers(notebook(chapter)) == 0:
        pytest.skip(f"{chapter} has no live explorer")
    size = (HTML / f"{chapter}.html").stat().st_size
    assert size < 5_000_000, f"{chapter}.html is {size / 1e6:.1f} MB"
