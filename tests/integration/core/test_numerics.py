"""A process that imports plumbline before numpy runs OpenBLAS's pinned kernels, so a model
fitted here has the bytes of one fitted on any other x86-64 machine with AVX2."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from plumbline.core.numerics import PINNED_CORETYPE, cpu_flags

PROBE = (
    "import plumbline, numpy, scipy.linalg, threadpoolctl, json; "
    "print(json.dumps([i.get('architecture') for i in threadpoolctl.threadpool_info() "
    "if i['internal_api'] == 'openblas']))"
)


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not {"avx2", "fma"} <= cpu_flags(),
    reason="the kernels are pinned only on x86-64 CPUs with AVX2 and FMA",
)
def test_numpy_and_scipy_load_the_pinned_openblas_kernels() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    architectures = json.loads(out.stdout)
    assert len(architectures) == 2, architectures  # numpy's OpenBLAS and scipy's
    assert {a.lower() for a in architectures} == {PINNED_CORETYPE.lower()}
