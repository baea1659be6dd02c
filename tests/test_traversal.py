"""Latent traversals (grid, animation frames), against a decoder that records the codes
it is given and paints each image with a known function of its code."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from betavae_lib import traversal  # noqa: E402
from betavae_lib.models import MLPVAE  # noqa: E402


class RecordingDecoder(torch.nn.Module):
    """A stand-in model: ``decode(z)`` records z and returns logits equal to
    ``weights · z`` on every pixel, so each decoded image is the constant
    sigmoid(weights · z)."""

    def __init__(self, latent_dim: int, side: int = 6):
        super().__init__()
        self.latent_dim, self.side = latent_dim, side
        self.weights = torch.nn.Parameter(
            torch.linspace(0.2, 0.5, latent_dim), requires_grad=False
        )
        self.calls = []

    def decode(self, z):
        self.calls.append(z.detach().clone())
        value = z @ self.weights
        return value.view(-1, 1, 1, 1).expand(-1, 1, self.side, self.side).clone()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def expected_pixel(model, z):
    return torch.sigmoid(torch.as_tensor(z, dtype=torch.float32) @ model.weights).item()


def test_traversal_images_shape_and_codes():
    model = RecordingDecoder(5)
    z0 = torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5])
    values = np.linspace(-2, 2, 7)
    images = traversal.traversal_images(model, z0, values, dims=[1, 3])
    assert images.shape == (2, 7, 1, 6, 6)
    codes = model.calls[-1].reshape(2, 7, 5)
    for i, d in enumerate([1, 3]):
        np.testing.assert_allclose(codes[i, :, d].numpy(), values, rtol=0, atol=1e-6)
        others = [k for k in range(5) if k != d]
        np.testing.assert_allclose(
            codes[i][:, others].numpy(), np.tile(z0.numpy()[others], (7, 1)), atol=0
        )
        for j in range(7):
            assert images[i, j, 0, 0, 0].item() == pytest.approx(
                expected_pixel(model, codes[i, j]), abs=1e-6
            )


def test_traversal_defaults_to_the_prior_mean_and_every_latent():
    model = RecordingDecoder(4)
    images = traversal.traversal_images(model)
    assert images.shape == (4, len(traversal.DEFAULT_VALUES), 1, 6, 6)
    codes = model.calls[-1].reshape(4, -1, 4)
    off_diagonal = codes.clone()
    for d in range(4):
        off_diagonal[d, :, d] = 0
    assert off_diagonal.abs().max().item() == 0.0


def test_bad_dims_and_z0_are_refused():
    model = RecordingDecoder(3)
    with pytest.raises(ValueError, match="dims"):
        traversal.traversal_images(model, dims=[3])
    with pytest.raises(ValueError, match="z0"):
        traversal.traversal_images(model, z0=torch.zeros(4))


def test_traversal_grid_on_a_real_model():
    torch.manual_seed(0)
    model = MLPVAE(latent_dim=3, hidden=(8,), image_shape=(1, 5, 5)).eval()
    grid = traversal.traversal_grid(
        model, torch.zeros(3), values=np.linspace(-1, 1, 4), dims=[0, 2]
    )
    assert grid.images.shape == (2, 4, 1, 5, 5)
    z = torch.tensor([[0.0, 0.0, 1.0]])
    with torch.no_grad():
        np.testing.assert_allclose(
            grid.images[1, 3].numpy(),
            torch.sigmoid(model.decode(z))[0].numpy(),
            atol=1e-6,
        )
    ax = grid.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["$z_{0}$", "$z_{2}$"]
    assert len(ax.get_xticklabels()) == 4


def test_frames_go_there_and_back_with_one_panel_per_latent():
    model = RecordingDecoder(3, side=4)
    z0 = torch.tensor([0.5, 0.0, -0.5])
    values = np.array([-1.0, 0.0, 1.0, 2.0])
    frames = traversal.traversal_frames(model, z0, values, dims=[0, 2], pad=2)
    assert len(frames) == 2 * len(values) - 2
    assert all(f.shape == (4, 2 * (4 + 2) - 2) for f in frames)
    order = [0, 1, 2, 3, 2, 1]
    for frame, t in zip(frames, order):
        for i, d in enumerate([0, 2]):
            z = z0.clone()
            z[d] = values[t]
            panel = frame[:, i * 6 : i * 6 + 4]
            np.testing.assert_allclose(panel, expected_pixel(model, z), atol=1e-6)
        assert (frame[:, 4:6] == 1.0).all()  # white gap between panels


def test_there_and_back():
    assert traversal.there_and_back(4) == [0, 1, 2, 3, 2, 1]
    assert traversal.there_and_back(2) == [0, 1]
    assert traversal.there_and_back(1) == [0]


def test_animation_embeds_one_image_per_frame():
    model = RecordingDecoder(2, side=4)
    html = traversal.traversal_animation(
        model, values=np.linspace(-1, 1, 3), title="test"
    ).data
    assert "<script" in html
    assert html.count("data:image/png;base64") == 2 * 3 - 2


def test_image_png_round_trip():
    from PIL import Image

    img = torch.zeros(1, 2, 2)
    img[0, 0, 1] = 1.0
    png = traversal.image_png(img, size=8)
    arr = np.asarray(Image.open(io.BytesIO(png)))
    assert arr.shape == (8, 8)
    assert arr[0, 7] == 255 and arr[0, 0] == 0 and arr[7, 7] == 0


def test_kl_and_mi_plot_keeps_alive_latents_sorted_by_kl():
    from betavae_lib import plots

    kl = np.array([0.0, 3.0, 0.5, 0.005, 1.5])
    mi = np.arange(15, dtype=float).reshape(5, 3) / 10
    entropy = np.array([1.0, 2.0, 4.0])
    fig = plots.plot_kl_and_mi(kl, mi, ["a", "b", "c"], entropy=entropy, threshold=0.01)
    ax_kl, ax_mi = fig.axes[:2]
    assert [t.get_text() for t in ax_kl.get_yticklabels()] == ["z1", "z4", "z2"]
    shown = ax_mi.images[0].get_array()
    np.testing.assert_allclose(shown, mi[[1, 4, 2]] / entropy)
    np.testing.assert_allclose([p.get_width() for p in ax_kl.patches], [3.0, 1.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        plots.plot_kl_and_mi(kl, mi[:, :2], ["a", "b", "c"])
