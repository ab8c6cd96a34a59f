"""Which kernels run: the ahead-of-time module when present and up to date, the JIT otherwise.

The one entry point is :func:`kernels`; the wrappers (:mod:`device.detect.engine`,
:mod:`device.features.resting_hr`, :mod:`device.baseline`, the classifier) call what it returns.
The AOT module (built by :mod:`device.kernels.aot`, ``scripts/setup`` builds it) needs neither
numba nor LLVM at run time, only numpy: the device process stays small and starts fast.

Chosen by ``EDGELOOP_KERNELS``:

- ``auto`` (default): the AOT module if one was built from exactly these kernel sources for this
  numpy and Python; the JIT (numba) otherwise, with the reason in the log and the agent's report.
- ``aot``: the AOT module, built now into the kernel directory if missing (in a subprocess, so
  numba never loads here); an error if it cannot be built.
- ``jit``: numba's JIT (``@njit`` dispatchers, compiled or loaded from numba's cache).

``NUMBA_DISABLE_JIT=1`` with ``auto`` runs the kernels' plain-Python bodies (path ``python``).
The directory is ``EDGELOOP_KERNEL_DIR``, else ``$XDG_CACHE_HOME/edgeloop/kernels`` (default
``~/.cache/edgeloop/kernels``); a module's name carries the fingerprint of what it was built
from (:func:`fingerprint`), so a stale module is never loaded, and checkouts can share the cache.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from device.kernels.abi import EXPORTS, EXTRA_SOURCES, NOT_SOURCES, Export

logger = logging.getLogger(__name__)
MODES = ("auto", "aot", "jit")
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the device package
_PREFIX = "edgeloop_kernels_"


class KernelsUnavailable(RuntimeError):
    """The kernels asked for (``EDGELOOP_KERNELS``) cannot be loaded."""


@dataclass(frozen=True)
class Kernels:
    """The kernels in use (names as in :data:`device.kernels.abi.EXPORTS`) and where from."""

    path: str  # "aot" | "jit" | "python"
    reason: str  # why this path (shown in the agent's log and report)
    module: str  # the AOT module's file ("" on the JIT paths)
    fingerprint: str  # of the kernel sources + numpy + Python (what an AOT module must match)
    process: Callable[..., Any]
    step: Callable[..., Any]  # the engine's hot path: unchecked (the engine owns its buffers)
    baseline: Callable[..., Any]
    learn: Callable[..., Any]
    decay: Callable[..., Any]
    update: Callable[..., Any]
    merge: Callable[..., Any]
    resting_hr: Callable[..., Any]
    prep: Callable[..., Any]

    def info(self) -> dict[str, str]:
        """``{path, reason, module, fingerprint}`` for logs and status reports."""
        return {"path": self.path, "reason": self.reason, "module": self.module,
                "fingerprint": self.fingerprint[:16]}  # fmt: skip


def kernel_dir() -> Path:
    """Where AOT modules are built and looked up."""
    env = os.environ.get("EDGELOOP_KERNEL_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    if not cache:
        try:
            cache = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (a bare service account): a per-user temp dir
            import tempfile

            cache = str(Path(tempfile.gettempdir()) / f"edgeloop-cache-{os.getuid()}")
    return Path(cache) / "edgeloop" / "kernels"


def source_files() -> list[Path]:
    """The files an AOT module is compiled from (:data:`device.kernels.abi.EXTRA_SOURCES` too)."""
    here = Path(__file__).resolve().parent
    skip = {(_ROOT / p).resolve() for p in NOT_SOURCES}
    files = [p.resolve() for p in here.glob("*.py") if p.resolve() not in skip]
    files += [(_ROOT / p).resolve() for p in EXTRA_SOURCES]
    return sorted(files)


def fingerprint() -> str:
    """sha256 of the kernel sources, the numpy version and the extension ABI tag."""
    h = hashlib.sha256()
    for p in source_files():
        h.update(p.relative_to(_ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(f"numpy={np.__version__}\0abi={_ext_suffix()}".encode())
    return h.hexdigest()


def _ext_suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def module_name(fp: str) -> str:
    """The AOT module's import name for fingerprint ``fp``."""
    return _PREFIX + fp[:16]


def module_path(directory: Path, fp: str) -> Path:
    """The AOT module's file for fingerprint ``fp`` in ``directory``."""
    return directory / (module_name(fp) + _ext_suffix())


