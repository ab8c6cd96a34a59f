"""Build the kernels ahead of time: ``python -m device.kernels.aot [--dir D] [--force] [--status]``.

Compiles every kernel in :data:`device.kernels.abi.EXPORTS` (the same ``@njit`` functions the JIT
runs, bodies untouched) into one CPython extension module with ``numba.pycc``. The module needs
only numpy at run time: no numba, no llvmlite, no LLVM in the device process.

numba.pycc has been *pending deprecation* since numba 0.57 ("replacement technology is being
developed"); in the pinned 0.68 it is present, works, and warns only
``NumbaPendingDeprecationWarning`` on import, which the build records and silences. When it goes,
the JIT path stays (``EDGELOOP_KERNELS=jit``) and the build fails with that reason.

Building needs, besides the pinned numba/llvmlite: setuptools (distutils for the link step), a C
compiler and the Python headers (Debian, Raspberry Pi OS: ``apt-get install gcc python3-dev``).
A module is built for the CPU family (generic code, no host-specific instructions), this numpy
and this Python; build it on the device (or one of the same OS and architecture). Peak memory
while building is numba's: build before the agent starts, as ``scripts/setup`` does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.kernels.abi import EXPORTS, Export
from device.kernels.loader import fingerprint, kernel_dir, load, module_name, module_path

logger = logging.getLogger(__name__)


def _wrapper(name: str, ex: Export) -> Callable[..., Any]:
    """A plain function ``name(a0, ..., an)`` calling the kernel: numba compiles the call with
    the kernel's own options (fastmath, inlining), as the JIT does when the wrapper calls it."""
    kernel = getattr(importlib.import_module(ex.module), ex.function)
    params = ", ".join(f"a{i}" for i in range(len(ex.args)))
    ns: dict[str, Any] = {"_kernel": kernel}
    exec(f"def {name}({params}):\n    return _kernel({params})\n", ns)  # a fixed template, no input
    return ns[name]


def build(directory: Path | None = None, *, force: bool = False) -> Path:
    """Build the AOT module into ``directory`` (default :func:`kernel_dir`) unless one built from
    these sources is there already; returns its path. Atomic: a reader never sees half a file."""
    d = directory if directory is not None else kernel_dir()
    fp = fingerprint()
    target = module_path(d, fp)
    if target.exists() and not force:
        logger.info("kernels.aot_up_to_date", extra={"path": str(target)})
        return target
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numba
        from numba.pycc import CC

        cc = CC(module_name(fp))
        for name, ex in EXPORTS.items():
            cc.export(name, ex.signature())(_wrapper(name, ex))
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=d))
        try:
            cc.output_dir = str(tmp)
            cc.compile()
            os.replace(tmp / cc.output_file, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for w in caught:
        logger.info("kernels.aot_build_warning", extra={
            "category": w.category.__name__, "text": str(w.message).splitlines()[0]})
    import numpy as np

    manifest = {"module": target.name, "fingerprint": fp, "numba": numba.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0],
                "exports": {n: ex.signature() for n, ex in EXPORTS.items()},
                "built_s": round(time.monotonic() - t0, 1)}  # fmt: skip
    side = target.with_name(module_name(fp) + ".json")
    side.write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("kernels.aot_built", extra={"path": str(target), "seconds": manifest["built_s"]})
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m device.kernels.aot", description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, help="kernel directory (default: EDGELOOP_KERNEL_DIR or the user cache)")
    ap.add_argument("--force", action="store_true", help="rebuild even if an up-to-date module exists")
    ap.add_argument("--status", action="store_true", help="print which kernels a process would run, build nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    if args.status:
        k = load(directory=args.dir)
        print(json.dumps(k.info()))  # noqa: T201 - entry point
        return 0
    d = args.dir if args.dir is not None else kernel_dir()
    target = module_path(d, fingerprint())
    if args.force or not target.exists():
        print(f"kernels: compiling the ahead-of-time module into {d} (numba.pycc and the C compiler; "  # noqa: T201
              "about 15 s here, minutes on a Raspberry Pi)", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            target = build(d, force=args.force)
        except Exception as exc:  # noqa: BLE001 - any build failure is reported the same way
            print(f"kernels: the build failed: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
            return 1
        print(f"kernels: built {target.name} in {time.monotonic() - t0:.0f} s", file=sys.stderr)  # noqa: T201
    print(target)  # noqa: T201 - entry point
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
