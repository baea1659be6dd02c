"""The GPU machine's view of Python's packages, for the CPU dry run of the GPU calls.

``tools/gpu_dryrun.py`` puts this folder first on ``PYTHONPATH`` of every process a call
starts (the launcher, the executor, the Jupyter kernels), with:

* ``BETAVAE_DRY_RUN_ABSENT``: import names of installed packages the machine does not
  have (jupytext, sphinx, docutils, nbmake, ray, ruff, ...). Code of this project
  (``__main__``, a notebook cell, ``betavae_lib``, ``tools``) that imports one gets the
  ``ModuleNotFoundError`` it would get there; other packages' optional imports are
  left alone, since the machine's copies of them decide those.
* ``BETAVAE_DRY_RUN_STACK``: import names the call installs from ``.whl`` (the Jupyter
  stack, pytorch-fid); refused to everyone until ``.gpu/site/.installed`` exists under
  ``BETAVAE_DRY_RUN_ROOT``.
* ``BETAVAE_DRY_RUN_LAYOUT=grouped``: ``betavae_lib.stacked.VAEEnsemble`` takes the
  grouped layout (the CUDA default) where ``"auto"`` is asked for, so that the CPU runs
  the code path the GPU will.

Nothing happens unless ``BETAVAE_DRY_RUN=1``.
"""

import importlib.abc
import importlib.machinery
import os
import sys


def _names(var: str) -> frozenset:
    return frozenset(n for n in os.environ.get(var, "").split(",") if n)


PROJECT = frozenset(
    {
        "__main__",
        "betavae_lib",
        "tools",
        "benchmarks",
        "gpu_bundle",
        "gpu_device",
        "gpu_dryrun",
        "execute_book",
        "execution_page",
    }
)


def _importer() -> str:
    """The module whose code runs the import statement."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        file = frame.f_code.co_filename
        if not (
            file.startswith("<frozen importlib")
            or name.startswith("importlib")
            or file == __file__
        ):
            return name
        frame = frame.f_back
    return ""


class DeviceView(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.absent = _names("BETAVAE_DRY_RUN_ABSENT")
        self.stack = _names("BETAVAE_DRY_RUN_STACK")
        root = os.environ.get("BETAVAE_DRY_RUN_ROOT", "")
        self.marker = os.path.join(root, ".gpu", "site", ".installed")
        self.grouped = os.environ.get("BETAVAE_DRY_RUN_LAYOUT") == "grouped"

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.stack and not os.path.isfile(self.marker):
            raise ModuleNotFoundError(
                f"No module named {top!r} on the GPU machine before the call installs "
                f"the wheels of .whl (dry run)",
                name=name,
            )
        if top in self.absent and "." not in name:
            importer = _importer().partition(".")[0]
            if importer in PROJECT or importer.startswith("_ipython"):
                raise ModuleNotFoundError(
                    f"No module named {top!r} on the GPU machine (dry run)", name=name
                )
        if self.grouped and name == "betavae_lib.stacked":
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None:
                _patch_layout(spec)
            return spec
        return None


def _patch_layout(spec) -> None:
    loader = spec.loader
    original = loader.exec_module

    def exec_module(module):
        original(module)
        cls = module.VAEEnsemble
        init = cls.__init__

        def grouped_init(self, *args, layout="auto", **kwargs):
            chosen = "grouped" if layout == "auto" else layout
            return init(self, *args, layout=chosen, **kwargs)

        cls.__init__ = grouped_init

    loader.exec_module = exec_module


if os.environ.get("BETAVAE_DRY_RUN") == "1":
    sys.meta_path.insert(0, DeviceView())
