"""The profile switch, headline-metric lines, and the shared plotting helpers."""

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch
from PIL import Image

from betavae_lib import MLPVAE, plots
from betavae_lib.profile import get_profile
from betavae_lib.report import MARKER, headline, parse_headlines
from betavae_lib.train import History


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("BETAVAE_PROFILE", "smoke")
    p = get_profile()
    assert p.name == "smoke" and p.pick(1, 2, 3) == 1 and p.train_size == 2000
    assert get_profile("full").train_size is None and get_profile("FULL").name == "full"


def test_profile_default_depends_on_cuda(monkeypatch):
    monkeypatch.delenv("BETAVAE_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile().name == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile().name == "reduced"


def test_unknown_profile_lists_valid(monkeypatch):
    monkeypatch.setenv("BETAVAE_PROFILE", "huge")
    with pytest.raises(ValueError, match="smoke, reduced, full"):
        get_profile()


def test_headline_round_trip(capsys):
    clean = headline(mig=np.float32(0.25), fid=float("nan"), model="β=4", epochs=3)
    out = capsys.readouterr().out
    assert out.startswith(MARKER)
    assert (
        parse_headlines("noise\n" + out)
        == clean
        == {"mig": 0.25, "fid": None, "model": "β=4", "epochs": 3}
    )
    with pytest.raises(TypeError, match="numbers or strings"):
        headline(bad=[1, 2])


def test_image_grid_places_each_image():
    imgs = torch.zeros(3, 1, 2, 2)
    imgs[1] = 1.0
    fig = plots.image_grid(imgs, nrow=2)
    canvas = fig.axes[0].images[0].get_array()
    # 2 per row, 2-pixel white gaps: second image occupies columns 4..5 of the first row
    assert canvas.shape == (2 * 4 - 2, 2 * 4 - 2)
    assert (
        canvas[0:2, 4:6].min() == 1.0
        and canvas[0:2, 0:2].max() == 0.0
        and canvas[4:6, 0:2].max() == 0.0
    )
    matplotlib.pyplot.close(fig)


def test_history_and_kl_plots_label_their_axes():
    h = History(
        epoch=[1, 2],
        train_recon=[3.0, 2.0],
        train_kl=[1.0, 1.5],
        test_recon=[3.1, 2.2],
        test_kl=[1.1, 1.4],
    )
    fig = plots.plot_history(h)
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "epoch",
        "epoch",
    ] and "nats" in fig.axes[0].get_ylabel()
    assert len(fig.axes[0].lines) == 2
    fig = plots.plot_kl_per_dim([0.1, 2.0, 0.0], threshold=0.01)
    assert [p.get_height() for p in fig.axes[0].patches] == [0.1, 2.0, 0.0]
    matplotlib.pyplot.close("all")


def test_latent_plots_need_two_dimensions():
    with pytest.raises(ValueError, match="2-D codes"):
        plots.plot_latent_scatter(np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="2-latent model"):
        plots.latent_manifold(MLPVAE(latent_dim=3))
    fig = plots.latent_manifold(MLPVAE(latent_dim=2), n=4)
    assert fig.axes[0].images[0].get_array().shape == (4 * 30 - 2, 4 * 30 - 2)
    matplotlib.pyplot.close("all")


def test_animate_embeds_every_frame_as_html():
    frames = [np.full((8, 8), v) for v in (0.0, 0.5, 1.0)]
    html = plots.animate(frames, titles=["a", "b", "c"]).data
    assert (
        "<script" in html and html.count("frames[") >= 3 and "animation" in html.lower()
    )
    with pytest.raises(ValueError, match="at least one frame"):
        plots.animate([])


def test_animate_scatter_draws_each_frame_from_its_points():
    labels = np.arange(10)
    frames = [np.zeros((10, 2)), np.ones((10, 2)), -np.ones((10, 2))]
    kwargs = dict(titles=["a", "b", "c"], circles=(1, 2))
    html = plots.animate_scatter(frames, labels, **kwargs).data
    assert "new Array(3)" in html and html.count("data:image/png;base64") == 3
    # frames are stored with a small palette: fewer bytes, the same picture
    full = plots.animate_scatter(frames, labels, colours=None, **kwargs).data
    found = re.findall(r'"data:image/png;base64,([^"]+)"', html)
    image = Image.open(io.BytesIO(base64.b64decode(found[1])))
    assert image.mode == "P" and len(image.getcolors()) <= 64
    raw = re.findall(r'"data:image/png;base64,([^"]+)"', full)[1]
    original = Image.open(io.BytesIO(base64.b64decode(raw.replace("\\\n", ""))))
    diff = np.abs(
        np.asarray(image.convert("RGB"), float)
        - np.asarray(original.convert("RGB"), float)
    )
    assert diff.mean() < 2 and original.size == image.size
    assert len(html) < len(full)
    with pytest.raises(ValueError, match="at least one frame"):
        plots.animate_scatter([], labels)
    with pytest.raises(ValueError, match=r"frame 1 must be \(10, 2\) points"):
        plots.animate_scatter([np.zeros((10, 2)), np.zeros((9, 2))], labels)
    with pytest.raises(ValueError, match="one entry per frame"):
        plots.animate_scatter(frames, labels, ["a"])


