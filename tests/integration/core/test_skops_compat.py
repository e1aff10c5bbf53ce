"""plumbline.core.skops_compat: canonical skops archives, and the skops internals it relies on.

If a skops upgrade changes how archives are laid out, these fail first and name what changed.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

from plumbline.core import skops_compat

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


def test_same_object_gives_the_same_bytes_in_separate_processes() -> None:
    """Object ids and hash seeds differ between processes; the bytes must not."""
    dumps = [
        subprocess.run(
            [sys.executable, "-c", FIT_AND_DUMP], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert dumps[0] == dumps[1]
    members = _members(bytes.fromhex(dumps[0]))
    assert members[0].filename == "schema.json"
    assert all(m.date_time == skops_compat.FIXED_TIME for m in members)
    names = [m.filename for m in members[1:]]
    assert names == sorted(names)


def test_plumbline_loads_a_model_without_skops_estimator_discovery() -> None:
    """In a fresh process, plumbline's load trusts its own list and never runs skops'
    all-estimators discovery (which imports every scikit-learn module)."""
    script = """
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from plumbline.core import skops_compat
from plumbline.model.artifact import TRUSTED_TYPES
x = np.arange(20.0).reshape(10, 2); y = np.array([0, 1] * 5)
data = skops_compat.dumps(LogisticRegression().fit(x, y))
with skops_compat.explicit_trust():
    skops_compat.sio.loads(data, trusted=TRUSTED_TYPES)
assert "sklearn.gaussian_process" not in sys.modules, "all_estimators ran"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
