"""The request and response schema of ``POST /predict``, derived from the data contract.

A request body is one record (a JSON object) or a list of up to ``serve.max_records`` records.
Records are validated by :meth:`plumbline.core.contract.Contract.record_model` over the model's
feature columns, the same contract the pipeline validates its data with: strict numbers, the
contract's ranges, and its categories (unless ``serve.unknown_category`` is ``allow``).
Unknown keys are ignored, so a full row of the source (with ``duration`` and ``y``) is
accepted.

Anything wrong becomes a :class:`RequestInvalid` with one entry per problem, each naming the
field (the contract column), the record's position for lists, the reason and Pydantic's error
type; the server answers it with 422.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from plumbline.core.contract import Contract

MAX_REPORTED_ERRORS = 50


class Contribution(BaseModel):
    feature: str = Field(description="A raw contract feature")
    value: Any = Field(description="The record's value of the feature")
    contribution: float = Field(description="Its additive share of the log-odds")


class Explanation(BaseModel):
    """``base + sum(contributions) + other`` is the model's log-odds for the record."""

    base: float = Field(description="Log-odds of the baseline (the training average)")
    contributions: list[Contribution] = Field(description="Largest |contribution| first")
    other: float = Field(description="The other features' contributions, summed")
    space: Literal["log_odds"]


class Prediction(BaseModel):
    """The answer for one record."""

    model_config = ConfigDict(protected_namespaces=())

    probability: float = Field(description="Probability of the positive class")
    label: Literal[0, 1] = Field(description="1 when probability >= the configured threshold")
    model_name: str
    model_version: str = Field(
        description="The registry version (or local-<hash>) that produced this prediction"
    )
    request_id: str = Field(description="Also in the X-Request-ID response header")
    explanation: Explanation | None = Field(default=None, description="With ?explain=K only")


class ReadyBody(BaseModel):
    """The answer of GET /ready."""

    model_config = ConfigDict(protected_namespaces=())

    ready: bool
    model: dict[str, Any] | None = Field(description="What the first worker serves")
    workers: int = Field(description="Scoring workers configured")
    workers_ready: int = Field(description="Scoring workers serving a smoke-checked model")
    error: str | None = Field(default=None, description="Why not ready, when it is not")


class ErrorItem(BaseModel):
    field: str = Field(description="Contract column at fault, or 'body' / 'records'")
    record: int | None = Field(default=None, description="Position in a list of records")
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorItem] | str
    errors_total: int | None = None


class RequestInvalid(Exception):
    def __init__(self, errors: list[dict[str, Any]], total: int) -> None:
        super().__init__(f"{total} validation error(s)")
        self.errors = errors
        self.total = total

    @property
    def fields(self) -> set[str]:
        return {str(e["field"]) for e in self.errors}

    def body(self) -> dict[str, Any]:
        return {"detail": self.errors, "errors_total": self.total}


class RequestValidator:
    """Turns a request body into rows (tuples in ``features`` order), or RequestInvalid."""

    def __init__(
        self,
        contract: Contract,
        features: Sequence[str],
        unknown_category: Literal["reject", "allow"],
        max_records: int,
    ) -> None:
        self.features = list(features)
        self.max_records = max_records
        # Two equal models: the first checks integers strictly in Rust only; the second also
        # takes integral numbers (599.0) as JSON Schema does, at a Python call per integer
        # field, so it is only used for a body the first refused for exactly that.
        self.record = contract.record_model(self.features, unknown_category=unknown_category)
        self.fast_record = contract.record_model(
            self.features, unknown_category=unknown_category, integral_numbers=False
        )
        self.records = _many(self.record, max_records)
        self.fast_records = _many(self.fast_record, max_records)

    def parse(self, body: bytes) -> tuple[list[tuple[Any, ...]], bool]:
        """(rows, single): single is True when the body was one record, not a list."""
        try:
            return self._parse(body, fast=True)
        except ValidationError as err:
            if not _integral_numbers_refused(err):
                raise _invalid(err) from None
        try:
            return self._parse(body, fast=False)
        except ValidationError as err:
            raise _invalid(err) from None

    def _parse(self, body: bytes, fast: bool) -> tuple[list[tuple[Any, ...]], bool]:
        if body.lstrip()[:1] == b"[":
            records = (self.fast_records if fast else self.records).validate_json(body)
            return [tuple(r.__dict__.values()) for r in records], False
        record = (self.fast_record if fast else self.record).model_validate_json(body)
        return [tuple(record.__dict__.values())], True

    def openapi_request_schema(
        self, ref_prefix: str = "#/components/schemas/"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(body schema, component schemas) for the OpenAPI document."""
        name = self.record.__name__
        record_schema = self.record.model_json_schema(
            by_alias=True, ref_template=ref_prefix + "{model}"
        )
        ref = {"$ref": ref_prefix + name}
        body = {
            "anyOf": [
                ref,
                {"type": "array", "items": ref, "minItems": 1, "maxItems": self.max_records},
            ],
            "title": "One record or a list of records",
        }
        return body, {name: record_schema}


def _many(record: type[BaseModel], max_records: int) -> TypeAdapter[list[Any]]:
    many: Any = Annotated[list[record], Field(min_length=1, max_length=max_records)]  # type: ignore[valid-type]
    return TypeAdapter(many)


def _integral_numbers_refused(err: ValidationError) -> bool:
    return any(
        e["type"] == "int_type" and isinstance(e.get("input"), float) and e["input"].is_integer()
        for e in err.errors(include_url=False, include_context=False)
    )


def _invalid(err: ValidationError) -> RequestInvalid:
    raw = err.errors(include_url=False, include_input=False, include_context=False)
    items: list[dict[str, Any]] = []
    for e in raw[:MAX_REPORTED_ERRORS]:
        loc = list(e["loc"])
        record = loc[0] if loc and isinstance(loc[0], int) else None
        names = [p for p in loc if isinstance(p, str)]
        if e["type"] == "json_invalid":
            field = "body"
        elif e["type"] in ("too_long", "too_short") and not names:
            field = "records"
        elif names:
            field = names[-1]
        else:
            field = "body"
        items.append(
            {
                "field": field,
                "record": record,
                "loc": ["body", *loc],
                "msg": e["msg"],
                "type": e["type"],
            }
        )
    return RequestInvalid(items, len(raw))
