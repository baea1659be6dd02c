"""tools/gpu_bundle.py: the plan fits the GPU machine's limits, and the Inception
weights come back bit for bit from their parts."""

import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import gpu_bundle as gb  # noqa: E402

MIB = gb.MIB


def fake_inception(seed: int = 0) -> dict:
    """A small state dict laid out like pytorch-fid's: float32 convs and BN, int64
    counters, and an all-zero fc layer."""
    g = torch.Generator().manual_seed(seed)
    return {
        "Conv2d_1a_3x3.conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "Conv2d_1a_3x3.bn.running_var": torch.rand(8, generator=g) + 0.5,
        "Conv2d_1a_3x3.bn.num_batches_tracked": torch.tensor(0),
        "Mixed_5b.branch1x1.conv.weight": torch.randn(16, 8, 1, 1, generator=g),
        "fc.weight": torch.zeros(10, 16),
        "fc.bias": torch.zeros(10),
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        assert b[key].dtype == value.dtype and torch.equal(b[key], value), key


def test_weights_round_trip_bit_for_bit_through_small_parts():
    state = fake_inception()
    index, parts = gb.pack_state_dict(state, part_bytes=500)
    assert len(parts) > 2 and max(map(len, parts)) <= 500
    assert "fc.weight" not in {e["name"] for e in index["tensors"]}  # not carried
    assert_same_state(state, gb.unpack_state_dict(index, parts))


def test_a_corrupt_part_and_a_non_zero_fc_are_refused():
    state = fake_inception()
    index, parts = gb.pack_state_dict(state, part_bytes=500)
    parts[1] = bytes([parts[1][0] ^ 1]) + parts[1][1:]
    with pytest.raises(ValueError, match="part 2 is corrupt"):
        gb.unpack_state_dict(index, parts)
    state["fc.bias"][3] = 1.0
    with pytest.raises(ValueError, match="fc.bias is not all zeros"):
        gb.pack_state_dict(state, part_bytes=500)


def test_split_and_join_files(tmp_path):
    state = fake_inception(seed=1)
    torch.save(state, tmp_path / "weights.pth")
    folders = gb.split_weights(tmp_path / "weights.pth", tmp_path / "parts", 700)
    joined = gb.join_weights(folders, tmp_path / "out" / "weights.pth")
    assert_same_state(state, torch.load(joined, weights_only=True))
    with pytest.raises(FileNotFoundError, match=r"parts \[2\]"):
        gb.join_weights([folders[0], *folders[2:]], tmp_path / "again.pth")


def test_the_plan_stages_inception_right_before_chapter_5():
    parts = [f"{gb.PARTS_DIR}/part-1", f"{gb.PARTS_DIR}/part-2"]
    names = [c.name for c in gb.planned_commands(parts)]
    assert names[-3:] == ["inception-1", "inception-2", "book-5"]
    for command in gb.planned_commands(parts):
        assert len(command.run) <= 2000 and len(command.carry) <= gb.MAX_CARRY


def test_size_checks_name_the_command_over_the_limit_and_missing_paths():
    commands = [
        gb.Command("small", "", ["a"], "true"),
        gb.Command("big", "", ["a", "b"], "true"),
        gb.Command("lost", "", ["c"], "true"),
    ]
    sizes = {"a": 20 * MIB, "b": 40 * MIB}
    problems = gb.check_commands(commands, sizes, tree=10 * MIB)
    assert len(problems) == 2
    assert problems[0].startswith("big: 70.0 MiB > 64 MiB")
    assert problems[1].startswith("lost: c missing")
    assert gb.check_commands(commands[:1], sizes, tree=10 * MIB) == []


def test_install_unpacks_each_wheel_once(tmp_path, monkeypatch):
    monkeypatch.setattr(gb, "ROOT", tmp_path)
    (tmp_path / gb.WHEEL_DIR).mkdir()
    with zipfile.ZipFile(
        tmp_path / gb.WHEEL_DIR / "demo-1.0-py3-none-any.whl", "w"
    ) as z:
        z.writestr("demo/__init__.py", "VALUE = 1\n")
    assert gb.install() == 0
    module = tmp_path / gb.SITE_DIR / "demo" / "__init__.py"
    assert module.read_text() == "VALUE = 1\n"
    module.write_text("changed")
    gb.install()  # the same wheels: nothing unpacked again
    assert module.read_text() == "changed"
