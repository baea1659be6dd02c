"""The vendored JavaScript decoder against PyTorch's own decoder (in Node), and the
serialised weights."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from betavae_lib import jsdecoder
from betavae_lib.models import MLPVAE, ConvVAE

ROOT = Path(__file__).resolve().parents[1]
DECODER_JS = ROOT / "betavae_lib" / "assets" / "decoder.js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="Node.js is not installed: the JavaScript decoder is not run"
)

# Reads a decoder spec and codes (JSON files), writes the decoded pixels (JSON).
NODE_RUNNER = """
const fs = require("fs");
const Decoder = require(process.argv[2]);
const decoder = Decoder.load(JSON.parse(fs.readFileSync(process.argv[3], "utf8")));
const codes = JSON.parse(fs.readFileSync(process.argv[4], "utf8"));
const images = codes.map((z) => Array.from(decoder.decode(z)));
fs.writeFileSync(process.argv[5], JSON.stringify(images));
"""


def seeded(model_class, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model_class(**kwargs).eval()


ARCHITECTURES = {
    "mlp": lambda: seeded(MLPVAE, latent_dim=20),  # the book's 784-400-400-20
    # Burda et al. (2016): 784-200-200-50, tanh units
    "mlp-tanh": lambda: seeded(
        MLPVAE, latent_dim=50, hidden=(200, 200), activation="tanh"
    ),
    "conv": lambda: seeded(ConvVAE, latent_dim=10, image_size=64),  # Burgess et al.
    # odd sizes: RGB, 28x28, channel counts that differ everywhere
    "conv-rgb": lambda: seeded(
        ConvVAE, latent_dim=3, image_size=28, channels=3, width=5, hidden=7
    ),
}


def pytorch_images(model, z) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(model.decode(z))


def run_js_decoder(spec: dict, z: torch.Tensor, tmp_path: Path) -> torch.Tensor:
    """Decode codes z (B, D) with decoder.js under Node: (B, C, H, W)."""
    (tmp_path / "runner.js").write_text(NODE_RUNNER, encoding="utf-8")
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    (tmp_path / "z.json").write_text(json.dumps(z.tolist()), encoding="utf-8")
    subprocess.run(
        [
            NODE,
            str(tmp_path / "runner.js"),
            str(DECODER_JS),
            str(tmp_path / "spec.json"),
            str(tmp_path / "z.json"),
            str(tmp_path / "out.json"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    return torch.tensor(out).reshape(len(z), *spec["image_shape"])


# --------------------------------------------------------------------- numerics (Node)


@needs_node
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("precision", ["int8", "fp16", "int8+fp16"])
def test_js_decoder_matches_pytorch(arch, precision, tmp_path):
    """Random codes decoded in JavaScript from quantised weights are within 2/255 of
    PyTorch, and equal (to float rounding) the same weights decoded by PyTorch."""
    model = ARCHITECTURES[arch]()
    if precision == "int8+fp16":  # layers with weights alternate int8, fp16, int8, ...
        n = sum(isinstance(m, (nn.Linear, nn.ConvTranspose2d)) for m in model.decoder)
        plan = ["int8", "fp16"] * n
        calibration = jsdecoder.probe_codes(model.latent_dim, n=64, seed=1)
        spec = jsdecoder.decoder_spec(model, plan[:n], calibration)
    else:
        spec = jsdecoder.serialise_decoder(model, precision).spec
    assert spec["precision"] == precision
    z = jsdecoder.probe_codes(model.latent_dim, n=24, seed=7)
    js = run_js_decoder(spec, z, tmp_path)
    assert (js - pytorch_images(model, z)).abs().max().item() <= jsdecoder.TOLERANCE
    same_weights = jsdecoder.decode_serialised(spec, z)
    assert (js - same_weights).abs().max().item() < 1e-5


@needs_node
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_js_decoder_in_fp32_is_pytorch_to_float_rounding(arch, tmp_path):
    model = ARCHITECTURES[arch]()
    with torch.no_grad():  # larger weights than at initialisation: larger logits
        for p in model.decoder.parameters():
            p.mul_(3.0)
    spec = jsdecoder.serialise_decoder(model, "fp32").spec
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(3))
    js = run_js_decoder(spec, z, tmp_path)
    np.testing.assert_allclose(js.numpy(), pytorch_images(model, z).numpy(), atol=2e-6)


@needs_node
def test_js_decoder_refuses_a_wrong_code_length(tmp_path):
    spec = jsdecoder.serialise_decoder(ARCHITECTURES["conv-rgb"](), "fp16").spec
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_js_decoder(spec, torch.zeros(1, 4), tmp_path)
    assert b"z must hold 3 numbers" in failed.value.stderr


# ------------------------------------------------------------------------ serialisation


@pytest.mark.parametrize("axis, shape", [(0, (37, 70)), (1, (6, 5, 4, 4))])
def test_int8_round_trip_is_within_half_a_step_per_block(axis, shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g) * torch.linspace(0.01, 3, shape[axis]).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))]
    )
    spec = jsdecoder.quantise(w, "int8", axis=axis, block=16)
    back = jsdecoder.dequantise(spec)
    assert back.shape == w.shape
    # independent bound: blocks of 16 consecutive weights of each output channel
    rows = w.movedim(axis, 0).reshape(shape[axis], -1)
    err = (back - w).movedim(axis, 0).reshape(shape[axis], -1).abs()
    for start in range(0, rows.shape[1], 16):
        step = rows[:, start : start + 16].abs().amax(1, keepdim=True) / 127
        assert (err[:, start : start + 16] <= step / 2 + 1e-7).all()
    assert len(spec["data"]) == 4 * -(-w.numel() // 3)  # one base64 byte per weight


def test_fp16_and_fp32_round_trips():
    w = torch.randn(9, 11, generator=torch.Generator().manual_seed(1))
    assert torch.equal(jsdecoder.dequantise(jsdecoder.quantise(w, "fp32")), w)
    half = jsdecoder.dequantise(jsdecoder.quantise(w, "fp16"))
    assert torch.equal(half, w.half().float())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_page_weight_per_model(arch):
    """int8: a byte per weight, a float32 scale per 32, float32 biases; base64."""
    model = ARCHITECTURES[arch]()
    exported = jsdecoder.serialise_decoder(model, "int8")
    layers = [
        m for m in model.decoder if isinstance(m, (nn.Linear, nn.ConvTranspose2d))
    ]
    weights = sum(m.weight.numel() for m in layers)
    biases = sum(m.bias.numel() for m in layers)
    blocks = 0
    for m in layers:  # Linear (out, in); ConvTranspose2d (in, out, k, k)
        channels = m.weight.shape[0 if isinstance(m, nn.Linear) else 1]
        blocks += channels * -(-(m.weight.numel() // channels) // 32)
    payload = 4 / 3 * (weights + 4 * blocks + 4 * biases)
    assert payload <= exported.nbytes <= payload + 4_000  # + JSON keys and shapes
    fp16 = jsdecoder.serialise_decoder(model, "fp16")
    assert fp16.nbytes == pytest.approx(4 / 3 * (2 * weights + 4 * biases), abs=4_000)
    assert exported.nbytes < 0.6 * fp16.nbytes


def test_int8_rounding_on_calibration_inputs_keeps_the_layer_outputs_closer():
    """Rounding each column to make up for the earlier columns' errors (GPTQ) gives
    outputs nearer the float layer's, on inputs like the calibration ones, than plain
    rounding does."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 96, generator=g) / 10
    mix = torch.randn(96, 96, generator=g)  # correlated inputs, as a layer's are
    calibration = torch.relu(torch.randn(400, 96, generator=g) @ mix)
    fresh = torch.relu(torch.randn(400, 96, generator=g) @ mix)
    plain = jsdecoder.dequantise(jsdecoder.quantise(w, "int8"))
    spec = jsdecoder.quantise(w, "int8", inputs=calibration)
    assert spec["dtype"] == "int8" and len(spec["data"]) == len(
        jsdecoder.quantise(w, "int8")["data"]
    )
    compensated = jsdecoder.dequantise(spec)
    for x in (calibration, fresh):
        err_plain = (x @ (plain - w).T).pow(2).mean()
        err_compensated = (x @ (compensated - w).T).pow(2).mean()
        assert err_compensated < 0.75 * err_plain
    with pytest.raises(ValueError, match="Linear weight"):
        jsdecoder.quantise(torch.zeros(2, 3, 4, 4), "int8", axis=1, inputs=calibration)


