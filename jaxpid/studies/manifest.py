"""A study's manifest: JSONL items read with errors that name the file and the line, and the
paths they name, resolved beside the manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxpid.errors import ConfigError


def read_manifest(path: str | Path, *, required: Sequence[str], what: str = "manifest") -> list[dict]:
    """The items of a JSONL manifest, one object per non-empty line.

    Each item gets ``line`` (1-based, for error messages) besides its own fields.

    Raises:
      ConfigError: no such file, a line that is not a JSON object, a missing required field, or
        no items at all — naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} line {number}: not JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{path} line {number}: expected one JSON object per line")
        missing = [name for name in required if name not in value]
        if missing:
            raise ConfigError(f"{path} line {number}: missing {missing} (each line needs {list(required)})")
        items.append({**value, "line": number})
    if not items:
        raise ConfigError(f"{what} {path} has no items")
    return items


def resolve_path(value: Any, base: Path, where: str) -> Path:
    """A path field of a manifest item, relative to the manifest's folder; it must exist."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a file path, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"{where}: {path} does not exist")
    return path
