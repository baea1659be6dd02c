"""Grids: :class:`Grid`, a deterministic, index-addressable list of
:class:`~betavae_lib.sweep.config.RunConfig`, built from a spec (a dict, or a YAML/JSON
file of a ``base`` and ``blocks`` of axes) or given by name (:data:`GRIDS`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..profile import Profile, get_profile
from .config import (
    CONFIG_FIELDS,
    MAX_GRID_RUNS,
    MAX_NAME_LENGTH,
    MAX_SPEC_NODES,
    RunConfig,
    _is_int,
    _short,
)


def _axis_values(name: str, value) -> Sequence:
    """A block value -> its values: a list, ``{"range": [a, b]}`` (a ``range``, not
    expanded) or a scalar."""
    if isinstance(value, dict) and set(value) == {"range"}:
        bounds = value["range"]
        if not (
            isinstance(bounds, list) and len(bounds) == 2 and all(map(_is_int, bounds))
        ):
            raise ValueError(
                f'{name}: "range" takes [start, stop] integers, got {_short(bounds)}'
            )
        value = range(*bounds)
        if not value:
            raise ValueError(f"axis {name!r}: range {list(bounds)} is empty")
        return value
    if isinstance(value, dict):
        raise ValueError(
            f'axis {name!r}: a dict value must be {{"range": [start, stop]}}, got '
            f"{_short(value)}"
        )
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"axis {name!r} has no values")
        return list(value)
    return [value]


def _block_axes(block, base: dict) -> tuple[list, list, int]:
    """A block's names, axes (lists or ranges) and number of runs, before expanding."""
    if not isinstance(block, dict):
        raise TypeError(f"each block must be a dict, got {type(block).__name__}")
    names = list(block)
    axes = [_axis_values(str(name), block[name]) for name in names]
    return names, axes, math.prod(len(axis) for axis in axes)


def _expand_block(block: dict, base: dict) -> list[RunConfig]:
    """Every combination of a block's axes (the first slowest), over the base values."""
    names, axes, _ = _block_axes(block, base)
    return [
        RunConfig.from_dict({**base, **dict(zip(names, values))})
        for values in itertools.product(*axes)
    ]