def test_auto_precision_moves_the_costliest_layer_to_fp16():
    model = seeded(MLPVAE, latent_dim=4, hidden=(32,), image_shape=(1, 8, 8))
    auto = jsdecoder.serialise_decoder(model)
    assert auto.precision == "int8" and auto.max_error <= jsdecoder.TOLERANCE
    with torch.no_grad():  # hidden unit 0 is always 0, and its weights out are huge:
        model.decoder[0].weight[0] = 0.0  # harmless in fp16, but in int8 they set the
        model.decoder[0].bias[0] = -1.0  # scale and round the others to 0
        model.decoder[2].weight[:, 0] = 400.0
    auto = jsdecoder.serialise_decoder(model)
    assert jsdecoder.serialise_decoder(model, "int8").max_error > jsdecoder.TOLERANCE
    assert auto.precision == "int8+fp16" and auto.max_error <= jsdecoder.TOLERANCE
    dtypes = [
        layer["weight"]["dtype"] for layer in auto.spec["layers"] if "weight" in layer
    ]
    assert dtypes == ["int8", "float16"]
    with pytest.raises(ValueError, match="one per"):
        jsdecoder.decoder_spec(model, ["int8"])


class OverridesDecode(MLPVAE):
    def decode(self, z):
        return super().decode(z) * 2


