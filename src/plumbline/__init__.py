"""Plumbline: a reproducible path from raw tabular data to a monitored prediction service."""

from plumbline.core.numerics import pin_blas_kernels

# Before anything loads numpy: the BLAS kernels decide the fitted model's last bits.
pin_blas_kernels()

__version__ = "0.1.0"
