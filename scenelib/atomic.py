"""Files written whole or not at all, and JSON that either loads or says which file is damaged.

Every file a stage writes goes through a temp file beside it that is renamed over the target on success: a
killed run, a full disk or a failing writer leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


class DamagedFileError(ValueError):
    """A file of a run (or a cache) exists but does not load; the message names it."""


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", **kwargs):
    """Open a uniquely named temp file beside ``path`` and rename it over ``path`` on success.

    A killed or failing writer (disk full, read-only folder) leaves neither a half file nor a temp file, and
    two writers of the same file never share a temp name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result has the usual permissions
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> Path:
    """``path.write_bytes`` through a temp file and a rename."""
    with atomic_writer(Path(path), "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """``path.write_text`` (UTF-8) through a temp file and a rename."""
    with atomic_writer(Path(path), encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def torch_save(obj: Any, path: Path) -> Path:
    """``torch.save`` through a temp file and a rename."""
    import torch

    with atomic_writer(Path(path), "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically, so a killed run leaves no half file."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    with atomic_writer(Path(path)) as fh:
        fh.write(text)
    return path


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ``DamagedFileError`` (naming the file) when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFileError(f"{path} is damaged (not valid JSON: {exc})") from None
