"""Data protocol: the business object (``*.object.yml``) and its fields.

Names and shapes follow @objectstack/spec's ``ObjectSchema`` / ``FieldSchema``
(PROTOCOL.md lists the keys we accept). Everything a single object can check
about itself is checked here, so a bad field is reported with its own key and
line; checks that need other objects (does ``reference`` name a real object,
does a formula name real fields) live in :mod:`objectos.metadata.checks`.

One extension over the spec: formula fields take ``returnType`` (default
``number``), because formula values are stored in a typed column (see
:mod:`objectos.data.schema`) and an expression's type cannot be known before
it runs. ObjectQL calls the same key ``data_type``.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from objectos.protocol._base import ProtocolModel

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")

#: Columns every object table has; metadata may not declare fields with these names.
SYSTEM_FIELDS: tuple[str, ...] = (
    "id",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "owner",
    "version",
)

#: ``{0000}`` in an autonumber format: the counter, zero-padded to the number of zeros.
AUTONUMBER_COUNTER = re.compile(r"\{(0+)\}")
#: Date tokens an autonumber format may carry besides the counter.
AUTONUMBER_TOKENS = re.compile(r"\{(0+|YYYY|YY|MM|DD)\}")


class FieldType(StrEnum):
    """Every field type of PROTOCOL.md (a subset of the spec's ``FieldType``)."""

    TEXT = "text"
    TEXTAREA = "textarea"
    EMAIL = "email"
    URL = "url"
    PHONE = "phone"
    PASSWORD = "password"
    MARKDOWN = "markdown"
    HTML = "html"
    RICHTEXT = "richtext"
    NUMBER = "number"
    CURRENCY = "currency"
    PERCENT = "percent"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    BOOLEAN = "boolean"
    TOGGLE = "toggle"
    SELECT = "select"
    MULTISELECT = "multiselect"
    RADIO = "radio"
    CHECKBOXES = "checkboxes"
    LOOKUP = "lookup"
    MASTER_DETAIL = "master_detail"
    TREE = "tree"
    IMAGE = "image"
    FILE = "file"
    AVATAR = "avatar"
    FORMULA = "formula"
    SUMMARY = "summary"
    AUTONUMBER = "autonumber"
    LOCATION = "location"
    ADDRESS = "address"
    CODE = "code"
    JSON = "json"
    COLOR = "color"
    RATING = "rating"
    SLIDER = "slider"
    TAGS = "tags"


#: Types whose value is one of ``options``.
OPTION_TYPES = frozenset(
    {FieldType.SELECT, FieldType.MULTISELECT, FieldType.RADIO, FieldType.CHECKBOXES}
)
#: Types that point at another record (``tree`` points at the same object).
REFERENCE_TYPES = frozenset({FieldType.LOOKUP, FieldType.MASTER_DETAIL, FieldType.TREE})
#: Types whose value the engine computes; clients never write them.
COMPUTED_TYPES = frozenset({FieldType.FORMULA, FieldType.SUMMARY, FieldType.AUTONUMBER})
NUMERIC_TYPES = frozenset(
    {FieldType.NUMBER, FieldType.CURRENCY, FieldType.PERCENT, FieldType.RATING, FieldType.SLIDER}
)
TEXT_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.TEXTAREA,
        FieldType.EMAIL,
        FieldType.URL,
        FieldType.PHONE,
        FieldType.PASSWORD,
        FieldType.MARKDOWN,
        FieldType.HTML,
        FieldType.RICHTEXT,
        FieldType.CODE,
        FieldType.COLOR,
    }
)
#: Types a formula may declare as its ``returnType``.
FORMULA_RETURN_TYPES = frozenset(
    {
        FieldType.TEXT,
        FieldType.NUMBER,
        FieldType.CURRENCY,
        FieldType.PERCENT,
        FieldType.BOOLEAN,
        FieldType.DATE,
        FieldType.DATETIME,
    }
)


def check_snake_case(value: str) -> str:
    """A name usable as a table or column: lower snake_case, starting with a letter."""
    if not SNAKE_CASE.match(value):
        raise ValueError(f"{value!r} is not snake_case (a-z, 0-9, _; starting with a letter)")
    return value


def check_field_name(value: str) -> str:
    """A field name: snake_case and not one of :data:`SYSTEM_FIELDS`."""
    check_snake_case(value)
    if value in SYSTEM_FIELDS:
        raise ValueError(f"{value!r} is a system field name (reserved: {', '.join(SYSTEM_FIELDS)})")
    return value


