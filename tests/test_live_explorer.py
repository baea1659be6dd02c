"""The live explorer widget (``betavae_lib.explorer``): its inputs, its traits and their
validation, its display bundle, a live kernel driving it (nbclient playing the front
end), and the explorer in headless Chromium: a standalone page, and a tiny Jupyter Book
built from a notebook that stores the widget's state (what the chapters do), opened
offline. The book's own pages are driven in test_book_browser.py; the decoder the
explorer runs is tested in test_jsdecoder.py."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import traitlets
from conftest import CHROMIUM, chromium_args, console_messages, page_requests
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from torch import nn

from betavae_lib import explorer as explorer_module
from betavae_lib import jsdecoder, traversal
from betavae_lib.explorer import ExplorerValueError, LatentExplorer, live_explorer
from betavae_lib.models import MLPVAE, ConvVAE

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def seeded(model_class, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model_class(**kwargs).eval()


def small_mlp(seed=0, latent_dim=5):
    return seeded(
        MLPVAE, seed, latent_dim=latent_dim, hidden=(16,), image_shape=(1, 6, 6)
    )


def make_two_sizes() -> LatentExplorer:
    """An explorer over two models of different latent sizes (5 and 3)."""
    models = {"a": small_mlp(0), "b": small_mlp(1, latent_dim=3)}
    return live_explorer(models, z0={"a": [0.1] * 5, "b": [1.0, -1.0, 0.5]})


@pytest.fixture(scope="module")
def two_sizes() -> LatentExplorer:
    """One such explorer for the tests that only read it."""
    return make_two_sizes()


@pytest.fixture
def fresh() -> LatentExplorer:
    """A new such explorer, for the tests that change it."""
    return make_two_sizes()


# ---------------------------------------------------------------------------- inputs
def test_sliders_follow_kl_and_inactive_latents_are_marked():
    kl = np.array([0.2, 0.0, 3.0, 0.04, 1.0])
    explorer = live_explorer(small_mlp(), kl=kl, inactive_below=0.05)
    (entry,) = explorer.models
    assert entry["order"] == [2, 4, 0, 3, 1]
    assert entry["active"] == [True, False, True, False, True]
    assert entry["pad"] == [2, 4]
    assert entry["z0"] == [0.0] * 5
    assert explorer.settings["threshold"] == 0.05
    assert explorer.model == "MLPVAE" and explorer.z == [0.0] * 5


def test_kl_is_computed_from_images():
    model = small_mlp()
    images = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    explorer = live_explorer(model, images=images)
    with torch.no_grad():
        mu, logvar = model.encode(images)
    expected = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean(0)
    kl = np.array(explorer.models[0]["kl"])
    np.testing.assert_allclose(kl, expected.numpy(), atol=1e-4)
    assert explorer.models[0]["order"] == np.argsort(-kl, kind="stable").tolist()


def test_several_models_each_with_its_own_start():
    models = {"first": small_mlp(0), "second": small_mlp(1, latent_dim=3)}
    z0 = {"first": torch.arange(5.0) / 10, "second": [1.0, -1.0, 0.5]}
    kl = {"first": np.ones(5), "second": np.array([0.0, 2.0, 1.0])}
    explorer = live_explorer(models, z0=z0, kl=kl, pad=False)
    first, second = explorer.models
    assert [first["name"], second["name"]] == ["first", "second"]
    assert first["z0"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert second["order"] == [1, 2, 0] and second["pad"] is None
    assert set(explorer.decoders) == {"first", "second"}
    assert explorer.codes == {"first": first["z0"], "second": [1.0, -1.0, 0.5]}
    assert explorer.z0 == explorer.codes
    assert explorer.z == first["z0"]


def test_the_old_import_path_still_works():
    assert traversal.live_explorer is live_explorer
    assert traversal.LatentExplorer is LatentExplorer
    assert not hasattr(traversal, "latent_playground")  # retired: one explorer
    with pytest.raises(AttributeError):
        traversal.no_such_thing  # noqa: B018


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(models={}), "at least one model"),
        (dict(z0=torch.zeros(4)), "z0 must hold one value per latent"),
        (dict(z0=[0, 0, float("inf"), 0, 0]), "z0 must be finite"),
        (dict(kl=np.ones(4)), "kl must hold one value per latent"),
        (dict(kl=-np.ones(5)), "never negative"),
        (dict(kl=np.ones(5), images=torch.rand(2, 1, 6, 6)), "not both"),
        (dict(images=torch.rand(0, 1, 6, 6)), "non-empty"),
        (dict(pad=(1, 1)), "pad"),
        (dict(pad=(0, 9)), "dims"),
        (dict(span=0.0), "span"),
        (dict(span=float("nan")), "span"),
        (dict(step=5.0), "step"),
        (dict(precision="int4"), "precision"),
    ],
)
def test_bad_inputs_are_refused(kwargs, match):
    models = kwargs.pop("models", small_mlp())
    with pytest.raises(ValueError, match=match):
        live_explorer(models, **kwargs)


def test_models_of_different_latent_sizes_need_their_own_codes():
    """One code or one pad for models of 5 and 3 latents: the error names the model
    that does not fit and says how to give one per model."""
    models = {"five": small_mlp(0), "three": small_mlp(1, latent_dim=3)}
    with pytest.raises(ValueError, match=r"z0 .*for model 'three'.* 3 and 5 latents"):
        live_explorer(models, z0=torch.zeros(5))
    with pytest.raises(ValueError, match=r"dims .*for model 'three'"):
        live_explorer(models, pad=(0, 4))


def test_models_it_cannot_serialise_are_refused():
    model = small_mlp()
    model.decoder[1] = nn.GELU()
    with pytest.raises(TypeError, match="cannot serialise a GELU"):
        live_explorer({"gelu": model})


def test_dict_inputs_must_name_every_model():
    models = {"a": small_mlp(0), "b": small_mlp(1)}
    with pytest.raises(ValueError, match="one entry per model"):
        live_explorer(models, z0={"a": torch.zeros(5)})
    with pytest.raises(ValueError, match="kl as a dict"):
        live_explorer(models, kl=np.ones(5))
    with pytest.raises(TypeError, match="not a model"):
        live_explorer({"a": "not a model"})


# ------------------------------------------------------------------ traits, in Python
def test_z_model_and_codes_stay_in_step(fresh):
    """z is the shown model's entry of codes; switching the model shows its own code;
    an observer sees every change."""
    seen = []
    fresh.observe(lambda c: seen.append((c["name"], c["new"])), names=["z", "model"])
    fresh.z = np.array([1, 2, 3, 4, 5])
    assert fresh.z == [1.0, 2.0, 3.0, 4.0, 5.0] and fresh.codes["a"] == fresh.z
    fresh.model = "b"
    assert fresh.z == [1.0, -1.0, 0.5]  # b's own code, not a's
    fresh.z = torch.tensor([0.0, 0.0, 2.0])
    fresh.model = "a"
    assert fresh.z == [1.0, 2.0, 3.0, 4.0, 5.0]  # a kept its code meanwhile
    assert fresh.codes == {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [0.0, 0.0, 2.0]}
    assert seen == [  # z follows the model before the model's observers run
        ("z", [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("z", [1.0, -1.0, 0.5]),
        ("model", "b"),
        ("z", [0.0, 0.0, 2.0]),
        ("z", [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("model", "a"),
    ]
    fresh.codes = {"a": [0.0] * 5, "b": [0.0, 0.0, 2.0]}  # codes drive z too
    assert fresh.z == [0.0] * 5


def test_model_and_z_set_together(fresh):
    """Inside hold_trait_notifications (and in the front end's messages, below) z is
    checked against the model set with it, and kept."""
    with fresh.hold_trait_notifications():
        fresh.model = "b"
        fresh.z = [9, 9, 9]
    assert (fresh.model, fresh.z, fresh.codes["b"]) == ("b", [9.0] * 3, [9.0] * 3)
    assert fresh.codes["a"] == [0.1] * 5


def test_a_front_end_update_message_is_applied_as_one_change(fresh):
    """What the page sends when the reader picks a model (codes, model and z in one
    message) reaches the traits, checked together."""
    seen = []
    fresh.observe(lambda c: seen.append((c["name"], c["new"])), names=["z", "model"])
    codes = {"a": [0.1] * 5, "b": [2.0, 2.0, 2.0]}
    fresh.set_state({"codes": codes, "model": "b", "z": [2.0, 2.0, 2.0]})
    assert (fresh.model, fresh.z, fresh.codes) == ("b", [2.0, 2.0, 2.0], codes)
    assert sorted(seen) == [("model", "b"), ("z", [2.0, 2.0, 2.0])]
    with pytest.raises(ExplorerValueError, match="z must hold 3 numbers"):
        fresh.set_state({"z": [1.0, 2.0]})
    assert fresh.z == [2.0, 2.0, 2.0]  # rolled back


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("z", [1.0, 2.0], r"z must hold 5 numbers, one per latent of the model shown"),
        ("z", [0, 0, float("nan"), 0, 0], r"z must be finite: z\[2\] is nan"),
        ("z", [0, 0, 0, float("-inf"), 0], r"z must be finite: z\[3\] is -inf"),
        ("z", [[0.0] * 5], r"z must be a flat list"),
        ("z", "abcde", r"z must be a list of numbers"),
        ("z", None, r"z must be a list of numbers"),
        ("model", "c", r"model must be one of the explorer's models \['a', 'b'\]"),
        ("codes", {"a": [0.0] * 5}, r"codes must have one entry per model"),
        ("codes", {"a": [0.0] * 5, "b": [0.0] * 5}, r"codes\['b'\] must hold 3"),
        ("models", [], r"models is fixed when the explorer is built"),
        ("settings", {}, r"settings is fixed"),
    ],
)
def test_bad_values_are_refused_naming_the_trait(fresh, name, value, match):
    before = fresh.state()
    with pytest.raises(ExplorerValueError, match=match) as error:
        setattr(fresh, name, value)
    assert isinstance(error.value, ValueError)
    assert isinstance(error.value, traitlets.TraitError)
    assert fresh.state() == before


def test_image_is_pytorch_decoding_the_code_shown(fresh):
    fresh.z = [0.5, -1.0, 2.0, 0.0, 1.0]
    expected = traversal.decode_images(fresh.sources["a"], torch.tensor([fresh.z]))
    assert torch.equal(fresh.image(), expected[0])
    b = traversal.decode_images(fresh.sources["b"], torch.tensor([[1.0, -1, 0.5]]))
    assert torch.equal(fresh.image("b"), b[0])
    with pytest.raises(ExplorerValueError, match="model must be one of"):
        fresh.image("c")
    with pytest.raises(ExplorerValueError, match="z must hold 3 numbers"):
        fresh.image("b", z=[0.0] * 5)


# ------------------------------------------------------------------- what is stored
def test_display_bundle_is_a_widget_view_with_a_light_html_fallback(two_sizes):
    """widget-view (the widget) + text/html (a still, no script, no weights) +
    text/plain; the weights are in the widget state only."""
    data, _ = two_sizes._repr_mimebundle_()
    assert set(data) == {WIDGET_VIEW, "text/html", "text/plain"}
    assert data[WIDGET_VIEW]["model_id"] == two_sizes.model_id
    fallback = data["text/html"]
    assert "<script" not in fallback and "data:image/png;base64," in fallback
    assert len(fallback) < 5_000
    for entry in two_sizes.models:
        for layer in entry["decoder"]["layers"]:
            if "weight" in layer:
                assert layer["weight"]["data"][:64] not in fallback
    assert "LatentExplorer(a: " in data["text/plain"] and "showing 'a'" in repr(
        two_sizes
    )


def test_widget_state_holds_the_front_end_and_the_weights_once(two_sizes):
    state = two_sizes.get_state()
    assert state["_model_module"] == "anywidget"
    assert state["_anywidget_id"] == "betavae_lib.explorer.LatentExplorer"
    assert jsdecoder.asset("decoder.js") in state["_esm"]
    assert jsdecoder.asset("explorer.js") in state["_esm"]
    assert state["_css"] == jsdecoder.asset("explorer.css")
    text = json.dumps(state)
    for entry in two_sizes.models:
        first = next(lay for lay in entry["decoder"]["layers"] if "weight" in lay)
        assert text.count(first["weight"]["data"]) == 1
    assert abs(two_sizes.nbytes - len(json.dumps(state, separators=(",", ":")))) < 2000


def test_an_explorer_over_the_page_budget_warns(monkeypatch):
    monkeypatch.setattr(explorer_module, "PAGE_BUDGET", 10_000)
    with pytest.warns(UserWarning, match="show fewer models"):
        live_explorer(small_mlp())


def test_assets_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["betavae_lib"]
    for name in ("decoder.js", "explorer.js", "explorer.css"):
        assert any(Path("assets", name).match(p) for p in patterns), name
        assert jsdecoder.asset(name).strip()
    assert any(d.startswith("anywidget") for d in config["project"]["dependencies"])


def test_vendored_anywidget_front_end_is_the_pinned_release():
    """book/_static/vendored/anywidget/index.js is the installed wheel's AMD front end,
    of the release requirements.txt pins (the stored state names its version)."""
    import anywidget

    pins = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    (pinned,) = re.findall(r"^anywidget==(\S+)$", pins, re.M)
    assert anywidget.__version__ == pinned
    vendored = ROOT / "book" / "_static" / "vendored" / "anywidget"
    wheel = Path(anywidget.__file__).parent / "nbextension" / "index.js"
    assert (vendored / "index.js").read_bytes() == wheel.read_bytes()
    assert "MIT License" in (vendored / "LICENSE").read_text(encoding="utf-8")
    readme = (vendored.parent / "README.txt").read_text(encoding="utf-8")
    assert f"anywidget {pinned}" in readme
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    order = [
        "vendored/requirejs/require.js",
        "vendored/anywidget/anywidget-offline.js",
        "vendored/jupyter-widgets/embed-amd.js",
    ]
    assert [config.index(p) for p in order] == sorted(config.index(p) for p in order)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_widget_front_end_is_an_es_module_with_a_render(tmp_path):
    module = tmp_path / "explorer.mjs"
    module.write_text(LatentExplorer._esm, encoding="utf-8")
    done = subprocess.run(
        [
            NODE,
            "--input-type=module",
            "-e",
            f"const m = await import({json.dumps(module.as_uri())});"
            "console.log(JSON.stringify([typeof m.default.render, Object.keys(m)]));",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["function", ["default"]]


def test_the_standalone_page_is_self_contained():
    models = {"</script><b>": small_mlp(0), "b": small_mlp(1)}
    one, two = live_explorer(models), live_explorer(small_mlp())
    page = one.html
    assert one.settings["id"] != two.settings["id"]
    assert page.count(f'id="{one.settings["id"]}"') == 1
    assert page.count("<script") == 1 and page.count("</script>") == 1  # names escaped
    assert jsdecoder.asset("decoder.js") in page and "BetaVAEExplorer.mount" in page
    assert not re.search(
        r"(src|href)\s*=|https?://|import\(", page.split("<script>")[1]
    )


# ----------------------------------------------------------------------- live kernel
KERNEL_SETUP = """
import torch
from betavae_lib.models import MLPVAE
from betavae_lib.traversal import live_explorer

torch.manual_seed(0)
models = {
    name: MLPVAE(latent_dim=4, hidden=(16,), image_shape=(1, 6, 6)).eval()
    for name in ("a", "b")
}
explorer = live_explorer(models, kl={"a": [3, 2, 1, 0], "b": [0, 1, 2, 3]})
seen = []
explorer.observe(lambda change: seen.append((change["name"], change["new"])),
                 names=["z", "model"])
explorer
"""


def kernel_env() -> dict:
    """This process's environment, with this checkout first on the kernel's path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    env.pop("MPLBACKEND", None)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return env


def cell_text(cell) -> str:
    return "".join(
        o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
        for o in cell.outputs
    )


def test_live_kernel_two_way(tmp_path):
    """nbclient plays the front end: the widget is displayed, Python sets z and the
    front end's copy follows; the front end sends what save_changes() sends (a comm
    update) and Python's z, codes and observer follow; bad input from the front end
    is refused and reported."""
    from nbclient import NotebookClient

    nb = new_notebook(
        cells=[
            new_code_cell(KERNEL_SETUP),
            new_code_cell("explorer.z = [1.25, -0.75, 0.5, 0.0]\nprint(explorer.z)"),
            new_code_cell("print(explorer.model, explorer.z, explorer.codes, seen)"),
            new_code_cell("print(explorer.z)"),
        ]
    )
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        store_widget_state=True,
    )
    with client.setup_kernel(env=kernel_env()):
        client.execute_cell(nb.cells[0], 0)
        view = next(o for o in nb.cells[0].outputs if WIDGET_VIEW in o.get("data", {}))
        assert "text/html" in view.data  # the fallback is in the same output
        model_id = view.data[WIDGET_VIEW]["model_id"]
        front = client.widget_state[model_id]  # what nbclient received, as a page would
        assert front["_model_module"] == "anywidget" and front["z"] == [0.0] * 4

        client.execute_cell(nb.cells[1], 1)  # Python -> front end
        assert cell_text(nb.cells[1]).strip() == "[1.25, -0.75, 0.5, 0.0]"
        assert client.widget_state[model_id]["z"] == [1.25, -0.75, 0.5, 0.0]

        def send_update(state: dict):
            message = client.kc.session.msg(
                "comm_msg",
                {
                    "comm_id": model_id,
                    "data": {"method": "update", "state": state, "buffer_paths": []},
                },
            )
            client.kc.shell_channel.send(message)

        # front end -> Python: the reader picks model b and moves its z3
        send_update(
            {
                "codes": {"a": [1.25, -0.75, 0.5, 0.0], "b": [0.0, 0.0, 0.0, 2.5]},
                "model": "b",
                "z": [0.0, 0.0, 0.0, 2.5],
            }
        )
        client.execute_cell(nb.cells[2], 2)
        printed = cell_text(nb.cells[2])
        assert printed.startswith(
            "b [0.0, 0.0, 0.0, 2.5] {'a': [1.25, -0.75, 0.5, 0.0]"
        )
        assert "('z', [1.25, -0.75, 0.5, 0.0]), ('model', 'b')" in printed
        assert "('z', [0.0, 0.0, 0.0, 2.5])" in printed

        send_update({"z": [0.0, float("nan"), 0.0, 0.0]})  # a broken front end
        client.execute_cell(nb.cells[3], 3)
        assert cell_text(nb.cells[3]).strip() == "[0.0, 0.0, 0.0, 2.5]"


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
    messages, the URLs other than file: and data: that it asked for, and the DOM."""
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
    first = live_explorer(mlps, kl=kl, title="MLPs")
    second = live_explorer(convs, title="ConvVAEs")
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
        slider = result["slider"]
        assert slider["changed"]
        assert slider["state"] == slider["code"] == pytest.approx(slider["value"])
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


# ---------------------------------------------- a tiny book from stored widget state
BOOK_SETUP = """
import ipywidgets
import torch

