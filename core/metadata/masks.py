"""Update masks: how containerd's field paths change a stored object.

containerd's paths are its own, not protobuf's: `labels` replaces the whole map,
`labels.<key>` sets one key (an empty or missing value removes it), and the key
may itself contain dots and slashes. The same rules serve maps of other values,
such as a container's extensions. Every store that takes an update mask uses these two
helpers, so the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core import labels as label_rules
from core.errors import InvalidArgument


def apply_map_path(
    current: dict[str, Any], incoming: Mapping[str, Any], path: str, field: str
) -> bool:
    """Apply `path` to the map named `field`; False if the path is about something else."""
    if path == field:
        current.clear()
        current.update(incoming)
        return True
    prefix = field + "."
    if path.startswith(prefix):
        key = path[len(prefix) :]
        if not key:
            raise InvalidArgument(f"cannot update {path!r}: empty {field} key")
        value = incoming.get(key)
        if value:
            current[key] = value
        else:
            current.pop(key, None)
        return True
    return False


def apply_paths(
    paths: Sequence[str],
    maps: Mapping[str, tuple[dict[str, Any], Mapping[str, Any]]],
    kind: str,
    others: Sequence[str] = (),
) -> list[str]:
    """Apply every map path; return the non-map paths in `others` that were named.

    `maps` names each updatable map with its (current, incoming) pair. A path that
    is neither a map path nor in `others` is refused, naming the object kind.
    """
    rest: list[str] = []
    for path in paths:
        if any(apply_map_path(cur, new, path, name) for name, (cur, new) in maps.items()):
            continue
        if path in others:
            rest.append(path)
            continue
        raise InvalidArgument(f"cannot update {path!r} field on {kind}")
    for current, _ in maps.values():
        if all(isinstance(v, str) for v in current.values()):
            label_rules.validate_all(current)
    return rest
