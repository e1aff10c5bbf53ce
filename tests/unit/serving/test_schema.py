"""Integer fields take integral numbers (JSON Schema's integers), and nothing else that is not an
integer; the published schema says integer, so what it allows is accepted."""

from __future__ import annotations

import json

import pytest
from support.paths import REPO

from plumbline.core.contract import Contract
from plumbline.monitoring.settings import load_params
from plumbline.serving.schema import RequestInvalid, RequestValidator
from plumbline.serving.scorer import smoke_rows


@pytest.fixture(scope="module")
def validator(contract: Contract) -> RequestValidator:
    features = contract.feature_columns(load_params(REPO / "params.yaml").featurize.exclude_columns)
    return RequestValidator(contract, features, "reject", 10)


def _record(validator: RequestValidator, contract: Contract, **changes: object) -> bytes:
    row = smoke_rows(contract, validator.features)[0]
    return json.dumps({**dict(zip(validator.features, row, strict=True)), **changes}).encode()


def test_integral_numbers_are_integers(validator: RequestValidator, contract: Contract) -> None:
    i = validator.features.index("campaign")
    rows, single = validator.parse(_record(validator, contract, campaign=599.0))
    assert single and rows[0][i] == 599 and type(rows[0][i]) is int
    body = (
        b"["
        + _record(validator, contract, campaign=3.0)
        + b","
        + _record(validator, contract)
        + b"]"
    )
    rows, single = validator.parse(body)
    assert not single and rows[0][i] == 3 and type(rows[0][i]) is int


@pytest.mark.parametrize(
    ("value", "kind"),
    [(2.5, "int_type"), ("3", "int_type"), (True, "int_type"), (5000.0, "less_than_equal")],
)
def test_what_is_not_an_integer_is_refused(
    validator: RequestValidator, contract: Contract, value: object, kind: str
) -> None:
    with pytest.raises(RequestInvalid) as err:
        validator.parse(_record(validator, contract, campaign=value))
    assert err.value.fields == {"campaign"}
    assert [e["type"] for e in err.value.errors] == [kind]


def test_the_schema_says_integer(validator: RequestValidator) -> None:
    _, components = validator.openapi_request_schema()
    record = next(iter(components.values()))
    assert record["properties"]["campaign"]["type"] == "integer"