def _count_nodes(value, limit: int) -> int:
    """The values in a spec (a value reached twice, as through a YAML alias, counts
    twice), counting stops past ``limit``."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and len(item) > 10_000:
            return limit + 1
    return count


class Grid(Sequence):
    """A deterministic, index-addressable list of runs: ``grid[i]`` is run ``i``.

    Build one from a spec (:meth:`from_spec`, :meth:`from_file`), by name
    (:func:`get_grid`), or from a list of configurations.
    """

    def __init__(self, runs, name: str = "grid", spec: dict | None = None):
        self.runs = tuple(itertools.islice(runs, MAX_GRID_RUNS + 1))
        if len(self.runs) > MAX_GRID_RUNS:
            raise ValueError(f"a grid holds at most {MAX_GRID_RUNS:,} runs")
        bad = [type(r).__name__ for r in self.runs if not isinstance(r, RunConfig)]
        if bad:
            raise TypeError(f"a grid holds RunConfig objects, got {bad[0]}")
        if not self.runs:
            raise ValueError("a grid needs at least one run")
        first = {}
        for index, config in enumerate(self.runs):
            identity = tuple(
                tuple(sorted(value.items())) if isinstance(value, dict) else value
                for value in (getattr(config, name) for name in CONFIG_FIELDS)
            )
            if identity in first:
                raise ValueError(
                    f"runs {first[identity]} and {index} of the grid are the same run "
                    f"({config.objective}, {config.coefficients}, seed {config.seed}); "
                    f"it would be trained and counted twice: give each its own seed, "
                    f"or remove one"
                )
            first[identity] = index
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"a grid's name must be a non-empty string of at most "
                f"{MAX_NAME_LENGTH} characters, got {_short(name)}"
            )
        self.name, self.spec = name, spec

    @classmethod
    def from_spec(cls, spec: dict) -> Grid:
        """A grid from ``{"name": str, "base": {key: value}, "blocks": [{key: ...}]}``.

        Runs are the blocks in order; within a block, every combination of its
        list-valued keys (axes), the first axis varying slowest, over the block's and
        then the base's single values. Keys that are not :class:`RunConfig` fields are
        coefficients of the objective; ``{"range": [a, b]}`` stands for
        ``list(range(a, b))``.
        """
        if not isinstance(spec, dict):
            raise TypeError(
                f"a grid spec must be a dict with keys name, base, blocks, got "
                f"{'nothing (an empty spec)' if spec is None else type(spec).__name__}"
            )
        if _count_nodes(spec, MAX_SPEC_NODES) > MAX_SPEC_NODES:
            raise ValueError(
                f"the grid spec holds more than {MAX_SPEC_NODES:,} values (YAML "
                f"aliases counted at each use) or a string of over 10,000 characters; "
                f"a grid spec lists axes, not runs"
            )
        unknown = set(spec) - {"name", "base", "blocks"}
        if unknown:
            raise ValueError(
                f"unknown grid spec key(s) {sorted(map(str, unknown))}; "
                f"a spec has name, base, blocks"
            )
        name = spec.get("name", "grid")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"a grid's name must be a non-empty string of at most "
                f"{MAX_NAME_LENGTH} characters, got {_short(name)}"
            )
        base = spec.get("base")
        if base is None:
            base = {}
        if not isinstance(base, dict):
            raise TypeError(
                f'"base" must be a dict of run settings, got {type(base).__name__}'
            )
        base = dict(base)
        lists = [k for k, v in base.items() if isinstance(v, (list, tuple, dict))]
        if lists:
            raise ValueError(
                f"base values must be single values, got lists for {lists}; "
                f"put axes in a block"
            )
        blocks = spec.get("blocks", [{}])
        if not isinstance(blocks, list) or not blocks:
            raise ValueError('"blocks" must be a non-empty list of dicts')
        sizes = [_block_axes(block, base)[2] for block in blocks]
        if sum(sizes) > MAX_GRID_RUNS:
            raise ValueError(
                f"the grid would have {sum(sizes):,} runs (blocks of "
                f"{', '.join(f'{n:,}' for n in sizes)}), more than {MAX_GRID_RUNS:,}; "
                f"split it into several grids"
            )
        runs = [run for block in blocks for run in _expand_block(block, base)]
        return cls(runs, name=name, spec=spec)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Grid:
        """A spec from a JSON or YAML (``.yaml``/``.yml``, needs PyYAML) file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not a UTF-8 text file: {e}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ImportError(
                    f"{path} is YAML, which needs PyYAML: pip install pyyaml "
                    f"(or write JSON)"
                ) from None
            try:
                spec = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"{path} is not valid YAML: {e}") from None
        else:
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(spec, dict):
            found = "nothing" if spec is None else f"a {type(spec).__name__}"
            raise ValueError(
                f"{path} holds {found}; a grid spec is a mapping with keys name, "
                f"base, blocks"
            )
        spec = dict(spec)
        spec.setdefault("name", path.stem)
        try:
            return cls.from_spec(spec)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index) -> RunConfig:
        if not _is_int(index):
            raise TypeError(f"grid indices are integers, got {type(index).__name__}")
        if not 0 <= index < len(self.runs):
            raise IndexError(
                f"grid {self.name!r} has {len(self.runs)} runs (indices 0 to "
                f"{len(self.runs) - 1}); index {index} is out of range"
            )
        return self.runs[index]

    def fingerprint(self) -> str:
        """12 hex digits that change when any run's configuration changes."""
        text = json.dumps([r.as_dict() for r in self.runs], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def summary(self) -> str:
        """The grid in one line: name, size, and each block's fixed values and axes."""
        if self.spec is None:
            return f"{self.name}: {len(self)} runs"
        parts = []
        for block in self.spec.get("blocks", [{}]):
            values = {k: _axis_values(k, v) for k, v in block.items()}
            fixed = [f"{k}={v[0]}" for k, v in values.items() if len(v) == 1]
            axes = [
                f"{k} {list(v) if len(v) <= 20 else f'{v[0]}..{v[-1]} ({len(v)})'}"
                for k, v in values.items()
                if len(v) > 1
            ]
            parts.append(" × ".join([" ".join(fixed)] * bool(fixed) + axes))
        return f"{self.name}: {len(self)} runs = " + " + ".join(parts)

    def __repr__(self) -> str:
        return f"Grid({self.name!r}, {len(self)} runs)"


def chapter6_seeds(profile: Profile | str | None = None) -> Grid:
    """Chapter 6's seed study: β-VAE, β × seed, the chapter's recipe per profile."""
    p = profile if isinstance(profile, Profile) else get_profile(profile)
    base = {
        "dataset": "dsprites",
        "train_size": p.pick(smoke=1_024, reduced=12_800, full=None),
        "batch_size": p.pick(smoke=32, reduced=32, full=64),
        "epochs": p.pick(smoke=1, reduced=1, full=5),
        "lr": p.pick(smoke=2e-3, reduced=2e-3, full=5e-4),
        "eval_size": p.pick(smoke=1_000, reduced=4_000, full=10_000),
        "factor_vae_train": p.pick(smoke=30, reduced=100, full=5_000),
        "factor_vae_eval": p.pick(smoke=20, reduced=50, full=2_500),
        "factor_vae_variance": p.pick(smoke=500, reduced=1_000, full=10_000),
        "factor_vae_batch": p.pick(smoke=32, reduced=32, full=64),
    }
    block = {
        "objective": "beta_vae",
        "beta": p.pick(smoke=[1, 4], reduced=[1, 4, 16], full=[1, 2, 4, 6, 8, 16]),
        "seed": p.pick(smoke=[0, 1], reduced=[0, 1, 2], full=[0, 1, 2, 3, 4]),
    }
    return Grid.from_spec(
        {"name": f"chapter6-seeds-{p.name}", "base": base, "blocks": [block]}
    )


GRIDS = {"chapter6-seeds": chapter6_seeds}


def get_grid(name_or_path: str | os.PathLike, profile=None) -> Grid:
    """A built-in grid (:data:`GRIDS`, sized by ``profile``) or a spec file's grid."""
    if str(name_or_path) in GRIDS:
        return GRIDS[str(name_or_path)](profile)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"unknown grid {str(name_or_path)!r}: not a built-in grid "
            f"({', '.join(GRIDS)}) and no such spec file"
        )
    return Grid.from_file(path)