def test_figure_to_array_is_rgb_in_unit_range():
    fig = plots.image_grid(torch.rand(4, 1, 5, 5), nrow=2)
    arr = plots.figure_to_array(fig)
    assert arr.ndim == 3 and arr.shape[2] == 3 and 0 <= arr.min() and arr.max() <= 1
    matplotlib.pyplot.close("all")


def test_start_chapter_prints_the_line_the_executor_reads(monkeypatch, capsys):
    monkeypatch.setenv("BETAVAE_PROFILE", "smoke")
    profile, device = __import__("betavae_lib").start_chapter(seed=3)
    out = capsys.readouterr().out
    assert profile.name == "smoke" and device.type in ("cpu", "cuda", "mps")
    assert out.startswith(
        f"profile: smoke | device: {device} | seed: 3 | torch {torch.__version__}"
    )
    a = torch.rand(3)
    __import__("betavae_lib").start_chapter(seed=3)
    assert torch.equal(a, torch.rand(3))  # seeded


def test_steps_override_lengthens_by_steps_and_nothing_else(monkeypatch, capsys):
    from betavae_lib.profile import start_chapter

    monkeypatch.setenv("BETAVAE_PROFILE", "reduced")
    monkeypatch.delenv("BETAVAE_STEPS", raising=False)
    assert get_profile().by_steps(737_280, 12_800, 1, 32) == (12_800, 1)
    monkeypatch.setenv("BETAVAE_STEPS", "15_000")
    p = get_profile()
    assert (p.name, p.steps, str(p)) == (
        "reduced",
        15_000,
        "reduced, 15,000 steps per model",
    )
    assert p.pick(1, 2, 3) == 2 and p.train_size == 20_000  # sizes unchanged
    # one pass over 15,000 batches of distinct images...
    assert p.by_steps(737_280, 12_800, 1, 32) == (480_000, 1)
    # ...or, when the data run out, whole passes: ceil(15000 / ceil(1000 / 32))
    assert p.by_steps(1_000, 500, 1, 32) == (None, 469)
    assert 469 * -(-1_000 // 32) >= 15_000 > 468 * -(-1_000 // 32)
    # only a chapter that trains by steps says so and keeps the override
    assert start_chapter(0, by_steps=True)[0].steps == 15_000
    assert "profile: reduced | steps: 15000 | device:" in capsys.readouterr().out
    assert start_chapter(0)[0].steps is None
    assert "steps" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "many"])
def test_steps_override_must_be_a_positive_integer(monkeypatch, bad):
    monkeypatch.setenv("BETAVAE_STEPS", bad)
    with pytest.raises(ValueError, match="BETAVAE_STEPS must be a positive integer"):
        get_profile("smoke")


def test_gaussian_ellipse_is_the_mahalanobis_contour():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2))
    cov, mean = a @ a.T + 0.1 * np.eye(2), rng.normal(size=2)
    for radius in (1.0, 2.0):
        points = plots.gaussian_ellipse(mean, cov, radius, n=400)
        d = points - mean
        mahalanobis = np.einsum("ni,ni->n", d, np.linalg.solve(cov, d.T).T)
        np.testing.assert_allclose(mahalanobis, radius**2, rtol=1e-10)
        # the contour's extent along each axis is radius × that coordinate's sd;
        # 400 points sample the curve finely enough for 1e-3 relative error
        np.testing.assert_allclose(
            np.abs(d).max(0), radius * np.sqrt(np.diag(cov)), rtol=1e-3
        )
    diagonal = plots.gaussian_ellipse([0, 0], [4.0, 1.0], 1.0, n=5)
    np.testing.assert_allclose(diagonal[[0, 2]], [[2, 0], [-2, 0]], atol=1e-12)


def test_gaussian_ellipse_refuses_bad_input():
    with pytest.raises(ValueError, match="mean must be"):
        plots.gaussian_ellipse([0, 0, 0], np.eye(2))
    with pytest.raises(ValueError, match="radius"):
        plots.gaussian_ellipse([0, 0], np.eye(2), radius=0)
    with pytest.raises(np.linalg.LinAlgError):
        plots.gaussian_ellipse([0, 0], [[1.0, 2.0], [2.0, 1.0]])


def test_plot_gaussian_ellipses_draws_each_radius_and_the_axes():
    fig, ax = matplotlib.pyplot.subplots()
    plots.plot_gaussian_ellipses(
        [0, 0], [[2.0, 0.5], [0.5, 1.0]], ax, axes=True, label="q", color="k"
    )
    assert len(ax.lines) == 2 + 2
    assert [line.get_label() for line in ax.lines][0] == "q"
    matplotlib.pyplot.close(fig)


def test_claim_prints_and_stops_a_strict_run_on_a_false_sentence(capsys):
    from betavae_lib.report import claim

    assert claim("two is more than one", 2 > 1, strict=True)
    assert "holds in this run: two is more than one" in capsys.readouterr().out
    assert not claim("one is more than two", 1 > 2, strict=False)
    assert "does NOT hold" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="one is more than two"):
        claim("one is more than two", 1 > 2, strict=True)
