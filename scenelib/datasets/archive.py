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
import time
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


def download_url(
    url: str, dest: Path | str, md5: str, timeout: float = 30.0, retries: int = 3, backoff: float = 2.0
) -> Path:
    """Download ``url`` to ``dest`` and check its MD5.

    Every socket operation times out after ``timeout`` seconds (a black-holed network fails instead of
    hanging), and a failed attempt is retried ``retries - 1`` times after ``backoff``, 2 x ``backoff``, ...
    seconds. The bytes go to ``<dest>.part`` first so an interrupted download never looks like a finished
    one; a checksum mismatch deletes the file and raises ``ValueError``. The last network error
    (``urllib.error.URLError``, ``OSError``) propagates for the caller to turn into a helpful message.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        log.info("downloading %s -> %s (attempt %d of %d)", url, dest, attempt, retries)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK_SIZE)
            break
        except OSError:  # URLError, timeouts, resets: worth another try
            part.unlink(missing_ok=True)
            if attempt == retries:
                raise
            time.sleep(backoff * 2 ** (attempt - 1))
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


def _check_path(archive: Path, name: str, base: Path) -> None:
    """Lexically inside ``base``, and still inside once resolved against what is already on disk (a folder
    of the target that is a symlink must not carry a member elsewhere)."""
    if not _is_inside(base, base / name) or not _is_inside(base, (base / name).resolve()):
        _refuse(archive, name, f"would be written outside {base}")


def _check_zip(archive: Path, zf: zipfile.ZipFile, base: Path) -> None:
    for info in zf.infolist():
        _check_path(archive, info.filename, base)
        kind = (info.external_attr >> 16) & 0o170000
        if kind not in (0, 0o100000, 0o040000):  # only regular files and folders
            _refuse(archive, info.filename, "is a link or special file, which a dataset never needs")


def _check_tar(archive: Path, tf: tarfile.TarFile, base: Path) -> None:
    for member in tf.getmembers():
        _check_path(archive, member.name, base)
        if not (member.isfile() or member.isdir()):
            # Links (CVE-2025-4517 style chains), devices and fifos: a dataset never needs them, and
            # refusing them all is simpler and safer than checking where each one points.
            _refuse(archive, member.name, "is a link, device or fifo, which a dataset never needs")


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
                tf.extractall(base)  # noqa: S202 - every member was checked above: files and folders only
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive")
    return target
