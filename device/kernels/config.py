"""Numba flags and numeric tolerances shared by every kernel in :mod:`device.kernels`.

Kernels read these at import (compile) time, as in ``stumpy/config.py``. Tests may change a value,
re-import, and call :func:`reset` afterwards to restore the defaults.
"""

from __future__ import annotations

_DEFAULTS: dict[str, object] = {
    # fastmath would let LLVM reorder float sums: batch and chunked runs could then differ in the
    # last bit, which breaks the live == replay guarantee, so it stays off.
    "EDGELOOP_FASTMATH": False,
    # Smallest variance / weight treated as non-zero.
    "EDGELOOP_EPS": 1e-12,
    # Absolute tolerance the tests use when comparing a kernel with its plain-Python twin.
    "EDGELOOP_TEST_ATOL": 1e-9,
    # Relative tolerance for the same comparison.
    "EDGELOOP_TEST_RTOL": 1e-7,
}

EDGELOOP_FASTMATH: bool = False
EDGELOOP_EPS: float = 1e-12
EDGELOOP_TEST_ATOL: float = 1e-9
EDGELOOP_TEST_RTOL: float = 1e-7


def reset() -> None:
    """Restore every flag and tolerance in this module to its default."""
    globals().update(_DEFAULTS)
