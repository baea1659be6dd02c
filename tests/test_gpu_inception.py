"""The GPU call's Inception check (tools/gpu_device.py, call gpu-inception) on the CPU:
the 16 formula images give the stored CPU features (tests/data/inception_reference.npz)
through the weights joined from their parts. Runs where pytorch-fid and torchvision
import (the Inception test environment of requirements-fid.txt) and the weights are in
$BETAVAE_DATA_DIR/weights; imports nothing of the Jupyter stack."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_bundle as gb  # noqa: E402
import gpu_device as gd  # noqa: E402

DATA = os.environ.get("BETAVAE_DATA_DIR")
WEIGHTS = Path(DATA or "/nonexistent") / "weights" / gb.WEIGHTS_NAME


def test_the_reference_features_are_stored():
    ref = np.load(ROOT / "tests/data/inception_reference.npz")
    assert ref["features"].shape == (16, 2048) and ref["features"].dtype == np.float32
    assert np.isfinite(ref["features"]).all() and ref["features"].std() > 0.01
    assert tuple(gd.formula_images().shape) == (16, 1, 28, 28)


@pytest.mark.skipif(
    not WEIGHTS.is_file(), reason="no Inception weights in $BETAVAE_DATA_DIR"
)
def test_inception_check_through_joined_parts_matches_the_cpu_reference(
    tmp_path, monkeypatch
):
    pytest.importorskip("torchvision", reason="Inception needs torchvision")
    pytest.importorskip("pytorch_fid", reason="Inception needs pytorch-fid")
    folders = gb.split_weights(WEIGHTS, tmp_path / "parts", [40 * gb.MIB])
    joined = gb.join_weights(folders, tmp_path / "weights" / gb.WEIGHTS_NAME)
    monkeypatch.setattr(gd, "WEIGHTS", joined)
    monkeypatch.setattr(gd, "DRY", False)
    result = gd.inception_check()
    assert result["checked"] and result["matches_cpu"], result
    assert result["max_abs_diff_vs_cpu"] < 1e-4
