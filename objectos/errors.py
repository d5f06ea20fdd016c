"""The one exception tree of ObjectOS Hub.

Every error a client or an operator can see is an :class:`ObjectOSError`. Each
class carries the protocol error ``code`` (PROTOCOL.md), its HTTP ``status`` and a
``category``; the REST layer maps any of them to the error envelope in one place
(``objectos.api.envelope``) and anything else to ``internal_error`` without a
stack trace.

    ObjectOSError                         internal_error        500
    ├── ValidationError                   validation_error      400
    │   ├── InvalidField                  invalid_field         400
    │   ├── MissingRequiredField          missing_required_field 400
    │   ├── InvalidFilter                 invalid_filter        400
    │   └── PayloadTooLarge               payload_too_large     413
    ├── ConfigError                       invalid_config        400
    │   └── ManifestError                 invalid_manifest      400
    ├── KernelError                       kernel_error          500
    │   ├── DependencyError               dependency_error      400
    │   │   ├── MissingDependency         missing_dependency    400
    │   │   ├── IncompatibleDependency    incompatible_dependency 400
    │   │   └── DependencyCycle           dependency_cycle      400
    │   ├── LifecycleError                lifecycle_error       500
    │   ├── UnknownPlugin                 unknown_plugin        404
    │   └── ServiceConflict (+Conflict)   service_conflict      409
    ├── Unauthenticated                   unauthenticated       401
    │   ├── InvalidToken                  invalid_token         401
    │   └── ExpiredToken                  expired_token         401
    ├── PermissionDenied                  permission_denied     403
    │   ├── FieldNotAccessible            field_not_accessible  403
    │   └── RecordNotAccessible           record_not_accessible 403
    ├── NotFound                          not_found             404
    │   ├── ObjectNotFound                object_not_found      404
    │   ├── RecordNotFound                record_not_found      404
    │   └── ServiceNotFound               service_not_found     404
    ├── MethodNotAllowed                  method_not_allowed    405
    ├── Conflict                          conflict              409
    │   ├── ConcurrentModification        concurrent_modification 409
    │   ├── DuplicateValue                duplicate_value       409
    │   └── DeleteRestricted              delete_restricted     409
    ├── RateLimitExceeded                 rate_limit_exceeded   429
    └── ServiceUnavailable                service_unavailable   503
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem with one field (or metadata key): where, and why."""

    field: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass
class ObjectOSError(Exception):
    """Base of every error the hub reports.

    ``message`` is for people, ``code`` for programs, ``details`` holds
    structured context (the file and key of a bad manifest, the offending
    operator of a filter, ...), ``field_errors`` lists per-field problems.
    """

    message: str
    details: dict[str, Any] = field(default_factory=dict)
    field_errors: list[FieldError] = field(default_factory=list)

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    category: ClassVar[str] = "server"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross actor boundaries (Ray pickles them); keep them rebuildable.
        return (type(self), (self.message, self.details, self.field_errors))

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the protocol envelope (without requestId)."""
        return {
            "code": self.code,
            "message": self.message,
            "category": self.category,
            "details": self.details,
            "fieldErrors": [fe.to_dict() for fe in self.field_errors],
        }


class ValidationError(ObjectOSError):
    code = "validation_error"
    status = 400
    category = "validation"


class InvalidField(ValidationError):
    code = "invalid_field"


class MissingRequiredField(ValidationError):
    code = "missing_required_field"


class InvalidFilter(ValidationError):
    code = "invalid_filter"


class PayloadTooLarge(ValidationError):
    """A request body exceeds the size limit; ``details`` holds ``limit`` in bytes."""

    code = "payload_too_large"
    status = 413


class ConfigError(ObjectOSError):
    code = "invalid_config"
    status = 400
    category = "config"


class ManifestError(ConfigError):
    """A manifest or metadata file is wrong; ``details`` names file, key, line."""

    code = "invalid_manifest"


class KernelError(ObjectOSError):
    code = "kernel_error"
    category = "kernel"


class DependencyError(KernelError):
    code = "dependency_error"
    status = 400


class MissingDependency(DependencyError):
    code = "missing_dependency"


class IncompatibleDependency(DependencyError):
    code = "incompatible_dependency"


class DependencyCycle(DependencyError):
    code = "dependency_cycle"


class LifecycleError(KernelError):
    code = "lifecycle_error"


class UnknownPlugin(KernelError):
    code = "unknown_plugin"
    status = 404


class Unauthenticated(ObjectOSError):
    code = "unauthenticated"
    status = 401
    category = "auth"


class InvalidToken(Unauthenticated):
    code = "invalid_token"


class ExpiredToken(Unauthenticated):
    code = "expired_token"


class PermissionDenied(ObjectOSError):
    code = "permission_denied"
    status = 403
    category = "permission"


class FieldNotAccessible(PermissionDenied):
    code = "field_not_accessible"


class RecordNotAccessible(PermissionDenied):
    code = "record_not_accessible"


class NotFound(ObjectOSError):
    code = "not_found"
    status = 404
    category = "not_found"


class ObjectNotFound(NotFound):
    code = "object_not_found"


class RecordNotFound(NotFound):
    code = "record_not_found"


class ServiceNotFound(NotFound):
    """No running plugin provides the named service (kernel service registry)."""

    code = "service_not_found"


class MethodNotAllowed(ObjectOSError):
    code = "method_not_allowed"
    status = 405
    category = "request"


class Conflict(ObjectOSError):
    code = "conflict"
    status = 409
    category = "conflict"


class ConcurrentModification(Conflict):
    code = "concurrent_modification"


class DuplicateValue(Conflict):
    code = "duplicate_value"


class DeleteRestricted(Conflict):
    code = "delete_restricted"


class ServiceConflict(KernelError, Conflict):
    """Two plugins want to provide the same service name.

    Both a kernel error (it comes from plugin wiring) and a :class:`Conflict`
    (HTTP 409), so ``except Conflict`` and ``except KernelError`` both see it.
    """

    code = "service_conflict"
    status = 409
    category = "conflict"


class RateLimitExceeded(ObjectOSError):
    code = "rate_limit_exceeded"
    status = 429
    category = "rate_limit"


class ServiceUnavailable(ObjectOSError):
    code = "service_unavailable"
    status = 503
    category = "server"


__all__ = [
    "ConcurrentModification",
    "ConfigError",
    "Conflict",
    "DeleteRestricted",
    "DependencyCycle",
    "DependencyError",
    "DuplicateValue",
    "ExpiredToken",
    "FieldError",
    "FieldNotAccessible",
    "IncompatibleDependency",
    "InvalidField",
    "InvalidFilter",
    "InvalidToken",
    "KernelError",
    "LifecycleError",
    "ManifestError",
    "MethodNotAllowed",
    "MissingDependency",
    "MissingRequiredField",
    "NotFound",
    "ObjectNotFound",
    "ObjectOSError",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimitExceeded",
    "RecordNotAccessible",
    "RecordNotFound",
    "ServiceConflict",
    "ServiceNotFound",
    "ServiceUnavailable",
    "Unauthenticated",
    "UnknownPlugin",
    "ValidationError",
]
