"""Validation of containerd identifiers.

This module owns the rule containerd's ``identifiers`` package applies to
namespace names, container ids (hence task and exec ids) and event-topic
components: 1 to :data:`MAX_LENGTH` characters matching :data:`PATTERN`, i.e.
alphanumeric runs joined by single ``.``, ``_`` or ``-``. Violations raise
:class:`~core.errors.InvalidArgument` with containerd's messages.
"""

from __future__ import annotations

import json
import re

from core.errors import InvalidArgument

MAX_LENGTH = 76
PATTERN = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"

_IDENTIFIER = re.compile(PATTERN)


def validate(identifier: str) -> None:
    """Raise InvalidArgument unless `identifier` is a valid containerd identifier."""
    if not identifier:
        raise InvalidArgument("identifier must not be empty")
    # containerd measures bytes; only matters for non-ASCII input, which fails anyway.
    if len(identifier.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise InvalidArgument(
            f"identifier {_quoted(identifier)} greater than maximum length"
            f" ({MAX_LENGTH} characters)"
        )
    # fullmatch, because `$` alone would accept a trailing newline.
    if _IDENTIFIER.fullmatch(identifier) is None:
        raise InvalidArgument(f"identifier {_quoted(identifier)} must match {PATTERN}")


def _quoted(identifier: str) -> str:
    # Only a refusal quotes: every namespaced call validates its namespace.
    return json.dumps(identifier, ensure_ascii=False)
