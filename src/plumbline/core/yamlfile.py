"""Reading YAML: params, contracts, dvc.yaml/dvc.lock, MLmodel and the monitoring configs.

The same safe loader as ``yaml.safe_load`` (same resolver, same values), on libyaml's parser
when PyYAML was built with it (every wheel is): a tenth of the pure-Python loader's time, which
every stage, CLI call and server start pays for params.yaml and the contract.
"""

from __future__ import annotations

from typing import IO, Any

import yaml

SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load``, on libyaml when there."""
    return yaml.load(stream, Loader=SafeLoader)
