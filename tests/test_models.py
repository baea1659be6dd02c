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


def test_tanh_mlp_is_the_hand_built_network_of_burda_et_al():
    """784-200-200-50 with tanh hidden units (Burda et al. 2016, Table 1): the same
    function as nn.Sequential layers built by hand and given the same weights."""
    torch.manual_seed(0)
    m = MLPVAE(latent_dim=50, hidden=(200, 200), activation="tanh")
    sizes = [(784, 200), (200, 200), (200, 100), (50, 200), (200, 200), (200, 784)]
    linears = [nn.Linear(a, b) for a, b in sizes]
    with torch.no_grad():
        mine = [layer for layer in m.modules() if isinstance(layer, nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in mine] == sizes
        for lin, theirs in zip(linears, mine):
            lin.weight.copy_(theirs.weight)
            lin.bias.copy_(theirs.bias)
    encoder = nn.Sequential(
        nn.Flatten(), linears[0], nn.Tanh(), linears[1], nn.Tanh(), linears[2]
    )
    decoder = nn.Sequential(linears[3], nn.Tanh(), linears[4], nn.Tanh(), linears[5])
    x = torch.rand(6, 1, 28, 28)
    mu, logvar = m.encode(x)
    torch.testing.assert_close(torch.cat([mu, logvar], 1), encoder(x), rtol=0, atol=0)
    z = torch.randn(6, 50)
    want = decoder(z).reshape(6, 1, 28, 28)
    torch.testing.assert_close(m.decode(z), want, rtol=0, atol=0)
    # and it is not the ReLU network with those weights
    relu = nn.Sequential(linears[3], nn.ReLU(), linears[4], nn.ReLU(), linears[5])
    assert not torch.allclose(m.decode(z), relu(z).reshape(6, 1, 28, 28))


def test_activation_is_in_the_config_only_when_not_relu():
    """ReLU models keep the config (so the checkpoints and cache keys) they had before
    the option existed."""
    relu = MLPVAE(latent_dim=3, hidden=(8,))
    assert relu.config == {"latent_dim": 3, "hidden": [8], "image_shape": [1, 28, 28]}
    assert MLPVAE(latent_dim=3, hidden=(8,), activation="relu").config == relu.config
    tanh = MLPVAE(latent_dim=3, hidden=(8,), activation="tanh")
    assert tanh.config == {**relu.config, "activation": "tanh"}
    assert MLPVAE(**tanh.config).config == tanh.config
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())


@pytest.mark.parametrize("activation", ["gelu", "Tanh", "", None, nn.Tanh, ["tanh"]])
def test_unknown_activations_are_refused_naming_the_valid_ones(activation):
    with pytest.raises(
        ValueError, match=r"activation must be one of 'relu', 'tanh', got"
    ):
        MLPVAE(activation=activation)
