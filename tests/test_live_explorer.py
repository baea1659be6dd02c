"""The live explorer: its inputs, its output, and the explorer driven in headless
Chromium (a standalone page written for random models; the book's pages are driven in
test_book_browser.py). The decoder it runs is tested in test_jsdecoder.py."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, chromium_args, console_messages, page_requests
from torch import nn

from betavae_lib import jsdecoder, traversal
from betavae_lib.models import MLPVAE, ConvVAE

ROOT = Path(__file__).resolve().parents[1]


def seeded(model_class, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model_class(**kwargs).eval()


def small_mlp(seed=0, latent_dim=5):
    return seeded(
        MLPVAE, seed, latent_dim=latent_dim, hidden=(16,), image_shape=(1, 6, 6)
    )


def test_sliders_follow_kl_and_inactive_latents_are_marked():
    kl = np.array([0.2, 0.0, 3.0, 0.04, 1.0])
    explorer = traversal.live_explorer(small_mlp(), kl=kl, inactive_below=0.05)
    (entry,) = explorer.config["models"]
    assert entry["order"] == [2, 4, 0, 3, 1]
    assert entry["active"] == [True, False, True, False, True]
    assert entry["pad"] == [2, 4]
    assert entry["z0"] == [0.0] * 5
    assert explorer.config["threshold"] == 0.05


def test_kl_is_computed_from_images():
    model = small_mlp()
    images = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    explorer = traversal.live_explorer(model, images=images)
    with torch.no_grad():
        mu, logvar = model.encode(images)
    expected = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean(0)
    kl = np.array(explorer.config["models"][0]["kl"])
    np.testing.assert_allclose(kl, expected.numpy(), atol=1e-4)
    assert (
        explorer.config["models"][0]["order"] == np.argsort(-kl, kind="stable").tolist()
    )


def test_several_models_each_with_its_own_start():
    models = {"first": small_mlp(0), "second": small_mlp(1, latent_dim=3)}
    z0 = {"first": torch.arange(5.0) / 10, "second": [1.0, -1.0, 0.5]}
    kl = {"first": np.ones(5), "second": np.array([0.0, 2.0, 1.0])}
    explorer = traversal.live_explorer(models, z0=z0, kl=kl, pad=False)
    first, second = explorer.config["models"]
    assert [first["name"], second["name"]] == ["first", "second"]
    assert first["z0"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert second["order"] == [1, 2, 0] and second["pad"] is None
    assert set(explorer.decoders) == {"first", "second"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(models={}), "at least one model"),
        (dict(z0=torch.zeros(4)), "z0 must hold one value per latent"),
        (dict(kl=np.ones(4)), "kl must hold one value per latent"),
        (dict(kl=-np.ones(5)), "never negative"),
        (dict(kl=np.ones(5), images=torch.rand(2, 1, 6, 6)), "not both"),
        (dict(images=torch.rand(0, 1, 6, 6)), "non-empty"),
        (dict(pad=(1, 1)), "pad"),
        (dict(pad=(0, 9)), "dims"),
        (dict(span=0.0), "span"),
        (dict(step=5.0), "step"),
        (dict(precision="int4"), "precision"),
    ],
)
def test_bad_inputs_are_refused(kwargs, match):
    models = kwargs.pop("models", small_mlp())
    with pytest.raises(ValueError, match=match):
        traversal.live_explorer(models, **kwargs)


def test_models_it_cannot_serialise_are_refused():
    model = small_mlp()
    model.decoder[1] = nn.GELU()
    with pytest.raises(TypeError, match="cannot serialise a GELU"):
        traversal.live_explorer({"gelu": model})


def test_dict_inputs_must_name_every_model():
    models = {"a": small_mlp(0), "b": small_mlp(1)}
    with pytest.raises(ValueError, match="one entry per model"):
        traversal.live_explorer(models, z0={"a": torch.zeros(5)})
    with pytest.raises(ValueError, match="kl as a dict"):
        traversal.live_explorer(models, kl=np.ones(5))
    with pytest.raises(TypeError, match="not a model"):
        traversal.live_explorer({"a": "not a model"})


def test_the_output_is_self_contained_html():
    models = {"</script><b>": small_mlp(0), "b": small_mlp(1)}
    one, two = traversal.live_explorer(models), traversal.live_explorer(small_mlp())
    html = one._repr_html_()
    assert html == one.html and one.nbytes == len(html.encode("utf-8"))
    assert one.config["id"] != two.config["id"]
    assert html.count(f'id="{one.config["id"]}"') == 1
    assert html.count("<script") == 1 and html.count("</script>") == 1  # names escaped
    assert jsdecoder.asset("decoder.js") in html and "BetaVAEExplorer.mount" in html
    assert not re.search(
        r"(src|href)\s*=|https?://|import\(", html.split("<script>")[1]
    )
    assert "trust the notebook" in html  # what shows where scripts do not run
    assert "MLPVAE: int8" in repr(two)


def test_an_explorer_over_the_page_budget_warns(monkeypatch):
    monkeypatch.setattr(traversal, "PAGE_BUDGET", 10_000)
    with pytest.warns(UserWarning, match="show fewer models"):
        traversal.live_explorer(small_mlp())


def test_assets_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["betavae_lib"]
    for name in ("decoder.js", "explorer.js", "explorer.css"):
        assert any(Path("assets", name).match(p) for p in patterns), name
        assert jsdecoder.asset(name).strip()


# ------------------------------------------------------------------------ in Chromium

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)
SCREENSHOTS = ROOT / "_build" / "screenshots"


def chromium(args: list[str], work: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        chromium_args(work / "profile") + args,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def self_test(url: str, work: Path) -> tuple[list[dict], list[str], list[str], str]:
    """Open ``url`` with the explorers' self-test hook: their results, the console
    messages, the URLs outside the page that it asked for, and the final DOM."""
    netlog = work / "netlog.json"
    args = ["--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}", "--dump-dom"]
    done = chromium([*args, url], work)
    results = [
        json.loads(html.unescape(m))
        for m in re.findall(r'<pre class="bvx-selftest"[^>]*>(.*?)</pre>', done.stdout)
    ]
    return results, console_messages(done.stderr), page_requests(netlog), done.stdout


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory) -> Path:
    """A page with two explorers: two full-size MLPs (KL given, so one latent is folded)
    and two full-size dSprites ConvVAEs, all with random weights."""
    mlps = {"MLP a": seeded(MLPVAE, 0), "MLP b": seeded(MLPVAE, 1)}
    kl = {name: np.r_[np.linspace(3, 0.1, 19), 0.0] for name in mlps}
    convs = {"conv a": seeded(ConvVAE, 2), "conv b": seeded(ConvVAE, 3)}
    first = traversal.live_explorer(mlps, kl=kl, title="MLPs")
    second = traversal.live_explorer(convs, title="ConvVAEs")
    page = tmp_path_factory.mktemp("explorer") / "page.html"
    page.write_text(
        '<!doctype html><html><head><meta charset="utf-8"></head><body>'
        "<script>window.before = Object.keys(window);</script>"
        f"{first.html}<p>between</p>{second.html}"
        '<pre id="new-globals"></pre><script>'
        "document.getElementById('new-globals').textContent = JSON.stringify("
        "Object.keys(window).filter((k) => !before.includes(k) && k !== 'before'));"
        "</script>"
        "</body></html>",
        encoding="utf-8",
    )
    return page


@needs_chromium
def test_explorers_respond_in_chromium(explorer_page, tmp_path):
    """Setting a slider and choosing another model change the canvas, in both explorers
    on the page; no script error, no request off the page. Decode time per frame: the
    median of 200 decodes per model (to _build/screenshots/explorer_timing.json)."""
    url = explorer_page.as_uri() + "#bvx-selftest&bvx-timing=200"
    results, console, remote, dom = self_test(url, tmp_path)
    new_globals = json.loads(re.search(r'<pre id="new-globals">(.*?)</pre>', dom)[1])
    assert new_globals == [], f"the explorers' scripts left globals: {new_globals}"
    assert len(results) == 2, console
    assert results[0]["id"] != results[1]["id"]
    for result in results:
        assert result["ok"], result.get("error")
        assert result["slider"]["changed"] and result["slider"][
            "state"
        ] == pytest.approx(result["slider"]["value"])
        assert result["model"]["changed"]
        for name, timing in result["decode_ms"].items():
            assert timing["n"] == 200 and 0 <= timing["median"] < 250, (name, timing)
    errors = [m for m in console if "Uncaught" in m or "explorer" in m.lower()]
    assert not errors, errors
    assert not remote, f"requests left the page: {remote}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    timing = {k: v for r in results for k, v in r["decode_ms"].items()}
    (SCREENSHOTS / "explorer_timing.json").write_text(
        json.dumps(timing, indent=1) + "\n", encoding="utf-8"
    )


@needs_chromium
def test_explorer_screenshots(explorer_page, tmp_path):
    """Two states of the explorer (model and sliders set from the URL) look different:
    _build/screenshots/explorer_1.png and explorer_2.png."""
    import matplotlib.image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = []
    for i, state in enumerate(["bvx-z=0:-2.5,1:2", "bvx-model=1&bvx-z=0:2.5,1:-2"], 1):
        out = SCREENSHOTS / f"explorer_{i}.png"
        url = explorer_page.as_uri() + "#" + state
        chromium(
            ["--window-size=900,1100", f"--screenshot={out}", url], tmp_path / str(i)
        )
        shots.append(matplotlib.image.imread(out)[..., :3])
    assert shots[0].shape == shots[1].shape and shots[0].std() > 0.05
    assert np.abs(shots[0] - shots[1]).max() > 0.1
