"""Reading JSON documents that must be objects: image manifests, configs, OCI specs.

One helper, so every place that reads such a document refuses bad input the same
way, with the error class its caller's contract needs (a bad manifest from a
registry is a failed precondition; a bad spec from a client is an invalid
argument).
"""

from __future__ import annotations

import json
from typing import Any

from core.errors import CtrdeckError


def load_object(data: bytes | str, what: str, error: type[CtrdeckError]) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    return doc