SnakeName = Annotated[str, AfterValidator(check_snake_case)]
FieldName = Annotated[str, AfterValidator(check_field_name)]


class SelectOption(ProtocolModel):
    """One allowed value of a select/multiselect/radio/checkboxes field."""

    label: str = Field(description="What people see.")
    value: str = Field(description="What is stored (a stable lower-case id).")
    color: str | None = Field(None, description="Badge colour shown by UIs.")
    default: bool = Field(False, description="Pre-selected on new records.")


class SummaryOperations(ProtocolModel):
    """A roll-up over the child records of a master-detail (or lookup) relation."""

    object: SnakeName = Field(description="The child object whose records are summarised.")
    field: SnakeName | None = Field(
        None, description="The child field aggregated; not needed for ``count``."
    )
    function: Literal["count", "sum", "min", "max", "avg"] = Field(
        description="Aggregate applied to the child field."
    )
    filter: dict[str, Any] | None = Field(
        None, description="Mongo-style filter: only matching children are summarised."
    )

    @model_validator(mode="after")
    def _field_unless_count(self) -> SummaryOperations:
        if self.function != "count" and self.field is None:
            raise ValueError(f"summaryOperations.field is required for function {self.function!r}")
        return self


class ObjectField(ProtocolModel):
    """One field of an object (the spec's ``FieldSchema``); its name is its key."""

    type: FieldType = Field(description="What kind of value the field holds.")
    label: str | None = Field(None, description="What people see.")
    description: str | None = Field(None, description="Help text.")
    required: bool = Field(False, description="A record must have a value.")
    unique: bool = Field(False, description="No two records may share a value.")
    searchable: bool = Field(False, description="Included in full-text ``search``.")
    multiple: bool = Field(False, description="Holds a list of values (select, lookup, file).")
    defaultValue: Any = Field(None, description="Value of new records that give none.")
    maxLength: int | None = Field(None, ge=1, description="Longest text allowed.")
    minLength: int | None = Field(None, ge=0, description="Shortest text allowed.")
    precision: int | None = Field(None, ge=1, le=38, description="Total significant digits.")
    scale: int | None = Field(None, ge=0, le=18, description="Digits after the decimal point.")
    min: float | None = Field(None, description="Smallest number allowed.")
    max: float | None = Field(None, description="Largest number allowed.")
    options: list[SelectOption] | None = Field(None, description="Allowed values (select...).")
    reference: SnakeName | None = Field(
        None, description="Target object of a lookup/master_detail field."
    )
    deleteBehavior: Literal["set_null", "cascade", "restrict"] | None = Field(
        None,
        description=(
            "What deleting the referenced record does to this one. Default: cascade for "
            "master_detail, restrict for a required lookup, set_null otherwise."
        ),
    )
    expression: str | None = Field(None, description="Formula of a formula field.")
    returnType: FieldType | None = Field(
        None, description="Type of a formula's value (extension; default number)."
    )
    summaryOperations: SummaryOperations | None = Field(
        None, description="Roll-up definition of a summary field."
    )
    autonumberFormat: str | None = Field(
        None, description="Pattern of an autonumber field, e.g. 'CASE-{0000}'."
    )
    readonly: bool = Field(False, description="Clients may not write it (server code may).")
    hidden: bool = Field(False, description="UIs hide it (not a security boundary).")
    auditTrail: bool = Field(False, description="Changes are recorded in the audit trail.")
    index: bool = Field(False, description="Create a database index on it.")

    @property
    def computed(self) -> bool:
        """The engine computes the value (formula, summary, autonumber)."""
        return self.type in COMPUTED_TYPES

    @property
    def on_delete(self) -> Literal["set_null", "cascade", "restrict"]:
        """The effective ``deleteBehavior`` of a reference field."""
        if self.deleteBehavior is not None:
            return self.deleteBehavior
        if self.type == FieldType.MASTER_DETAIL:
            return "cascade"
        # Clearing a required reference would leave an invalid record behind.
        return "restrict" if self.required else "set_null"

    @property
    def value_type(self) -> FieldType:
        """The type of the stored value (a formula's ``returnType``)."""
        if self.type == FieldType.FORMULA:
            return self.returnType or FieldType.NUMBER
        return self.type

    @model_validator(mode="after")
    def _check_type_keys(self) -> ObjectField:
        kind = self.type
        if kind in (FieldType.LOOKUP, FieldType.MASTER_DETAIL) and not self.reference:
            raise ValueError(f"a {kind.value} field needs 'reference' (the target object)")
        if kind not in REFERENCE_TYPES:
            if self.reference is not None:
                raise ValueError(f"'reference' is only for lookup/master_detail, not {kind.value}")
            if self.deleteBehavior is not None:
                raise ValueError(f"'deleteBehavior' is only for references, not {kind.value}")
        if self.required and self.deleteBehavior == "set_null":
            raise ValueError(
                "a required reference cannot use deleteBehavior set_null (use restrict or cascade)"
            )
        if kind == FieldType.MASTER_DETAIL:
            if self.multiple:
                raise ValueError("a master_detail field points at exactly one parent")
            if self.deleteBehavior == "set_null":
                # The detail cannot exist without its master, so "clear it" is no option.
                raise ValueError("a master_detail field's deleteBehavior is cascade or restrict")
        if kind == FieldType.FORMULA:
            if not self.expression:
                raise ValueError("a formula field needs 'expression'")
            if self.returnType is not None and self.returnType not in FORMULA_RETURN_TYPES:
                allowed = ", ".join(sorted(t.value for t in FORMULA_RETURN_TYPES))
                raise ValueError(f"returnType must be one of {allowed}")
        else:
            if self.expression is not None:
                raise ValueError(f"'expression' is only for formula fields, not {kind.value}")
            if self.returnType is not None:
                raise ValueError(f"'returnType' is only for formula fields, not {kind.value}")
        if kind == FieldType.SUMMARY and self.summaryOperations is None:
            raise ValueError("a summary field needs 'summaryOperations'")
        if kind != FieldType.SUMMARY and self.summaryOperations is not None:
            raise ValueError(f"'summaryOperations' is only for summary fields, not {kind.value}")
        if kind in OPTION_TYPES:
            if not self.options:
                raise ValueError(f"a {kind.value} field needs 'options'")
            values = [o.value for o in self.options]
            if len(set(values)) != len(values):
                raise ValueError("option values must be distinct")
        elif self.options is not None:
            raise ValueError(f"'options' is only for select-like fields, not {kind.value}")
        if kind == FieldType.AUTONUMBER:
            self._check_autonumber_format()
        elif self.autonumberFormat is not None:
            raise ValueError(f"'autonumberFormat' is only for autonumber fields, not {kind.value}")
        if self.computed and (self.required or self.defaultValue is not None):
            raise ValueError(f"a {kind.value} field is computed; it takes no required/defaultValue")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        if (
            self.minLength is not None
            and self.maxLength is not None
            and self.minLength > self.maxLength
        ):
            raise ValueError("minLength is greater than maxLength")
        if self.scale is not None and self.precision is not None and self.scale > self.precision:
            raise ValueError("scale is greater than precision")
        return self

    def _check_autonumber_format(self) -> None:
        fmt = self.autonumberFormat or "{0}"
        counters = AUTONUMBER_COUNTER.findall(fmt)
        if len(counters) != 1:
            raise ValueError(
                f"autonumberFormat {fmt!r} needs exactly one counter token like {{0000}}"
            )
        leftover = AUTONUMBER_TOKENS.sub("", fmt)
        if "{" in leftover or "}" in leftover:
            raise ValueError(
                f"autonumberFormat {fmt!r} has an unknown token (known: {{0000}} {{YYYY}} "
                "{YY} {MM} {DD})"
            )


