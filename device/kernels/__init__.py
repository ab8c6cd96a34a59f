"""Numba kernels: one module per kernel family, private ``_kernel`` functions, thin wrappers
elsewhere (:mod:`device.detect`, :mod:`device.baseline`, :mod:`device.features`).

The wrappers get the compiled kernels from :func:`device.kernels.loader.kernels`: the module
compiled ahead of time (:mod:`device.kernels.aot`, the table in :mod:`device.kernels.abi`) when
it is built and up to date, numba's JIT otherwise."""
