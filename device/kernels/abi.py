"""The kernels the device calls from Python: one table for the JIT and the ahead-of-time paths.

Each entry names an ``@njit`` kernel (``module:function``) and the types it is called with
(C-contiguous arrays, as the wrappers pass them). :mod:`device.kernels.aot` compiles the table
into one extension module; :mod:`device.kernels.loader` maps the same names to that module or to
the JIT dispatchers. This module imports neither numba nor numpy.

>>> EXPORTS["step"].signature()
'void(f8[::1], u1[::1])'
>>> EXPORTS["decay"].signature()
'UniTuple(f8, 2)(f8, f8, f8, f8)'
"""

from __future__ import annotations

from dataclasses import dataclass

#: an argument or result: (dtype code, ndim); ndim 0 is a scalar
Arg = tuple[str, int]
F8: Arg = ("f8", 0)
I8: Arg = ("i8", 0)


def arr(dtype: str, ndim: int) -> Arg:
    """A C-contiguous array argument."""
    return (dtype, ndim)


def _numba_type(a: Arg) -> str:
    dtype, ndim = a
    if ndim == 0:
        return dtype
    return f"{dtype}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


@dataclass(frozen=True)
class Export:
    """One kernel as the device calls it."""

    target: str  # "module:function" of the @njit kernel
    args: tuple[Arg, ...]
    returns: tuple[Arg, ...] = ()  # () = nothing; one = that value; more = a tuple
    writes: tuple[int, ...] = ()  # positions of the array arguments it writes in place

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def function(self) -> str:
        return self.target.split(":")[1]

    def signature(self) -> str:
        """The numba signature string (explicit types: the AOT module has no dispatch)."""
        args = ", ".join(_numba_type(a) for a in self.args)
        if not self.returns:
            ret = "void"
        elif len(self.returns) == 1:
            ret = _numba_type(self.returns[0])
        elif len(set(self.returns)) == 1:
            ret = f"UniTuple({_numba_type(self.returns[0])}, {len(self.returns)})"
        else:
            ret = f"Tuple(({', '.join(_numba_type(r) for r in self.returns)}))"
        return f"{ret}({args})"

    @property
    def array_args(self) -> tuple[tuple[int, str, int], ...]:
        """``(position, dtype code, ndim)`` of every array argument (what a caller must match)."""
        return tuple((i, d, n) for i, (d, n) in enumerate(self.args) if n > 0)


_D = "device.kernels."
#: name -> kernel; the AOT module exports these names, the loader gives them to the wrappers
EXPORTS: dict[str, Export] = {
    # the engine: cfg, metric state, engine state, ts, values, out, rows, flags
    "process": Export(_D + "deviation:_process_kernel",
                      (arr("f8", 1), arr("f8", 2), arr("f8", 1), arr("f8", 1), arr("f8", 2),
                       arr("f8", 3), arr("f8", 2), arr("u1", 1)), writes=(1, 2, 5, 6, 7)),
    "step": Export(_D + "deviation:_step_kernel", (arr("f8", 1), arr("u1", 1)), writes=(0, 1)),
    # one metric's circadian baseline: cfg, state row, hour, t (-> base, sd) and learning
    "baseline": Export(_D + "circadian:_baseline_kernel",
                       (arr("f8", 1), arr("f8", 1), I8, F8), (F8, F8)),
    "learn": Export(_D + "circadian:_learn_kernel",
                    (arr("f8", 1), arr("f8", 1), I8, F8, F8, F8, F8, F8), writes=(1,)),
    # weighted Welford statistics
    "decay": Export(_D + "welford:_decay_kernel", (F8, F8, F8, F8), (F8, F8)),
    "update": Export(_D + "welford:_update_kernel", (F8, F8, F8, F8, F8), (F8, F8, F8)),
    "merge": Export(_D + "welford:_merge_kernel", (F8,) * 6, (F8, F8, F8)),
    # features: resting heart rate; the classifier's window preparation
    "resting_hr": Export(_D + "resting:_resting_hr_kernel",
                         (arr("f8", 1), arr("f8", 1), arr("f8", 1), arr("f8", 1), I8),
                         (arr("f8", 1), arr("f8", 1))),
    "prep": Export("device.inference.prep:prep_kernel", (arr("f8", 2), F8, F8, I8),
                   (arr("f4", 2),)),
}  # fmt: skip

#: the AOT module is compiled from every module in device/kernels/ but the loader, and these
#: (paths relative to the repo root); a test checks the kernels import nothing else of the project
EXTRA_SOURCES: tuple[str, ...] = ("device/inference/prep.py",)
NOT_SOURCES: tuple[str, ...] = ("device/kernels/loader.py",)