class ObjectIndex(ProtocolModel):
    """A database index over one or more fields."""

    name: SnakeName = Field(description="Index name (unique within the object).")
    fields: list[str] = Field(min_length=1, description="Indexed fields, in order.")
    unique: bool = Field(False, description="No two records share the indexed values.")


RuleEvent = Literal["insert", "update"]


def _both_events() -> list[RuleEvent]:
    return ["insert", "update"]


class _RuleBase(ProtocolModel):
    name: SnakeName = Field(description="Rule name (unique within the object).")
    label: str | None = Field(None, description="What people see.")
    description: str | None = Field(None, description="Why the rule exists.")
    active: bool = Field(True, description="Inactive rules are not checked.")
    events: list[RuleEvent] = Field(
        default_factory=_both_events, description="Writes the rule checks."
    )
    severity: Literal["error", "warning", "info"] = Field(
        "error", description="Only ``error`` rules reject a write."
    )
    message: str = Field(description="Shown when the rule fails.")


class ScriptRule(_RuleBase):
    """``expression`` must evaluate to true, else the write fails with ``message``."""

    type: Literal["script"] = Field(description="Rule kind.")
    expression: str = Field(description="Formula that must be true (e.g. 'amount >= 0').")


class UniqueRule(_RuleBase):
    """No two records share the combination of ``fields``."""

    type: Literal["unique"] = Field(description="Rule kind.")
    fields: list[str] = Field(min_length=1, description="Fields whose combination is unique.")
    caseSensitive: bool = Field(True, description="False compares text case-insensitively.")


