"""Dataset discovery, archive safety and the torchvision-backed sets, all on small real files in tmp_path."""

from __future__ import annotations

import io
import re
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from PIL import Image

from scenelib.datasets import DATASETS, DatasetNotFoundError, load_dataset
from scenelib.datasets.archive import download_url, md5sum, safe_extract
from scenelib.datasets.folder import FolderDataset
from scenelib.datasets.intel import IntelImageClassification
from scenelib.datasets.torchvision_sets import CIFAR10Images, EuroSATRGB
from scenelib.datasets.ucmerced import UCMerced

UNROUTABLE = ("http://127.0.0.1:9/x.zip",)


def write_image(path: Path, size: int = 8, color: tuple[int, int, int] = (10, 120, 200)) -> Path:
    """A tiny real image; the format follows the suffix (PNG, JPEG, TIFF, WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def make_ucmerced_tree(data_dir: Path) -> Path:
    images = data_dir / "UCMerced_LandUse" / "Images"
    write_image(images / "beach" / "beach00.tif")
    write_image(images / "beach" / "beach01.webp")
    write_image(images / "airplane" / "airplane00.tif")
    return images


def build_ucmerced_zip(tmp_path: Path) -> Path:
    """A miniature UCMerced_LandUse.zip with the official layout."""
    staging = tmp_path / "staging"
    make_ucmerced_tree(staging)
    archive = tmp_path / "data" / "UCMerced_LandUse.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(staging).as_posix())
    return archive


def test_folder_dataset_discovers_classes_sorted(tmp_path: Path) -> None:
    for name in ("zebra", "apple", "mango"):
        write_image(tmp_path / name / "a.png")
        write_image(tmp_path / name / "b.jpg")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "apple" / "notes.txt").write_text("not an image")

    ds = FolderDataset(tmp_path)

    assert ds.classes == ["apple", "mango", "zebra"]
    assert len(ds) == 6
    assert {(s.path.parent.name, s.label) for s in ds.samples} == {("apple", 0), ("mango", 1), ("zebra", 2)}


def test_load_dataset_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names") as info:
        load_dataset("nope")
    for name in ("ucmerced", "intel", "eurosat", "cifar10", "folder"):
        assert name in DATASETS
        assert name in str(info.value)


def test_ucmerced_reads_mixed_extensions(tmp_path: Path) -> None:
    make_ucmerced_tree(tmp_path)
    ds = UCMerced(tmp_path)
    assert ds.classes == ["airplane", "beach"]
    assert sorted(s.path.name for s in ds.samples) == ["airplane00.tif", "beach00.tif", "beach01.webp"]
    for sample in ds.samples:
        with Image.open(sample.path) as img:
            assert img.size == (8, 8)
        assert sample.official_split is None


def test_ucmerced_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        UCMerced(tmp_path)
    message = str(info.value)
    assert "ucmerced" in message
    assert str(tmp_path / "UCMerced_LandUse" / "Images") in message
    assert "--download" in message


def test_ucmerced_download_offline_is_dataset_not_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(UCMerced, "urls", UNROUTABLE)
    with pytest.raises(DatasetNotFoundError) as info:
        UCMerced(tmp_path, download=True)
    message = str(info.value)
    assert "could not download" in message
    assert str(tmp_path / "UCMerced_LandUse.zip") in message
    assert UNROUTABLE[0] in message
    assert not list(tmp_path.iterdir()), "a failed download must leave no .part file behind"


def test_ucmerced_extracts_local_zip(tmp_path: Path, monkeypatch) -> None:
    archive = build_ucmerced_zip(tmp_path)
    monkeypatch.setattr(UCMerced, "md5", md5sum(archive))
    monkeypatch.setattr(UCMerced, "urls", UNROUTABLE)  # must not be needed

    ds = UCMerced(archive.parent)

    assert ds.classes == ["airplane", "beach"]
    assert len(ds) == 3
    assert (archive.parent / "UCMerced_LandUse" / "Images" / "beach" / "beach01.webp").is_file()


def test_ucmerced_refuses_zip_with_wrong_md5(tmp_path: Path, monkeypatch) -> None:
    archive = build_ucmerced_zip(tmp_path)
    monkeypatch.setattr(UCMerced, "md5", "0" * 32)
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        UCMerced(archive.parent)
    assert not (archive.parent / "UCMerced_LandUse").exists()


def test_download_url_checks_md5_and_cleans_up(tmp_path: Path) -> None:
    source = write_image(tmp_path / "src.png")
    dest = tmp_path / "out" / "copy.png"
    with pytest.raises(ValueError, match="MD5 mismatch"):
        download_url(source.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not list(dest.parent.iterdir())

    download_url(source.as_uri(), dest, md5sum(source))
    assert dest.read_bytes() == source.read_bytes()


def test_safe_extract_refuses_parent_traversal_in_zip(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/first.txt", "written before the bad member if unchecked")
        zf.writestr("../evil.txt", "escaped")
    target = tmp_path / "target"

    with pytest.raises(ValueError, match=r"\.\./evil\.txt"):
        safe_extract(archive, target)
    assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()


def _add_tar_member(tf: tarfile.TarFile, name: str, data: bytes = b"x", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("kind", ["absolute-path", "symlink-out"])
def test_safe_extract_refuses_escaping_tar_members(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _add_tar_member(tf, "ok/first.txt")
        if kind == "absolute-path":
            bad_name = str(outside)  # an absolute member name
            _add_tar_member(tf, bad_name)
        else:
            bad_name = "link-out"
            _add_tar_member(tf, bad_name, type=tarfile.SYMTYPE, linkname="../outside.txt")
    target = tmp_path / "target"

    with pytest.raises(ValueError, match=re.escape(repr(bad_name))):
        safe_extract(archive, target)
    assert not target.exists()
    assert not outside.exists()


def test_safe_extract_accepts_clean_tar(tmp_path: Path) -> None:
    archive = tmp_path / "clean.tar"
    with tarfile.open(archive, "w") as tf:
        _add_tar_member(tf, "a/b.txt", b"hello")
        _add_tar_member(tf, "a/c", type=tarfile.DIRTYPE)
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"hello" and (
        tmp_path / "out" / "a" / "c"
    ).is_dir()


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("a/inner-link", {"type": tarfile.SYMTYPE, "linkname": "b.txt"}),
        ("a/hard", {"type": tarfile.LNKTYPE, "linkname": "a/b.txt"}),
        ("a/dev", {"type": tarfile.CHRTYPE}),
        # The CVE-2025-4517 shape: a chain of links that each look harmless, then a file written through it.
        ("a/l1", {"type": tarfile.SYMTYPE, "linkname": "."}),
    ],
)
def test_safe_extract_refuses_every_link_and_device(tmp_path: Path, name: str, attrs: dict) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        _add_tar_member(tf, "a/b.txt", b"hello")
        _add_tar_member(tf, name, **attrs)
        _add_tar_member(tf, "a/l1/l1/l1/escape.txt", b"pwned")
    with pytest.raises(ValueError, match=re.escape(repr(name)) + ".*link, device or fifo"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_refuses_zip_symlinks_and_paths_through_existing_links(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("a/link")
        info.external_attr = (0o120777) << 16  # a symlink entry, as Info-ZIP stores it
        zf.writestr(info, "../../outside")
    with pytest.raises(ValueError, match="link or special file"):
        safe_extract(archive, tmp_path / "out")
    # A folder of the target that is already a link elsewhere cannot carry a member out.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(elsewhere)
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("sub/x.txt", "through the link")
    with pytest.raises(ValueError, match="outside"):
        safe_extract(plain, target)
    assert not (elsewhere / "x.txt").exists()


def test_download_retries_then_gives_the_network_error(tmp_path: Path, monkeypatch) -> None:
    import urllib.error
    import urllib.request

    calls = []

    def black_hole(url, timeout):
        calls.append(timeout)
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", black_hole)
    with pytest.raises(urllib.error.URLError):
        download_url(
            "http://127.0.0.1:9/x.zip", tmp_path / "x.zip", "0" * 32, timeout=5, retries=3, backoff=0
        )
    assert calls == [5, 5, 5] and not list(tmp_path.iterdir())


def test_symlink_loops_and_repeated_files_are_not_counted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image(root / "a" / "a0.png")
    write_image(root / "b" / "b0.png")
    (root / "loop").symlink_to(".")  # a class-level loop would otherwise be a class holding every image
    (root / "a" / "again").symlink_to("..")
    (root / "b" / "twin.png").symlink_to(root / "a" / "a0.png")
    outside = write_image(tmp_path / "outside" / "o.png")
    (root / "b" / "out.png").symlink_to(outside)
    ds = FolderDataset(root)
    assert ds.classes == ["a", "b"]
    assert sorted(s.path.name for s in ds.samples) == ["a0.png", "b0.png"]
    reasons = " | ".join(ds.skipped)
    assert "loop: a link to a folder" in reasons and "again: a link to a folder" in reasons
    assert "twin.png: the same file" in reasons and "out.png: a link leading out" in reasons


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    from scenelib.integrity import inspect_image
    from scenelib.transforms import load_square

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    path = tmp_path / "dem.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    rgb = load_square(path, 8)
    assert rgb[..., 0].max() == round(63000 / 65535 * 255) and rgb[0, 0, 0] == 0
    assert len(np.unique(rgb[..., 0])) == 64  # every level survives (clipping leaves 2)
    record = inspect_image(path, 0)
    assert record.ok and 0.3 < record.channel_mean[0] < 0.6


def test_oversized_images_are_reported_not_decoded(tmp_path: Path, monkeypatch) -> None:
    from scenelib.integrity import inspect_image

    path = write_image(tmp_path / "big.png", size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 > 1000: a "bomb"
    record = inspect_image(path, 0)
    assert not record.ok and record.error.startswith("oversized:")


@pytest.mark.parametrize("nested", [True, False], ids=["kaggle-nesting", "flat"])
def test_intel_uses_official_split(tmp_path: Path, nested: bool) -> None:
    for split, count in (("train", 2), ("test", 1)):
        folder = tmp_path / "intel" / f"seg_{split}"
        if nested:
            folder = folder / f"seg_{split}"
        for name in ("sea", "buildings", "forest"):
            for i in range(count):
                write_image(folder / name / f"{i}.jpg", size=150)

    ds = IntelImageClassification(tmp_path)

    assert ds.classes == ["buildings", "forest", "sea"]
    assert ds.has_official_split and ds.default_split == "official"
    assert sum(s.official_split == "train" for s in ds.samples) == 6
    assert sum(s.official_split == "test" for s in ds.samples) == 3
    assert all(f"seg_{s.official_split}" in s.path.parts for s in ds.samples)


def test_intel_missing_points_to_kaggle(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("intel", tmp_path)
    message = str(info.value)
    assert "puneet6060/intel-image-classification" in message
    assert str(tmp_path / "intel") in message


def test_eurosat_reads_torchvision_layout(tmp_path: Path) -> None:
    for name in ("SeaLake", "AnnualCrop", "Forest"):
        write_image(tmp_path / "eurosat" / "2750" / name / f"{name}_1.jpg", size=64)

    ds = EuroSATRGB(tmp_path)

    assert ds.classes == ["AnnualCrop", "Forest", "SeaLake"]
    assert len(ds) == 3 and ds.aerial and not ds.has_official_split


def test_eurosat_missing_offline_is_dataset_not_found(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DatasetNotFoundError, match="eurosat"):
        EuroSATRGB(tmp_path)

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "EuroSAT", offline)
    with pytest.raises(DatasetNotFoundError, match="network unreachable"):
        EuroSATRGB(tmp_path, download=True)


def fake_cifar10(calls: list[bool]):
    """Stands in for torchvision.datasets.CIFAR10: same attributes, 4 train / 2 test images."""
    classes = ["airplane", "automobile", "bird"]

    def factory(root: str, train: bool, download: bool) -> types.SimpleNamespace:
        calls.append(train)
        n = 4 if train else 2
        rng = np.random.default_rng(int(train))
        data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return types.SimpleNamespace(data=data, targets=[i % 3 for i in range(n)], classes=classes)

    return factory


def test_cifar10_exports_pngs_once(tmp_path: Path, monkeypatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10(calls))

    ds = CIFAR10Images(tmp_path)

    images = tmp_path / "cifar10" / "images"
    assert ds.classes == ["airplane", "automobile", "bird"]
    assert sum(s.official_split == "train" for s in ds.samples) == 4
    assert sum(s.official_split == "test" for s in ds.samples) == 2
    first = images / "train" / "airplane" / "00000.png"
    with Image.open(first) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    assert ds.samples[0].path == first

    again = CIFAR10Images(tmp_path)  # export already there: torchvision is not consulted
    assert len(again) == 6 and len(calls) == 2


def test_cifar10_missing_offline_is_dataset_not_found(tmp_path: Path, monkeypatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10Images(tmp_path)
    assert "cifar10" in str(info.value) and str(tmp_path / "cifar10") in str(info.value)
