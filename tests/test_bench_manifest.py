"""The benchmark table reads chapter wall times from the run manifest as the
executor writes it (one entry per notebook, each with its own device and profile)."""

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import bench_ensemble  # noqa: E402


def _entry(stem, **fields):
    return {
        "path": f"notebooks/{stem}.ipynb",
        "status": "ok",
        "wall_s": 100.0,
        "device_kind": "cpu",
        "device": "AMD EPYC (2 cores)",
        "profile": "full",
        "started_utc": "2026-12-05T00:00:00Z",
        **fields,
    }


def test_chapter_rows_take_full_profile_cuda_runs_only(tmp_path):
    manifest = tmp_path / "execution.json"
    notebooks = [
        _entry("01_first_vae"),  # a CPU run: not a CUDA row
        _entry(
            "05_fid",
            device_kind="cuda",
            device="NVIDIA H100",
            wall_s=321.5,
            started_utc="2026-12-06T01:02:03Z",
        ),
        _entry("06_disentanglement", device_kind="cuda", profile="reduced"),
    ]
    manifest.write_text(json.dumps({"schema": 2, "runs": [], "notebooks": notebooks}))
    rows = {r.name: r for r in bench_ensemble.chapter_rows(manifest)}
    assert set(rows) == {
        bench_ensemble.CHAPTER_ROW.format(name=c) for c in bench_ensemble.CHAPTERS
    }
    fid = rows["chapter 05_fid, full profile"]
    assert fid.seconds == 321.5
    assert "NVIDIA H100" in fid.note and "2026-12-06T01:02:03Z" in fid.note
    for name in ("01_first_vae", "06_disentanglement", "02_elbo"):
        row = rows[f"chapter {name}, full profile"]
        assert row.seconds is None and row.note.startswith("not measured")


def test_chapter_rows_without_a_readable_manifest(tmp_path):
    for text in (None, "not json", "[1, 2]"):
        manifest = tmp_path / "execution.json"
        if text is not None:
            manifest.write_text(text)
        rows = bench_ensemble.chapter_rows(manifest)
        assert len(rows) == len(bench_ensemble.CHAPTERS)
        assert all(r.seconds is None for r in rows)
