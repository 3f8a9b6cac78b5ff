"""The user's keymap: remapping binding ids to other keys.

The file is `keymap.toml` in platformdirs' config directory for ctrdeck (or
the path given with `--keymap`), with one table:

    [keys]
    "container.kill" = "K"
    "nav.up" = "k,up"

Each key is a binding id from `tui.commands` (the help screen shows them);
each value is one key or a comma-separated list, in Textual's key names. An
unknown id or a value that is not a string is reported with the file and the
id, so a typo does not silently leave a key unbound.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import platformdirs

from tui.commands import BY_ID, VIM_KEYS

APP_NAME = "ctrdeck"
FILE_NAME = "keymap.toml"


class KeymapError(Exception):
    """The keymap file cannot be used; the message names the file and the entry."""


def default_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / FILE_NAME


def known_ids() -> set[str]:
    return set(BY_ID) | {bid for _key, _action, bid in VIM_KEYS}


def parse(text: str, source: str) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeymapError(f"{source}: not valid TOML: {exc}") from None
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise KeymapError(f'{source}: [keys] must be a table of binding id = "key"')
    known = known_ids()
    out: dict[str, str] = {}
    for binding_id, value in keys.items():
        if binding_id not in known:
            names = ", ".join(sorted(known))
            raise KeymapError(f"{source}: unknown binding id {binding_id!r}; known ids: {names}")
        if not isinstance(value, str) or not value.strip():
            raise KeymapError(f"{source}: keys.{binding_id} must be a non-empty string of keys")
        out[binding_id] = ",".join(k.strip() for k in value.split(",") if k.strip())
    return out


def load(path: Path | None = None) -> dict[str, str]:
    """The keymap from `path` (or the default file); empty when the default file is absent."""
    target = path or default_path()
    if not target.is_file():
        if path is not None:
            raise KeymapError(f"{path}: no such keymap file")
        return {}
    return parse(target.read_text(), str(target))
