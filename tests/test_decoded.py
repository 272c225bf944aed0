"""The decoded-image cache: one decode per image set and size, shared by every split, stage and run."""

from __future__ import annotations

import os
import time

import pytest
import torch

from scenelib import decoded
from scenelib.splits import ManifestRow
from scenelib.transforms import decode_images

from .conftest import write_image_tree


@pytest.fixture
def manifest(tmp_path, monkeypatch) -> list[ManifestRow]:
    monkeypatch.setenv("SCENELIB_CACHE_DIR", str(tmp_path / "cache"))
    root = write_image_tree(tmp_path / "images", ["a", "b"], 4, size=40)
    paths = sorted(root.rglob("*.png"), reverse=True)  # manifest order is not the cache's (sorted) order
    return [
        ManifestRow(
            str(p), int(p.parent.name == "b"), p.parent.name, ("train", "val", "test", "train")[i % 4]
        )
        for i, p in enumerate(paths)
    ]


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """How many images each call of the real decoder decoded."""
    calls: list[int] = []

    def counted(paths, size, *args, **kwargs):
        calls.append(len(paths))
        return decode_images(paths, size, *args, **kwargs)

    monkeypatch.setattr(decoded, "decode_images", counted)
    return calls


def test_every_split_reads_the_images_decoded_once_per_size(manifest, decodes):
    for split in ("train", "val", "test"):
        rows, images = decoded.split_images(manifest, split, 24)
        assert [r.split for r in rows] == [split] * len(rows) and len(rows) > 0
        # the rows' own pixels, in the rows' order, as a writable tensor
        assert torch.equal(images, decode_images([r.path for r in rows], 24))
        images[0, 0, 0, 0] = 7
    assert decodes == [8]  # the first split decoded all 8 images; the other two read the file
    decoded.split_images(manifest, "val", 32)
    assert decodes == [8, 8]  # another size is another file
    few = [manifest[5], manifest[1]]
    assert torch.equal(decoded.images_of(manifest, few, 24), decode_images([r.path for r in few], 24))
    assert decodes == [8, 8]


def test_an_edited_image_or_a_damaged_file_is_decoded_again(manifest, decodes):
    decoded.split_images(manifest, "train", 24)
    decoded.split_images(manifest, "train", 32)
    paths = sorted(r.path for r in manifest)
    before = decoded.cache_file(paths, 24)
    killed, writing = (before.parent / f".{before.name}.{tag}.tmp" for tag in ("killed", "writing"))
    killed.write_bytes(b"half an array")
    writing.write_bytes(b"another run, writing now")
    hours_ago = time.time() - 2 * 3600
    os.utime(killed, (hours_ago, hours_ago))
    edited = manifest[0].path
    st = os.stat(edited)
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rows, images = decoded.split_images(manifest, "train", 24)
    assert decodes == [8, 8, 8]
    # the array from before the edit and a killed writer's temp file are gone; another writer's stays, and so
    # does the other size's array until it is read again
    files = sorted(p.name for p in before.parent.iterdir())
    assert before.name not in files and killed.name not in files and writing.name in files
    assert decoded.cache_file(paths, 24).name in files and len(files) == 3
    decoded.cache_file(paths, 24).write_bytes(b"not an array")
    again = decoded.split_images(manifest, "train", 24)[1]
    assert decodes == [8, 8, 8, 8] and torch.equal(again, images)


def test_an_unwritable_cache_folder_warns_and_still_returns_the_images(manifest, decodes, tmp_path):
    (tmp_path / "cache").write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="decoded images not cached"):
        rows, images = decoded.split_images(manifest, "test", 24)
    assert torch.equal(images, decode_images([r.path for r in rows], 24))
