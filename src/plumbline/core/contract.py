"""The data contract: one description of the columns that every layer derives its checks from.

The contract file (YAML, named by ``data.contract`` in params.yaml) lists each column with its
type, nullability, range and allowed categories, and names the target. From it come:

* the Arrow schema that ingest writes (:meth:`Contract.arrow_schema`),
* type coercion of raw source values with per-cell error capture (:meth:`Contract.coerce`),
* the Great Expectations suite that validate runs (:meth:`Contract.expectation_suite`),
* the Pydantic record model that online prediction validates requests with
  (:meth:`Contract.record_model`).
"""

from __future__ import annotations

import json
import keyword
import re
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from plumbline.core import yamlfile
from plumbline.core.errors import PlumblineError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

ColumnType = Literal["integer", "float", "category", "string"]

# Bookkeeping columns that travel with the rows between stages.
SOURCE_ROW = "_source_row"  # position of the row in the source, in source order
TYPE_ERRORS = "_type_errors"  # JSON {column: original value} for cells that failed type coercion
REASONS = "_quarantine_reasons"  # list of failed checks, in the quarantine file only

_ARROW_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "category": pa.string(),
    "string": pa.string(),
}


class ContractError(PlumblineError):
    """The contract file is invalid, or data does not fit its shape (e.g. a missing column)."""


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        numeric = self.type in ("integer", "float")
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply only to integer and float columns")
        if self.type != "category" and self.categories is not None:
            raise ValueError("categories apply only to category columns")
        if self.type == "category" and not self.categories:
            raise ValueError("a category column needs a non-empty 'categories' list")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in ("integer", "float")


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    positive: str | int | bool = Field(description="The label value of the positive class")


class SliceSpec(BaseModel):
    """A column to break metrics down by (fairness), numbers binned into ``[a, b)`` bands."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    bins: list[float] | None = Field(
        default=None, description="Increasing edges; a value v is in band [e_i, e_i+1)"
    )

    @model_validator(mode="after")
    def _increasing(self) -> SliceSpec:
        if self.bins is not None and (
            len(self.bins) < 2 or any(b <= a for a, b in pairwise(self.bins))
        ):
            raise ValueError("bins needs at least two strictly increasing edges")
        return self


class UseSpec(BaseModel):
    """The human part of the model card: what the model is for, and what it is not for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intended: str
    out_of_scope: str
    limitations: list[str] = Field(default_factory=list)


