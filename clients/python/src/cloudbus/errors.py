"""Errors as values with stable codes (wire protocol §3 and §11).

A failure travels between nodes as ``{"code", "description", "details",
"cause"}``. The code is the contract: callers branch on it, so it is a plain
string constant here too (``cloudbus.TIMEOUT`` is ``"cloudbus.TIMEOUT"``),
the same text a Rust caller sees. Application services use codes of their
own (``image.NOT_FOUND``) with the same exception class.
"""

from __future__ import annotations

from typing import Any

TIMEOUT = "cloudbus.TIMEOUT"
NO_SUCH_SERVICE = "cloudbus.NO_SUCH_SERVICE"
UNKNOWN_MESSAGE = "cloudbus.UNKNOWN_MESSAGE"
MALFORMED = "cloudbus.MALFORMED"
INTERNAL = "cloudbus.INTERNAL"
NODE_UNAVAILABLE = "cloudbus.NODE_UNAVAILABLE"
BROKER_UNAVAILABLE = "cloudbus.BROKER_UNAVAILABLE"
NO_REPLY = "cloudbus.NO_REPLY"
CANCELLED = "cloudbus.CANCELLED"
SHUTTING_DOWN = "cloudbus.SHUTTING_DOWN"
INVALID_ARGUMENT = "cloudbus.INVALID_ARGUMENT"
REJECTED = "cloudbus.REJECTED"

#: Every code the bus itself produces or defines.
BUS_CODES = frozenset(
    {
        TIMEOUT,
        NO_SUCH_SERVICE,
        UNKNOWN_MESSAGE,
        MALFORMED,
        INTERNAL,
        NODE_UNAVAILABLE,
        BROKER_UNAVAILABLE,
        NO_REPLY,
        CANCELLED,
        SHUTTING_DOWN,
        INVALID_ARGUMENT,
        REJECTED,
    }
)

_MISSING: Any = object()


class CloudbusError(Exception):
    """A failure with a stable ``code``, raised by calls and by handlers.

    Raise it from a handler to send a failure reply; catch it around
    ``bus.call`` and look at ``code``. ``details`` is any JSON value and
    ``cause`` another ``CloudbusError``, both optional, exactly as on the wire.
    """

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        details: Any = _MISSING,
        cause: CloudbusError | None = None,
    ) -> None:
        if not isinstance(code, str) or not code:
            raise TypeError("an error code is a non-empty string, e.g. 'image.NOT_FOUND'")
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description
        self.details = None if details is _MISSING else details
        self._has_details = details is not _MISSING and details is not None
        self.cause = cause

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``details`` and ``cause`` left out when empty."""
        out: dict[str, Any] = {"code": self.code, "description": self.description}
        if self._has_details:
            out["details"] = self.details
        if self.cause is not None:
            out["cause"] = self.cause.to_json()
        return out

    @classmethod
    def from_json(cls, value: Any) -> CloudbusError:
        """Reads an error object; anything that is not one is ``MALFORMED``."""
        if not isinstance(value, dict) or not isinstance(value.get("code"), str) or not value["code"]:
            return cls(MALFORMED, f"a failure reply without an error code: {value!r:.200}")
        description = value.get("description", "")
        cause = value.get("cause")
        return cls(
            value["code"],
            description if isinstance(description, str) else str(description),
            details=value.get("details", _MISSING),
            cause=cls.from_json(cause) if cause is not None else None,
        )

    def __repr__(self) -> str:
        return f"CloudbusError({self.code!r}, {self.description!r})"
