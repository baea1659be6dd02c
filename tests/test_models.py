"""Model shapes, the Burgess et al. architecture, sampling statistics and input
checks."""

import pytest
import torch
from torch import nn

from betavae_lib.models import MLPVAE, ConvVAE, reparameterize


@pytest.mark.parametrize("latent_dim", [1, 2, 20, 64])
def test_mlp_shapes_any_latent_size(latent_dim):
    m = MLPVAE(latent_dim=latent_dim)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (5, latent_dim)
    assert m.decode(mu).shape == (5, 1, 28, 28)
    out = m(x)
    assert out.logits.shape == (5, 1, 28, 28) and out.z.shape == (5, latent_dim)
    s = m.sample(7)
    assert s.shape == (7, 1, 28, 28) and 0 <= s.min() and s.max() <= 1


def test_mlp_default_is_784_400_400_20():
    m = MLPVAE()
    sizes = [
        (layer.in_features, layer.out_features)
        for layer in m.encoder
        if isinstance(layer, nn.Linear)
    ]
    assert sizes == [(784, 400), (400, 400), (400, 40)]
    sizes = [
        (layer.in_features, layer.out_features)
        for layer in m.decoder
        if isinstance(layer, nn.Linear)
    ]
    assert sizes == [(20, 400), (400, 400), (400, 784)]


@pytest.mark.parametrize("size,n_conv", [(64, 4), (28, 2)])
@pytest.mark.parametrize("latent_dim", [3, 10])
def test_conv_shapes(size, n_conv, latent_dim):
    m = ConvVAE(latent_dim=latent_dim, image_size=size)
    x = torch.rand(3, 1, size, size)
    mu, logvar = m.encode(x)
    assert mu.shape == (3, latent_dim)
    assert m(x).logits.shape == (3, 1, size, size)
    assert m.sample(2).shape == (2, 1, size, size)
    convs = [layer for layer in m.encoder if isinstance(layer, nn.Conv2d)]
    assert len(convs) == n_conv and all(
        c.out_channels == 32 and c.kernel_size == (4, 4) and c.stride == (2, 2)
        for c in convs
    )


def test_burgess_dsprites_architecture():
    """4 conv 32×4×4 stride 2 → FC 256 → FC 256 → 2×10 (Burgess et al. 2018,
    appendix A.1)."""
    m = ConvVAE()
    linears = [
        (layer.in_features, layer.out_features)
        for layer in m.encoder
        if isinstance(layer, nn.Linear)
    ]
    assert linears == [(32 * 4 * 4, 256), (256, 256), (256, 20)]
    assert m.latent_dim == 10 and m.image_shape == (1, 64, 64)


def test_reparameterize_has_the_posterior_moments():
    mu, logvar = (
        torch.tensor([[1.0, -2.0]]).expand(200_000, 2),
        torch.tensor([[0.0, 2 * torch.log(torch.tensor(3.0))]]).expand(200_000, 2),
    )
    z = reparameterize(mu, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 3.0]), atol=0.03, rtol=0)


def test_reconstruct_uses_the_posterior_mean():
    m = MLPVAE(latent_dim=4)
    x = torch.rand(3, 1, 28, 28)
    mu, _ = m.encode(x)
    torch.testing.assert_close(m.reconstruct(x), torch.sigmoid(m.decode(mu)))


def test_sample_is_reproducible_with_a_generator():
    m = MLPVAE(latent_dim=4)
    a = m.sample(3, generator=torch.Generator().manual_seed(5))
    b = m.sample(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_bad_inputs_raise_clear_errors():
    m = MLPVAE()
    with pytest.raises(
        ValueError,
        match=r"expects images of shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)",
    ):
        m.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        m.encode(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 20\)"):
        m.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        MLPVAE(latent_dim=0)
    with pytest.raises(ValueError, match="image_size 28 or 64"):
        ConvVAE(image_size=32)
