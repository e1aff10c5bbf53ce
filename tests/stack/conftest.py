"""The images every stack test runs, built once per session by deploy/podman/build-images.sh."""

from __future__ import annotations

import subprocess
import time

import pytest
from support.stack import BUILD_IMAGES, TAG, Engine, engine_env


@pytest.fixture(scope="session")
def images() -> dict[str, int]:
    """The project's images, built from its Dockerfiles, with their sizes in bytes."""
    started = time.monotonic()
    built = subprocess.run(
        ["bash", str(BUILD_IMAGES)],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    print(f"images built in {time.monotonic() - started:.0f} s\n{built.stdout}{built.stderr}")
    podman = Engine("images").podman
    return {
        name: int(podman("image", "inspect", "--format", "{{.Size}}", f"{name}:{TAG}"))
        for name in ("plumbline-pipeline", "plumbline-serve")
    }
