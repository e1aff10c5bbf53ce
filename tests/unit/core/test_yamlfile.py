"""The project's YAML loader: the values of ``yaml.safe_load``, on libyaml, and as safe."""

from __future__ import annotations

import pytest
import yaml
from support.paths import REPO

from plumbline.core import yamlfile


def test_it_runs_on_libyaml() -> None:
    # requirements.lock pins a PyYAML wheel built with libyaml; a build without it would
    # silently fall back to the pure-Python loader, ten times slower on every start.
    assert yaml.__with_libyaml__
    assert yamlfile.SafeLoader is yaml.CSafeLoader


@pytest.mark.parametrize(
    "rel",
    ["params.yaml", "dvc.yaml", "dvc.lock", "contracts/bank_marketing.yaml", "docker-compose.yml"],
)
def test_values_equal_pyyamls_safe_load(rel: str) -> None:
    text = (REPO / rel).read_text()
    assert yamlfile.safe_load(text) == yaml.safe_load(text)


def test_scalars_resolve_as_the_safe_loader_does() -> None:
    text = "a: 1e-3\nb: 0.5\nc: yes\nd: null\ne: 2010-03-01\nf: '007'\ng: [1, two]\n"
    assert yamlfile.safe_load(text) == yaml.safe_load(text)


def test_python_tags_are_refused() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        yamlfile.safe_load("!!python/object/apply:os.system ['true']")
