"""Loaders on the real files, the procedural dSprites grid, and the errors for bad
requests."""

import gzip
import shutil

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, needs_fashion, needs_mnist

from betavae_lib import data
from betavae_lib.data import (
    ChecksumError,
    DataNotFoundError,
    load_dataset,
    render_dsprites,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mnist
def test_mnist_train_matches_published_counts_and_mean():
    ds = load_dataset("mnist", "train")
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert 0.0 == ds.images.min() and ds.images.max() == 1.0
    # mean pixel 33.318 / 255 (the published 0.1307 normalisation constant)
    assert ds.images.mean().item() * 255 == pytest.approx(33.318, abs=1e-3)


@needs_mnist
def test_mnist_test_counts():
    assert load_dataset("mnist", "test").labels.bincount().tolist() == MNIST_TEST_COUNTS


@needs_fashion
@pytest.mark.parametrize("split,per_class", [("train", 6000), ("test", 1000)])
def test_fashion_mnist_6000_per_class(split, per_class):
    ds = load_dataset("fashion-mnist", split)
    assert ds.labels.bincount().tolist() == [per_class] * 10
    assert ds.label_names[9] == "Ankle boot"
    assert (
        ds.images.mean().item() == pytest.approx(0.286, abs=5e-4)
        if split == "train"
        else True
    )


@needs_mnist
def test_subset_is_seeded_and_sized():
    ds = load_dataset("mnist", "test")
    a, b = ds.subset(100, seed=3), ds.subset(100, seed=3)
    assert (
        len(a) == 100
        and torch.equal(a.images, b.images)
        and torch.equal(a.labels, b.labels)
    )
    assert not torch.equal(a.labels, ds.subset(100, seed=4).labels)
    assert ds.subset(None) is ds


def test_read_idx_matches_hand_built_file(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(
            bytes([0, 0, 8, 3])
            + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
            + arr.tobytes()
        )
    assert np.array_equal(data.read_idx(path), arr)


def test_read_idx_rejects_inconsistent_header(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 5)
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(path)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="mnist, fashion_mnist, dsprites"):
        load_dataset("cifar10")


def test_unknown_split():
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("mnist", "validation")


def test_offline_without_files_says_where_to_put_them(offline):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", root=offline / "nowhere")
    msg = str(err.value)
    assert (
        "nowhere/MNIST/raw/train-images-idx3-ubyte.gz" in msg
        and "BETAVAE_DATA_DIR" in msg
    )


@needs_mnist
def test_corrupt_file_is_reported_with_its_path(offline):
    raw = offline / "root" / "MNIST" / "raw"
    shutil.copytree(f"{DATA_DIR}/MNIST/raw", raw)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(
        ChecksumError, match="t10k-labels-idx1-ubyte.gz is corrupt or truncated"
    ):
        load_dataset("mnist", "test", root=offline / "root")


# ---------------------------------------------------------------------------- dSprites


@pytest.fixture(scope="module")
def sprites():
    return load_dataset("dsprites", source="procedural")


def test_dsprites_grid_size_and_factor_values(sprites):
    assert len(sprites) == 737_280 == 3 * 6 * 40 * 32 * 32
    classes = sprites.factor_classes
    assert classes.shape == (737_280, 5)
    assert [len(np.unique(classes[:, k])) for k in range(5)] == [3, 6, 40, 32, 32]
    values = sprites.factor_values(classes[[0, -1]])
    np.testing.assert_allclose(values[0], [1, 0.5, 0, 0, 0])
    np.testing.assert_allclose(values[1], [3, 1, 2 * np.pi, 1, 1])
    np.testing.assert_allclose(
        np.diff(sprites.factor_values_grid[1]), 0.1
    )  # scale 0.5, 0.6, …, 1.0


def test_dsprites_index_order_is_row_major(sprites):
    # index = ((((shape*6 + scale)*40 + orientation)*32 + posX)*32 + posY), as in
    # DeepMind's file
    idx = (((2 * 6 + 3) * 40 + 7) * 32 + 5) * 32 + 31
    assert sprites.index_to_factors([idx]).tolist() == [[2, 3, 7, 5, 31]]
    assert sprites.factors_to_index([[2, 3, 7, 5, 31]]).tolist() == [idx]


def test_dsprites_rendering_is_deterministic_binary_and_factor_driven(sprites):
    idx = np.array([0, 1234, 500_000, 737_279])
    a, b = sprites.images(idx), sprites.images(idx)
    assert a.shape == (4, 1, 64, 64) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and (a.flatten(1).sum(1) > 0).all()
    # area grows with scale (square: area ∝ scale²)
    small, big = (
        render_dsprites([[0, 0, 0, 16, 16], [0, 5, 0, 16, 16]]).flatten(1).sum(1)
    )
    assert big / small == pytest.approx((1.0 / 0.5) ** 2, rel=0.15)
    # moving posX moves the centre of mass to the right, posY downwards
    left, right, low = render_dsprites(
        [[1, 3, 0, 0, 16], [1, 3, 0, 31, 16], [1, 3, 0, 16, 31]]
    )[:, 0]
    cols = torch.arange(64.0)
    com_x = lambda im: (im.sum(0) * cols).sum() / im.sum()
    com_y = lambda im: (im.sum(1) * cols).sum() / im.sum()
    assert com_x(right) - com_x(left) > 30 and com_y(low) > 40


def test_dsprites_sampling_interface(sprites):
    rng = np.random.default_rng(0)
    f = sprites.sample_factors(10, rng)
    assert f.shape == (10, 5) and (f < np.array(sprites.factor_sizes)).all()
    imgs = sprites.sample_observations_from_factors(f, rng)
    assert torch.equal(imgs, sprites.images(sprites.factors_to_index(f)))


def test_dsprites_bad_indices_and_classes(sprites):
    with pytest.raises(IndexError, match="737280"):
        sprites.images([737_280])
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        sprites.factors_to_index([[0, 0, 0]])
    with pytest.raises(ValueError, match="out of range"):
        sprites.factors_to_index([[3, 0, 0, 0, 0]])


def test_dsprites_auto_falls_back_to_procedural_with_a_warning(offline):
    with pytest.warns(UserWarning, match="procedural generator"):
        ds = load_dataset("dsprites")
    assert ds.source == "procedural"
    with pytest.raises(DataNotFoundError, match=data.DSPRITES_FILE):
        load_dataset("dsprites", source="npz")
    with pytest.raises(ValueError, match="auto, npz, procedural"):
        load_dataset("dsprites", source="png")


def test_dsprites_real_file_is_used_when_present(offline, monkeypatch):
    """A file with the real name and layout is read (checksum-verified via its git blob
    id).

    A stand-in with 200 images keeps the test light; the loader is told to expect 200.
    """
    n = 200
    imgs = np.zeros((n, 64, 64), dtype=np.uint8)
    imgs[123, 10, 20] = 1
    folder = offline / "root" / "dsprites"
    folder.mkdir(parents=True)
    path = folder / data.DSPRITES_FILE
    np.savez_compressed(path, imgs=imgs)
    blob, real_blob = data.file_digest(path, "git"), data.DSPRITES_GIT_BLOB
    monkeypatch.setattr(data, "DSPRITES_GIT_BLOB", blob)
    with pytest.raises(ValueError, match=r"expected \(737280, 64, 64\)"):
        load_dataset("dsprites", root=offline / "root")
    monkeypatch.setattr(data, "DSPRITES_N", n)
    ds = load_dataset("dsprites", root=offline / "root")
    assert (
        ds.source == "npz"
        and ds.images([123])[0, 0, 10, 20] == 1
        and ds.images([124]).sum() == 0
    )
    monkeypatch.setattr(data, "DSPRITES_GIT_BLOB", real_blob)
    with pytest.raises(ChecksumError):  # the real checksum does not match this stand-in
        load_dataset("dsprites", root=offline / "root")


def test_git_blob_digest_matches_git(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello\n")
    assert (
        data.file_digest(path, "git") == "ce013625030ba8dba906f756967f9e9ca394464a"
    )  # git hash-object


# ------------------------------------------------------------------------ binarisation


def test_binarize_draws_each_pixel_with_its_intensity_as_probability():
    """0/1 floats; a fixed seed gives a fixed draw; the mean of 4,000 images with the
    same intensities is each intensity within 5 binomial standard deviations, and
    intensities 0 and 1 are kept exactly."""
    p = torch.linspace(0, 1, 28 * 28).reshape(1, 1, 28, 28)
    images = p.expand(4000, 1, 28, 28)
    drawn = data.binarize(images, seed=3)
    assert drawn.dtype == torch.float32 and drawn.shape == images.shape
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(drawn, data.binarize(images, seed=3))
    assert not torch.equal(drawn, data.binarize(images, seed=4))
    mean = drawn.double().mean(0)
    sd = (p.double() * (1 - p.double()) / len(images)).sqrt()
    assert ((mean - p).abs() <= 5 * sd).all()
    assert (drawn[:, 0, 0, 0] == 0).all() and (drawn[:, 0, -1, -1] == 1).all()


def test_binarize_reads_uint8_as_0_to_255_and_keeps_float_dtypes():
    pixels = torch.tensor([0, 255, 0, 255], dtype=torch.uint8).reshape(1, 1, 2, 2)
    assert data.binarize(pixels).tolist() == [[[[0.0, 1.0], [0.0, 1.0]]]]
    assert data.binarize(pixels.bool()).dtype == torch.float32
    assert data.binarize(torch.rand(2, 1, 4, 4).double()).dtype == torch.float64
    uint8 = (torch.rand(50, 1, 28, 28) * 255).round().to(torch.uint8)
    assert torch.equal(data.binarize(uint8, 1), data.binarize(uint8.float() / 255, 1))


@pytest.mark.parametrize(
    "images, seed, err, match",
    [
        (torch.full((1, 1, 2, 2), 1.5), 0, ValueError, r"lie in \[0, 1\]"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.int64), 0, TypeError, "uint8"),
        (np.zeros((1, 1, 2, 2)), 0, TypeError, "torch.Tensor"),
        (torch.zeros(1, 1, 2, 2), -1, ValueError, "seed must be"),
    ],
)
def test_binarize_refuses_what_is_not_pixel_intensities(images, seed, err, match):
    with pytest.raises(err, match=match):
        data.binarize(images, seed)


def test_dsprites_render_on_a_device_computes_every_step_there(sprites):
    """On the meta device, any CPU tensor mixed into the arithmetic raises ("Tensor on
    device cpu is not on the expected device meta"), so a clean run shows that nothing
    of the rendering happens on the CPU; on the CPU the device argument changes
    nothing."""
    classes = [[2, 3, 5, 16, 16], [0, 0, 0, 0, 31], [1, 5, 39, 31, 0]]
    meta = render_dsprites(classes, device="meta", chunk=2)
    assert meta.device.type == "meta" and meta.shape == (3, 1, 64, 64)
    assert torch.equal(render_dsprites(classes, device="cpu"), render_dsprites(classes))
    on_meta = sprites.to("meta")
    assert sprites.device.type == "cpu" and on_meta.device.type == "meta"
    images = on_meta.sample_observations_from_factors(np.array(classes))
    assert images.device.type == "meta" and images.shape == (3, 1, 64, 64)
    assert torch.equal(sprites.to("cpu").images([0, 1000]), sprites.images([0, 1000]))


def test_dsprites_file_images_come_back_on_the_dataset_device():
    imgs = np.zeros((4, 64, 64), dtype=np.uint8)
    imgs[2, 3, 4] = 1
    ds = data.DSprites(source="npz", _imgs=imgs)
    assert ds.images([2])[0, 0, 3, 4] == 1
    assert ds.to("meta").images([2]).device.type == "meta"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            ds.to("cuda:0")