def _import_aot(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a loadable extension module")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _checked(name: str, fn: Callable[..., Any], ex: Export) -> Callable[..., Any]:
    """The AOT function with its array arguments checked (a compiled function trusts the shapes
    and dtypes it is given): inputs are converted like numpy would (a C-contiguous copy of the
    declared dtype), arrays it writes must already be exactly right."""
    arrays = [(i, np.dtype(d), n, i in ex.writes) for i, d, n in ex.array_args]

    def call(*args: Any) -> Any:
        a = list(args)
        for i, dt, nd, written in arrays:
            x = a[i]
            if written:
                if not (isinstance(x, np.ndarray) and x.dtype == dt and x.ndim == nd
                        and x.flags.c_contiguous and x.flags.writeable):  # fmt: skip
                    raise TypeError(
                        f"kernel {name}: argument {i} is written in place and must be a writeable "
                        f"C-contiguous {nd}-d {dt} array, found "
                        f"{type(x).__name__} {getattr(x, 'dtype', '')} ndim={getattr(x, 'ndim', '')}"
                    )
            else:
                x = np.ascontiguousarray(x, dtype=dt)
                if x.ndim != nd:
                    raise TypeError(f"kernel {name}: argument {i} must be {nd}-d, found {x.ndim}-d")
                a[i] = x
        return fn(*a)

    call.__name__ = name
    call.__doc__ = f"AOT {ex.target} with checked array arguments."
    return call


def _from_aot(mod: ModuleType, path: Path, fp: str, reason: str) -> Kernels:
    fns = {name: getattr(mod, name) for name in EXPORTS}
    fns = {name: (f if name == "step" or not EXPORTS[name].array_args else
                  _checked(name, f, EXPORTS[name])) for name, f in fns.items()}  # fmt: skip
    return Kernels(path="aot", reason=reason, module=str(path), fingerprint=fp, **fns)


def _from_jit(fp: str, reason: str) -> Kernels:
    fns = {name: getattr(importlib.import_module(ex.module), ex.function)
           for name, ex in EXPORTS.items()}  # fmt: skip
    disabled = not hasattr(fns["process"], "py_func")  # NUMBA_DISABLE_JIT: plain functions
    return Kernels(path="python" if disabled else "jit", reason=reason, module="", fingerprint=fp,
                   **fns)  # fmt: skip


def _missing_reason(directory: Path, fp: str) -> str:
    others = sorted(p.name for p in directory.glob(_PREFIX + "*" + _ext_suffix())) if (
        directory.is_dir()) else []  # fmt: skip
    what = (f"{len(others)} module(s) there were built from other kernel sources or another "
            "numpy" if others else "none built there")  # fmt: skip
    return (f"no AOT module for these kernels ({module_name(fp)}) in {directory} ({what}); "
            "build it: python -m device.kernels.aot (scripts/setup does)")


def build_in_subprocess(directory: Path) -> None:
    """Run ``python -m device.kernels.aot --dir directory`` (numba and LLVM stay out of here)."""
    import subprocess

    logger.warning("kernels.building", extra={"dir": str(directory)})
    proc = subprocess.run([sys.executable, "-m", "device.kernels.aot", "--dir", str(directory)],
                          capture_output=True, text=True, cwd=str(_ROOT))  # fmt: skip
    if proc.returncode != 0:
        raise KernelsUnavailable(
            f"building the AOT kernel module failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}; it needs numba, setuptools and a C "
            "compiler with the Python headers, or run with EDGELOOP_KERNELS=jit"
        )


def load(mode: str | None = None, directory: Path | None = None) -> Kernels:
    """Choose and load the kernels (uncached; :func:`kernels` caches this)."""
    mode = (mode or os.environ.get("EDGELOOP_KERNELS") or "auto").strip().lower()
    if mode not in MODES:
        raise KernelsUnavailable(f"EDGELOOP_KERNELS={mode!r}: expected one of {', '.join(MODES)}")
    try:
        fp = fingerprint()
    except OSError as exc:  # an install without the kernel sources: nothing to check a module against
        if mode == "aot":
            raise KernelsUnavailable(f"cannot fingerprint the kernel sources ({exc})") from exc
        return _from_jit("", f"cannot fingerprint the kernel sources ({exc}): no AOT module is trusted")
    if mode == "jit":
        return _from_jit(fp, "EDGELOOP_KERNELS=jit")
    if mode == "auto" and os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return _from_jit(fp, "NUMBA_DISABLE_JIT is set: the kernels' plain-Python bodies")
    d = directory if directory is not None else kernel_dir()
    path = module_path(d, fp)
    if not path.exists():
        if mode == "auto":
            return _from_jit(fp, _missing_reason(d, fp))
        build_in_subprocess(d)
    try:
        mod = _import_aot(path, module_name(fp))
    except ImportError as exc:
        if mode == "aot":
            raise KernelsUnavailable(f"{path}: cannot load the AOT module: {exc}") from exc
        return _from_jit(fp, f"{path}: cannot load the AOT module ({exc}); rebuild it: "
                         "python -m device.kernels.aot --force")  # fmt: skip
    return _from_aot(mod, path, fp, f"EDGELOOP_KERNELS={mode}: compiled ahead of time")


@functools.cache
def kernels() -> Kernels:
    """The kernels this process runs (chosen once; logged as ``kernels.selected``)."""
    k = load()
    level = logging.INFO if k.path != "jit" or k.reason.startswith("EDGELOOP") else logging.WARNING
    logger.log(level, "kernels.selected",
               extra={"path": k.path, "reason": k.reason, "kernel_module": k.module})
    return k
