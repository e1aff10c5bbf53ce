"""plumbline.core.skops_compat: canonical skops archives, and the skops internals it relies on.

If a skops upgrade changes how archives are laid out, these fail first and name what changed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from support.paths import REPO

from plumbline.core import skops_compat
from plumbline.model.artifact import TRUSTED_TYPES

FIT_AND_DUMP = """
import sys
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from plumbline.core import skops_compat
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 4)); y = (x[:, 0] + rng.normal(size=300) > 0).astype(int)
model = HistGradientBoostingClassifier(max_iter=20, early_stopping=False, random_state=0).fit(x, y)
sys.stdout.write(skops_compat.dumps(model).hex())
"""


def _members(data: bytes) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.infolist()


def test_the_tested_skops_is_installed_and_pinned() -> None:
    assert skops.__version__ == skops_compat.TESTED_SKOPS, (
        f"skops {skops.__version__} is installed but plumbline.core.skops_compat was tested with "
        f"{skops_compat.TESTED_SKOPS}: rerun these tests, check the archive layout, then bump it"
    )
    lock = (REPO / "requirements.lock").read_text().splitlines()
    assert f"skops=={skops_compat.TESTED_SKOPS}" in lock


def test_raw_skops_layout_is_what_canonicalize_expects() -> None:
    """schema.json plus members named by object id, referenced by 'file' keys and __id__ ints."""
    model = StandardScaler().fit(np.arange(12, dtype=float).reshape(6, 2))
    raw = sio.dumps(model)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        schema = json.loads(z.read("schema.json"))
    assert "schema.json" in names
    npy = [n for n in names if n.endswith(".npy")]
    assert npy, f"skops no longer stores arrays as .npy members: {names}"
    text = json.dumps(schema)
    for name in npy:
        assert f'"file": "{name}"' in text, f"member {name} is not referenced by a 'file' key"
    assert '"__id__": ' in text, "schema.json no longer carries __id__ references"
    # The reason this module exists: raw dumps carry the wall-clock time.
    assert all(info.date_time != skops_compat.FIXED_TIME for info in _members(raw))


def test_canonical_file_loads_with_the_trusted_list_and_scores_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b", "c"], size=200)})
    y = (frame.x > 0).astype(int)
    onehot = OneHotEncoder(handle_unknown="ignore").fit(frame[["c"]])
    features = np.hstack([frame[["x"]].to_numpy(), onehot.transform(frame[["c"]]).toarray()])
    for estimator in (
        LogisticRegression().fit(features, y),
        HistGradientBoostingClassifier(max_iter=10, early_stopping=False).fit(features, y),
    ):
        model = Pipeline([("classifier", estimator)])
        path = tmp_path / "model.skops"
        skops_compat.dump(model, path)
        assert sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)) == []
        loaded = sio.load(path, trusted=TRUSTED_TYPES)
        np.testing.assert_array_equal(loaded.predict_proba(features), model.predict_proba(features))
        assert skops_compat.dumps(loaded) == path.read_bytes()  # a round trip is a fixed point


def test_an_unreferenced_member_is_refused() -> None:
    raw = sio.dumps(StandardScaler().fit(np.ones((3, 2))))
    buffer = io.BytesIO(raw)
    with zipfile.ZipFile(buffer, "a") as z:
        z.writestr("stray.bin", b"x")
    try:
        skops_compat.canonicalize(buffer.getvalue())
    except skops_compat.SkopsLayoutChanged as err:
        assert "stray.bin" in str(err)
    else:
        raise AssertionError("an archive member schema.json does not reference was accepted")


def test_skops_reads_its_default_estimator_list_where_skops_compat_replaces_it() -> None:
    import inspect

    import skops.io._general as general
    import skops.io._trusted_types as trusted_types

    source = inspect.getsource(trusted_types)
    assert "from sklearn.utils import all_estimators" in source, (
        "skops no longer takes all_estimators from sklearn.utils, where skops_compat answers it"
    )
    assert "for _, estimator_class in all_estimators()" in source, (
        "skops no longer builds SKLEARN_ESTIMATOR_TYPE_NAMES from all_estimators()"
    )
    assert trusted_types.all_estimators.__module__ == "sklearn.utils.discovery"  # restored
    assert "SKLEARN_ESTIMATOR_TYPE_NAMES + " in inspect.getsource(general.ObjectNode.__init__), (
        "skops' ObjectNode no longer reads the default list as `NAMES + internal types`"
    )
    assert general.SKLEARN_ESTIMATOR_TYPE_NAMES is trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES
    assert type(general.SKLEARN_ESTIMATOR_TYPE_NAMES).__name__ == "_DefaultEstimatorNames"
    assert skops_compat.sio is sio


def _frame_and_transformer() -> tuple[pd.DataFrame, pd.Series, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=200),
            "b": np.where(rng.random(200) < 0.1, np.nan, rng.normal(size=200)),
            "c": rng.choice(["x", "y"], 200),
        }
    )
    y = (frame["a"] + rng.normal(size=200) > 0).astype(int)
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    transformer = ColumnTransformer(
        [("num", numeric, ["a", "b"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["c"])]
    ).fit(frame)
    return frame, y, transformer


def test_the_trusted_list_alone_loads_both_estimators_and_the_imputer(tmp_path: Path) -> None:
    """plumbline's loads trust TRUSTED_TYPES only (no default estimators), so it must name
    every type our models hold; anything else is refused."""
    from sklearn.ensemble import RandomForestClassifier

    from plumbline.model.artifact import ModelLoadError, assemble, build_estimator, load_model
    from plumbline.model.settings import TrainConfig

    frame, y, transformer = _frame_and_transformer()
    x = transformer.transform(frame)
    for estimator, calibration in (
        ("logistic_regression", "none"),
        ("hist_gradient_boosting", "none"),
        ("logistic_regression", "sigmoid"),
        ("hist_gradient_boosting", "isotonic"),
    ):
        config = TrainConfig(estimator=estimator, calibration=calibration)
        model = assemble(transformer, build_estimator(config).fit(x, y))
        path = tmp_path / f"{estimator}-{calibration}.skops"
        skops_compat.dump(model, path)
        assert "sklearn.pipeline.Pipeline" in skops_compat.untrusted_types(path)
        loaded = load_model(path)
        assert np.allclose(loaded.predict_proba(frame), model.predict_proba(frame))

    forest = assemble(transformer, RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y))
    skops_compat.dump(forest, tmp_path / "forest.skops")
    with pytest.raises(ModelLoadError, match="RandomForestClassifier"):
        load_model(tmp_path / "forest.skops")


def test_outside_plumbline_s_loads_skops_keeps_its_default_estimator_list(
    tmp_path: Path,
) -> None:
    """Other code in the process (a user's own MLflow logging) sees skops' usual defaults."""
    frame, y, transformer = _frame_and_transformer()
    model = assemble_lr(transformer, frame, y)
    path = tmp_path / "model.skops"
    skops_compat.dump(model, path)
    assert sio.get_untrusted_types(file=path) == ["numpy.dtype"]  # skops never trusts it
    with skops_compat.explicit_trust():
        assert "sklearn.pipeline.Pipeline" in sio.get_untrusted_types(file=path)
    assert sio.get_untrusted_types(file=path) == ["numpy.dtype"]  # skops never trusts it


def assemble_lr(transformer: Any, frame: pd.DataFrame, y: pd.Series) -> Pipeline:
    from plumbline.model.artifact import assemble

    return assemble(transformer, LogisticRegression().fit(transformer.transform(frame), y))