class FormatRule(_RuleBase):
    """A text field must match ``regex`` (checked only when it has a value)."""

    type: Literal["format"] = Field(description="Rule kind.")
    field: str = Field(description="The field checked.")
    regex: str = Field(description="Python regular expression the whole value must match.")

    @model_validator(mode="after")
    def _compiles(self) -> FormatRule:
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class CrossFieldRule(_RuleBase):
    """``condition`` relates several fields and must be true (e.g. 'end >= start')."""

    type: Literal["cross_field"] = Field(description="Rule kind.")
    condition: str = Field(description="Formula that must be true.")
    fields: list[str] = Field(
        default_factory=list, description="Fields the error is reported on (default: the rule)."
    )


class StateMachineRule(_RuleBase):
    """A field may only move along the listed transitions (``{from: [to, ...]}``)."""

    type: Literal["state_machine"] = Field(description="Rule kind.")
    field: str = Field(description="The state field (usually a select).")
    transitions: dict[str, list[str]] = Field(description="Allowed next states per state.")


ValidationRule = Annotated[
    ScriptRule | UniqueRule | FormatRule | CrossFieldRule | StateMachineRule,
    Field(discriminator="type"),
]

ApiMethod = Literal[
    "get",
    "list",
    "create",
    "update",
    "delete",
    "upsert",
    "bulk",
    "aggregate",
    "history",
    "search",
    "restore",
    "purge",
    "import",
    "export",
]


class ObjectCapabilities(ProtocolModel):
    """``enable``: which platform features an object uses."""

    trackHistory: bool = Field(False, description="Keep field history.")
    apiEnabled: bool = Field(True, description="Served by the REST API at all.")
    apiMethods: list[ApiMethod] | None = Field(
        None, description="Only these REST operations are allowed (default: all)."
    )
    trash: bool = Field(True, description="Deleted records go to a recycle bin.")


class SyncSettings(ProtocolModel):
    """How offline-sync conflicts on this object are resolved."""

    strategy: Literal["lww", "crdt", "manual"] = Field(
        "lww", description="Per-field last-writer-wins, Yjs CRDT, or manual resolution."
    )


class ObjectSchema(ProtocolModel):
    """A business object: a table of records, its fields, rules and capabilities."""

    name: SnakeName = Field(description="Machine name; also the table name.")
    label: str | None = Field(None, description="Singular display name.")
    pluralLabel: str | None = Field(None, description="Plural display name.")
    description: str | None = Field(None, description="What the object is for.")
    icon: str | None = Field(None, description="Icon id shown by UIs.")
    fields: dict[FieldName, ObjectField] = Field(description="Fields by name.")
    indexes: list[ObjectIndex] = Field(default_factory=list, description="Database indexes.")
    validations: list[ValidationRule] = Field(
        default_factory=list, description="Record validation rules."
    )
    enable: ObjectCapabilities = Field(
        default_factory=lambda: ObjectCapabilities.model_validate({}),
        description="Platform features.",
    )
    sharingModel: Literal["private", "read", "read_write", "full"] = Field(
        "read_write", description="Org-wide default access to records of others."
    )
    displayNameField: str | None = Field(
        None, description="Field shown as the record's name (default: 'name' if present)."
    )
    sync: SyncSettings = Field(
        default_factory=lambda: SyncSettings.model_validate({}), description="Offline sync."
    )

    @property
    def display_field(self) -> str:
        """The field that names a record in UIs and expanded lookups."""
        if self.displayNameField:
            return self.displayNameField
        return "name" if "name" in self.fields else "id"

    def allows(self, method: str) -> bool:
        """Whether the REST API serves ``method`` (get, list, create, ...) for this object."""
        if not self.enable.apiEnabled:
            return False
        return self.enable.apiMethods is None or method in self.enable.apiMethods


__all__ = [
    "COMPUTED_TYPES",
    "NUMERIC_TYPES",
    "OPTION_TYPES",
    "REFERENCE_TYPES",
    "SYSTEM_FIELDS",
    "TEXT_TYPES",
    "CrossFieldRule",
    "FieldType",
    "FormatRule",
    "ObjectCapabilities",
    "ObjectField",
    "ObjectIndex",
    "ObjectSchema",
    "ScriptRule",
    "SelectOption",
    "StateMachineRule",
    "SummaryOperations",
    "SyncSettings",
    "UniqueRule",
    "ValidationRule",
]