class NotAVAE(nn.Module):
    latent_dim = 2

    def decode(self, z):
        return z


def gelu_decoder():
    model = seeded(MLPVAE, latent_dim=2, hidden=(4,), image_shape=(1, 2, 2))
    model.decoder[1] = nn.GELU()
    return model


def dilated_decoder():
    model = seeded(ConvVAE, latent_dim=2, image_size=28, width=4, hidden=8)
    model.decoder[-1] = nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1, dilation=2)
    return model


@pytest.mark.parametrize(
    "make, match",
    [
        (NotAVAE, "only betavae_lib VAE models"),
        (lambda: OverridesDecode(latent_dim=2, hidden=(4,)), "overrides decode"),
        (gelu_decoder, "cannot serialise a GELU"),
        (dilated_decoder, "no dilation"),
    ],
)
def test_models_it_cannot_serialise_are_refused(make, match):
    with pytest.raises(TypeError, match=match):
        jsdecoder.serialise_decoder(make())


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        jsdecoder.serialise_decoder(ARCHITECTURES["conv-rgb"](), "int4")


def test_tanh_layers_are_serialised_as_tanh():
    """A tanh decoder's spec names its units, and decoding it in PyTorch from the fp32
    weights gives the model's images; the same weights with ReLU units do not."""
    model = ARCHITECTURES["mlp-tanh"]()
    spec = jsdecoder.serialise_decoder(model, "fp32").spec
    kinds = [layer["type"] for layer in spec["layers"]]
    assert kinds == ["linear", "tanh", "linear", "tanh", "linear", "unflatten"]
    z = jsdecoder.probe_codes(model.latent_dim, n=16, seed=2)
    torch.testing.assert_close(
        jsdecoder.decode_serialised(spec, z), pytorch_images(model, z)
    )
    as_relu = dict(spec, layers=[dict(layer) for layer in spec["layers"]])
    for layer in as_relu["layers"]:
        if layer["type"] == "tanh":
            layer["type"] = "relu"
    assert not torch.allclose(
        jsdecoder.decode_serialised(as_relu, z), pytorch_images(model, z), atol=1e-3
    )