from betavae_lib.models import MLPVAE, ConvVAE
from betavae_lib.traversal import live_explorer

torch.manual_seed(0)
models = {
    "mlp": MLPVAE(latent_dim=6).eval(),
    "conv": ConvVAE(latent_dim=4).eval(),
}
kl = {"mlp": [3.0, 2.0, 1.0, 0.5, 0.2, 0.0], "conv": [0.1, 2.0, 1.0, 0.5]}
explorer = live_explorer(models, kl=kl, title="Two random decoders")
explorer
"""
BOOK_SET_Z = "explorer.z = [1.5, -1.0, 0.5, 0.0, 0.0, 2.0]\nexplorer.z"
BOOK_PLAIN = 'ipywidgets.IntSlider(value=3, description="plain")'


def _needs_book_tools():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    if shutil.which("jupyter-book") is None:
        pytest.skip("jupyter-book is not installed")


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> Path:
    """A one-chapter book built with this repository's Sphinx config (the vendored
    require.js, html-manager and anywidget front end): the chapter, executed here with
    nbclient (store_widget_state=True, as tools/execute_book.py does), displays an
    explorer, sets its z from Python, and shows a plain ipywidgets slider."""
    _needs_book_tools()
    import yaml
    from nbclient import NotebookClient

    book = tmp_path_factory.mktemp("tiny_book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config = {
        "title": "Tiny",
        "only_build_toc_files": True,
        "exclude_patterns": ["_build", "book/_static"],
        "execute": {"execute_notebooks": "off"},
        "sphinx": {"config": config["sphinx"]["config"]},
    }
    (book / "_config.yml").write_text(
        yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
    )
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n- file: chapter\n", encoding="utf-8"
    )
    (book / "intro.md").write_text("# Tiny\n\nA test book.\n", encoding="utf-8")
    (book / "book").mkdir()
    shutil.copytree(ROOT / "book" / "_static", book / "book" / "_static")

    nb = new_notebook(
        cells=[
            new_markdown_cell("# A chapter\n\nAn explorer from stored widget state."),
            new_code_cell(BOOK_SETUP),
            new_code_cell(BOOK_SET_Z),
            new_code_cell(BOOK_PLAIN),
        ],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3",
                "language": "python",
            }
        },
    )
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(book)}},
        store_widget_state=True,
    ).execute(env=kernel_env())
    nbformat.write(nb, book / "chapter.ipynb")
    done = subprocess.run(
        ["jupyter-book", "build", str(book), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return book


def test_tiny_book_notebook_stores_the_weights_once(tiny_book):
    """The executed notebook holds the widget's state (weights, front end) once, in
    its metadata; the output holds only the view and the light fallback."""
    text = (tiny_book / "chapter.ipynb").read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    explorers = [
        m
        for m in state.values()
        if m["state"].get("_anywidget_id") == "betavae_lib.explorer.LatentExplorer"
    ]
    assert len(explorers) == 1
    models = explorers[0]["state"]["models"]
    for entry in models:
        for layer in entry["decoder"]["layers"]:
            if "weight" in layer:
                assert text.count(layer["weight"]["data"]) == 1
    assert explorers[0]["state"]["z"] == [1.5, -1.0, 0.5, 0.0, 0.0, 2.0]


@pytest.fixture(scope="module")
def tiny_book_page(tiny_book, tmp_path_factory):
    """The chapter opened from disk with the self-test hook, every host unresolvable:
    (results, console, requests, DOM)."""
    page = tiny_book / "_build" / "html" / "chapter.html"
    work = tmp_path_factory.mktemp("tiny_book_chromium")
    netlog = work / "netlog.json"
    done = chromium(
        [
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            f"--log-net-log={netlog}",
            "--dump-dom",
            page.as_uri() + "#bvx-selftest",
        ],
        work,
    )
    results = [
        json.loads(html.unescape(m))
        for m in re.findall(r'<pre class="bvx-selftest"[^>]*>(.*?)</pre>', done.stdout)
    ]
    return (
        results,
        console_messages(done.stderr),
        page_requests(netlog),
        done.stdout,
    )


def test_tiny_book_renders_the_widget_offline(tiny_book, tiny_book_page):
    """The page renders the explorer through the html-manager from the stored state
    (showing the code Python set last), a slider changes the canvas and the widget
    model's z, the menu switches models; the plain ipywidgets slider renders too;
    nothing is asked of the network and no script fails."""
    results, console, requests, dom = tiny_book_page
    source = (tiny_book / "_build" / "html" / "chapter.html").read_text("utf-8")
    assert "vendored/anywidget/anywidget-offline.js" in source
    assert source.count('type="application/vnd.jupyter.widget-state+json"') == 1
    assert 'class="bvx-preview"' not in source  # the widget view, not the fallback
    assert len(results) == 1, (console, dom[-3000:])
    (result,) = results
    assert result["ok"], result.get("error")
    assert result["start"] == {"model": "mlp", "z": [1.5, -1.0, 0.5, 0.0, 0.0, 2.0]}
    assert result["slider"]["changed"]
    assert result["slider"]["state"] == pytest.approx(result["slider"]["value"])
    assert result["model"] == {"chosen": 1, "name": "conv", "changed": True}
    assert len(re.findall(r'<div class="widget-subarea"', dom)) == 2
    assert 'class="widget-readout"' in dom or "widget-slider" in dom  # IntSlider
    assert re.search(r'<canvas class="bvx-image"', dom)
    assert not requests, f"requests left file://: {requests}"
    harmless = ("THEBE_JS_URL", "strict mode")  # the theme; Ajv in the html-manager
    bad = [
        m
        for m in console
        if ("Uncaught" in m or "rror" in m or "betavae explorer" in m)
        and not any(h in m for h in harmless)
    ]
    assert not bad, bad


def test_tiny_book_page_carries_the_weights_once(tiny_book, tiny_book_page):
    source = (tiny_book / "_build" / "html" / "chapter.html").read_text("utf-8")
    nb = nbformat.read(tiny_book / "chapter.ipynb", as_version=4)
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    (explorer,) = [m["state"] for m in state.values() if "_anywidget_id" in m["state"]]
    for entry in explorer["models"]:
        for layer in entry["decoder"]["layers"]:
            if "weight" in layer:
                assert source.count(layer["weight"]["data"]) == 1
