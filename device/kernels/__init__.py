"""Numba kernels: one module per kernel family, private ``_kernel`` functions, thin wrappers
elsewhere (:mod:`device.detect`, :mod:`device.baseline`, :mod:`device.features`)."""
