"""Restricted APIs, Triton-style: endpoint categories that answer only requests carrying a header key/value.

`--http-restricted-api model-repository,shared-memory:admin-key=s3cret` makes the model-repository and shared-memory
endpoints answer HTTP 403 unless the request has the header `admin-key: s3cret`; on gRPC
(`--grpc-restricted-api`, Triton's `--grpc-restricted-protocol`) the metadata key is
`triton-grpc-protocol-admin-key`, as Triton names it, and a request without it gets PERMISSION_DENIED. Each
category belongs to at most one group; a category named in no group is open. Health stays open unless named.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import UnsupportedOptionError
from .errors import ServeError

__all__ = ["CATEGORIES", "Forbidden", "Restriction", "RestrictedApis", "GRPC_HEADER_PREFIX"]

CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
_TOKEN = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class Forbidden(ServeError):
    """A restricted endpoint asked without its header key/value, or a request only a local peer may make.
    (Triton answers a restricted gRPC call UNAVAILABLE; unirt answers PERMISSION_DENIED, which gRPC retry
    policies do not retry and which names the cause.)"""

    status = 403
    grpc_code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Restriction:
    header: str  # lower case: HTTP header names and gRPC metadata keys are case-insensitive / lower case
    value: bytes

    def allows(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.value)


class RestrictedApis:
    """Which categories need which header. `check(category, get_header)` raises Forbidden when it is missing."""

    def __init__(self, specs: Iterable[str] = (), protocol: str = "http") -> None:
        self.protocol = protocol
        self.by_category: dict[str, Restriction] = {}
        flag = f"--{protocol}-restricted-api"
        for spec in specs:
            categories, restriction = self.parse(spec, flag, GRPC_HEADER_PREFIX if protocol == "grpc" else "")
            for category in categories:
                if category in self.by_category:
                    raise UnsupportedOptionError(
                        f"{flag}: category {category!r} is in more than one group; each "
                        "category may be restricted by one key only"
                    )
                self.by_category[category] = restriction

    @staticmethod
    def parse(spec: str, flag: str = "--http-restricted-api", prefix: str = "") -> tuple[list[str], Restriction]:
        """'<category>[,<category>...]:<key>=<value>' -> (categories, Restriction)."""
        form = f"expected <category>[,<category>...]:<key>=<value> with categories among {', '.join(CATEGORIES)}"
        head, sep, tail = spec.partition(":")
        key, eq, value = tail.partition("=")
        key = key.strip().lower()
        if not sep or not eq or not key or not value:
            raise UnsupportedOptionError(f"{flag} {spec!r}: {form}")
        if not set(key) <= _TOKEN:
            raise UnsupportedOptionError(
                f"{flag} {spec!r}: header key {key!r} may hold only letters, digits, '-', '_' and '.'"
            )
        categories = [c.strip().lower() for c in head.split(",") if c.strip()]
        unknown = [c for c in categories if c not in CATEGORIES]
        if not categories or unknown:
            raise UnsupportedOptionError(
                f"{flag} {spec!r}: unknown category {', '.join(map(repr, unknown))}; {form}"
                if unknown
                else f"{flag} {spec!r}: no category; {form}"
            )
        return categories, Restriction(prefix + key, value.encode())

    def __bool__(self) -> bool:
        return bool(self.by_category)

    def check(self, category: str, get_header: Callable[[str], str | None]) -> None:
        restriction = self.by_category.get(category)
        if restriction is not None and not restriction.allows(get_header(restriction.header)):
            what = "API" if self.protocol == "http" else "protocol"
            raise Forbidden(
                f"This {what} is restricted, expecting header '{restriction.header}' (the {category} endpoints need it)"
            )

    def open_categories(self) -> list[str]:
        return [c for c in CATEGORIES if c not in self.by_category]

    def describe(self) -> str:
        groups: dict[str, list[str]] = {}
        for category, restriction in self.by_category.items():
            groups.setdefault(restriction.header, []).append(category)
        return "; ".join(f"{', '.join(cats)} need header '{header}'" for header, cats in groups.items())