class Contract(BaseModel):
    """A tabular dataset with a binary target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    target: TargetSpec
    rows_time_ordered: bool = Field(
        description="Source rows are in time order (split by position, never shuffle)"
    )
    time_column: str | None = Field(
        default=None, description="Sort by this column before splitting, if given"
    )
    null_tokens: list[str] = Field(default_factory=lambda: [""])
    columns: dict[str, ColumnSpec]
    slices: dict[str, SliceSpec] = Field(default_factory=dict)
    use: UseSpec | None = None

    @model_validator(mode="after")
    def _target_known(self) -> Contract:
        if self.target.column not in self.columns:
            raise ValueError(f"target.column {self.target.column!r} is not among the columns")
        spec = self.columns[self.target.column]
        if spec.type == "category" and _as_text(self.target.positive) not in (
            spec.categories or []
        ):
            raise ValueError(
                f"target.positive {self.target.positive!r} is not a category of "
                f"{self.target.column!r}"
            )
        if self.time_column is not None and self.time_column not in self.columns:
            raise ValueError(f"time_column {self.time_column!r} is not among the columns")
        for name, sl in self.slices.items():
            if sl.column not in self.columns:
                raise ValueError(f"slices.{name}: column {sl.column!r} is not among the columns")
            if sl.bins is not None and not self.columns[sl.column].is_numeric:
                raise ValueError(f"slices.{name}: bins apply only to integer and float columns")
        return self

    # --- column roles ---------------------------------------------------------------------

    def feature_columns(self, exclude: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Model inputs, in contract order: every column but the target, excluded ones and text."""
        unknown = sorted(set(exclude) - set(self.columns))
        if unknown:
            raise ContractError(f"excluded columns are not in contract {self.name!r}: {unknown}")
        return [
            name
            for name, spec in self.columns.items()
            if name != self.target.column and name not in exclude and spec.type != "string"
        ]

    def numeric_columns(self, columns: list[str]) -> list[str]:
        return [c for c in columns if self.columns[c].is_numeric]

    def categorical_columns(self, columns: list[str]) -> list[str]:
        return [c for c in columns if self.columns[c].type == "category"]

    def encode_target(self, values: pd.Series) -> np.ndarray:
        """1 for the positive label, 0 otherwise."""
        positive: Any = self.target.positive
        if self.columns[self.target.column].type == "category":
            positive = _as_text(positive)
        return (values == positive).to_numpy(dtype=np.int64)

    # --- Arrow ----------------------------------------------------------------------------

    def arrow_schema(self, with_bookkeeping: bool = True) -> pa.Schema:
        fields = [
            pa.field(name, _ARROW_TYPES[spec.type], nullable=True)
            for name, spec in self.columns.items()
        ]
        if with_bookkeeping:
            fields += [
                pa.field(SOURCE_ROW, pa.int64(), nullable=False),
                pa.field(TYPE_ERRORS, pa.string(), nullable=True),
            ]
        return pa.schema(fields, metadata={"plumbline.contract": self.name})

    # --- coercion -------------------------------------------------------------------------

    def coerce(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Cast raw source values to the contract types, row for row.

        A cell that cannot be read as its column's type becomes null, and its original value
        is kept in ``_type_errors`` so that validate can quarantine the row with the reason.
        Columns the contract does not name are dropped; a missing contract column is an error.
        """
        missing = [c for c in self.columns if c not in raw.columns]
        if missing:
            raise ContractError(
                f"source lacks columns required by contract {self.name!r}: {missing}"
            )
        n = len(raw)
        out: dict[str, Any] = {}
        errors: dict[int, dict[str, str]] = {}
        null_tokens = set(self.null_tokens)
        for name, spec in self.columns.items():
            col = raw[name].reset_index(drop=True)
            present = col.notna()
            if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
                present &= ~col.isin(null_tokens)
            if spec.is_numeric:
                out[name], bad = _numeric_cells(col, present, spec.type)
                for i in np.flatnonzero(bad):
                    errors.setdefault(int(i), {})[name] = str(col.iat[i])
            else:
                out[name] = _text_cells(col, present)
        out[SOURCE_ROW] = pa.array(np.arange(n, dtype=np.int64))
        type_errors: list[str | None] = [None] * n
        for row, cells in errors.items():
            type_errors[row] = json.dumps(cells, sort_keys=True)
        out[TYPE_ERRORS] = pa.array(type_errors, type=pa.string())
        table = pa.table(out, schema=self.arrow_schema())
        return table.to_pandas()

    # --- Great Expectations ----------------------------------------------------------------

    def expectation_suite(self, check_duplicates: bool = True) -> ExpectationSuite:
        """The GX 1.x suite for this contract; every expectation carries ``meta.check``.

        ``meta.check`` is the check name used in quarantine reasons and validation counts
        (``not_null:<col>``, ``type:<col>``, ``range:<col>``, ``category:<col>``, ``duplicate``).
        """
        import great_expectations as gx
        import great_expectations.expectations as gxe

        expectations: list[Any] = []
        for name, spec in self.columns.items():
            expectations.append(
                gxe.ExpectColumnToExist(column=name, meta={"check": f"exists:{name}"})
            )
            if not spec.nullable:
                expectations.append(
                    gxe.ExpectColumnValuesToNotBeNull(
                        column=name, meta={"check": f"not_null:{name}"}
                    )
                )
            if spec.is_numeric and (spec.min is not None or spec.max is not None):
                expectations.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name,
                        min_value=spec.min,
                        max_value=spec.max,
                        meta={"check": f"range:{name}"},
                    )
                )
            if spec.type == "category":
                expectations.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name,
                        value_set=list(spec.categories or []),
                        meta={"check": f"category:{name}"},
                    )
                )
        # Types are enforced cell by cell during coercion (see Contract.coerce); a cell that
        # failed is recorded in _type_errors, so "no type errors" is a null check on it.
        expectations.append(
            gxe.ExpectColumnValuesToBeNull(
                column=TYPE_ERRORS,
                meta={
                    "check": "type",
                    "notes": "cells that could not be read as the contract type "
                    "(original values in _type_errors)",
                },
            )
        )
        if check_duplicates:
            expectations.append(
                gxe.ExpectCompoundColumnsToBeUnique(
                    column_list=list(self.columns),
                    meta={
                        "check": "duplicate",
                        "notes": "all copies are flagged here; quarantine keeps the first copy",
                    },
                )
            )
        # One suite built from the full list: add_expectation() on a suite that belongs to a
        # context saves the whole suite again on every call.
        suite = gx.ExpectationSuite(name=self.name, expectations=expectations)
        return suite

    # --- Pydantic ---------------------------------------------------------------------------

    def record_model(
        self,
        columns: list[str] | None = None,
        unknown_category: Literal["reject", "allow"] = "reject",
        model_name: str | None = None,
        integral_numbers: bool = True,
    ) -> type[BaseModel]:
        """A Pydantic model for one record of the given columns (default: all but the target).

        Numbers are strict (``"35"`` is not an age); integers are accepted for float columns,
        and integral numbers (``35.0``) for integer columns, as JSON Schema's ``integer``
        (which the published OpenAPI document uses) defines them; ``35.5`` is not an integer.
        ``integral_numbers=False`` gives the same model without that conversion (a Python
        call per integer field: the server tries this faster model first).
        Field names are Python identifiers; the contract names are the aliases, so JSON
        uses the contract's column names.
        """
        columns = (
            columns if columns is not None else [c for c in self.columns if c != self.target.column]
        )
        fields: dict[str, Any] = {}
        for name in columns:
            spec = self.columns[name]
            annotation: Any
            constraints: dict[str, Any] = {}
            if spec.type == "integer":
                annotation = (
                    Annotated[int, BeforeValidator(_integral_number)] if integral_numbers else int
                )
                constraints["strict"] = True
            elif spec.type == "float":
                annotation = float
                constraints["strict"] = True
            elif spec.type == "category" and unknown_category == "reject":
                annotation = Literal[tuple(spec.categories or [])]
            else:
                annotation = str
                constraints["strict"] = True
            if spec.min is not None:
                constraints["ge"] = spec.min
            if spec.max is not None:
                constraints["le"] = spec.max
            if spec.nullable:
                annotation = annotation | None
            fields[python_name(name)] = (
                annotation,
                Field(
                    default=None if spec.nullable else ...,
                    alias=name,
                    description=spec.description,
                    **constraints,
                ),
            )
        model: type[BaseModel] = create_model(
            model_name or _camel(self.name) + "Record",
            __config__=ConfigDict(extra="ignore", populate_by_name=True, frozen=True),
            **fields,
        )
        return model

    def record_errors(
        self, frame: pd.DataFrame, columns: list[str] | None = None
    ) -> list[list[str]]:
        """Validate rows with the record model; per row, the failing contract column names."""
        model = self.record_model(columns)
        integers = {name for name, spec in self.columns.items() if spec.type == "integer"}
        out: list[list[str]] = []
        for record in frame.to_dict(orient="records"):
            clean = {k: (None if _is_missing(v) else v) for k, v in record.items()}
            for k in integers & clean.keys():
                # An integer column with nulls is float64 in pandas: 35.0 is the integer 35.
                value = clean[k]
                if isinstance(value, float) and value.is_integer():
                    clean[k] = int(value)
            try:
                model.model_validate(clean)
                out.append([])
            except ValidationError as err:
                out.append(sorted({str(e["loc"][0]) for e in err.errors() if e["loc"]}))
        return out


def _integral_number(value: Any) -> Any:
    """35.0 is the integer 35 (JSON Schema); anything else is left to the strict int check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def python_name(column: str) -> str:
    name = re.sub(r"\W", "_", column)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "f_" + name
    return name


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", name) if part)


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _as_text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"  # JSON's spelling, as a CSV holds it
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numeric_cells(col: pd.Series, present: pd.Series, kind: str) -> tuple[pa.Array, np.ndarray]:
    """Arrow array of the column as int64/float64, and the mask of cells that failed."""
    if kind == "integer" and pd.api.types.is_integer_dtype(col.dtype):
        return pa.array(col, type=pa.int64(), from_pandas=True), np.zeros(len(col), dtype=bool)
    values = _to_float(col.where(present)).to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(values)
    bad = present.to_numpy() & ~finite
    if kind == "integer":
        bad |= finite & (np.mod(values, 1) != 0)
    values = np.where(bad, np.nan, values)
    arr = pa.array(values, type=pa.float64(), from_pandas=True)
    if kind == "integer":
        arr = arr.cast(pa.int64())
    return arr, bad


def _text_cells(col: pd.Series, present: pd.Series) -> pa.Array:
    if col.dtype == object:
        items = [
            _as_text(v) if ok else None
            for v, ok in zip(col.to_numpy(), present.to_numpy(), strict=True)
        ]
        return pa.array(items, type=pa.string())
    return pa.array(col.where(present), type=pa.string(), from_pandas=True)


def _to_float(col: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(col.dtype):
        # True/False are not numbers in a contract's eyes.
        return pd.Series(np.full(len(col), np.nan), index=col.index)
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.astype("float64")
    as_obj = col.astype(object)
    is_bool = as_obj.map(lambda v: isinstance(v, bool))
    values = pd.to_numeric(as_obj.where(~is_bool), errors="coerce")
    return values.astype("float64")


def load_contract(path: Path) -> Contract:
    try:
        raw = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"contract file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:  # a directory, no permission, not text
        raise ContractError(f"contract file {path} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise ContractError(f"contract file {path} is not valid YAML: {err}") from None
    try:
        return Contract.model_validate(raw)
    except ValidationError as err:
        lines = [f"contract file {path} is invalid:"]
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {key}: {e['msg']}" if key else f"  {e['msg']}")
        raise ContractError("\n".join(lines)) from None
