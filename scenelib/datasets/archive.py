"""Fetch, checksum and unpack dataset archives without trusting them.

Archives come from the network or from whoever put a file in ``data_dir``, so a download is written to a
``.part`` file and only renamed once its MD5 matches, and extraction refuses any member that would land
outside the target folder (``../`` paths, absolute paths, links pointing out) before writing anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20


def md5sum(path: Path | str) -> str:
    """Hex MD5 of a file, read in chunks so multi-GB archives do not fill memory."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(url: str, dest: Path | str, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` and check its MD5.

    The bytes go to ``<dest>.part`` first so an interrupted download never looks like a finished one; a
    checksum mismatch deletes the file and raises ``ValueError``. Network errors (``urllib.error.URLError``,
    ``OSError``) propagate for the caller to turn into a helpful message.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK_SIZE)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    actual = md5sum(part)
    if actual != md5:
        part.unlink(missing_ok=True)
        raise ValueError(f"MD5 mismatch for {url}: expected {md5}, got {actual}; the file was deleted")
    part.replace(dest)
    return dest


def _is_inside(base: Path, candidate: Path) -> bool:
    """Lexical containment check: nothing is on disk yet, so paths cannot be resolved through the archive."""
    normalized = Path(os.path.normpath(candidate))
    return normalized == base or base in normalized.parents


def _refuse(archive: Path, member: str, why: str) -> None:
    raise ValueError(f"refusing to extract {archive.name}: member {member!r} {why}")


def _check_zip(archive: Path, zf: zipfile.ZipFile, base: Path) -> None:
    for name in zf.namelist():
        if not _is_inside(base, base / name):
            _refuse(archive, name, f"would be written outside {base}")


def _check_tar(archive: Path, tf: tarfile.TarFile, base: Path) -> None:
    for member in tf.getmembers():
        path = base / member.name
        if not _is_inside(base, path):
            _refuse(archive, member.name, f"would be written outside {base}")
        if member.issym():
            # A symlink target is relative to the folder holding the link.
            if not _is_inside(base, path.parent / member.linkname):
                _refuse(archive, member.name, f"is a symlink pointing outside {base} ({member.linkname})")
        elif member.islnk():
            # A hard-link target is relative to the archive root.
            if not _is_inside(base, base / member.linkname):
                _refuse(archive, member.name, f"is a hard link pointing outside {base} ({member.linkname})")
        elif not (member.isfile() or member.isdir()):
            _refuse(archive, member.name, "is a device or fifo, which a dataset never needs")


def safe_extract(archive: Path | str, target: Path | str) -> Path:
    """Extract a ``.zip`` or ``.tar[.gz|.bz2|.xz]`` into ``target`` after checking every member.

    All members are checked before the first byte is written, so a refused archive leaves ``target``
    untouched. Raises ``ValueError`` naming the offending member.
    """
    archive, target = Path(archive), Path(target)
    base = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _check_zip(archive, zf, base)
            target.mkdir(parents=True, exist_ok=True)
            zf.extractall(base)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            _check_tar(archive, tf, base)
            target.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tf.extractall(base, filter="data")  # second line of defence where Python has it
            else:  # pragma: no cover - Python without PEP 706 backport
                tf.extractall(base)  # noqa: S202 - every member was checked above
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")
    return target
