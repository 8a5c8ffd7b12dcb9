"""The walk finds exactly the image files a user means, by their exact bytes paths."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from indexer.media.discovery import (
    EXTENSIONS,
    FoundFile,
    WalkOptions,
    extension,
    walk,
    walk_all,
)

DEFAULT = WalkOptions()


def _root(tmp_path: Path) -> bytes:
    """A fresh photo folder inside tmp_path, as the bytes path the walk takes."""
    root = tmp_path / "photos"
    root.mkdir()
    return os.fsencode(root)


def _touch(root: bytes, relative: bytes, content: bytes = b"\xff\xd8not really a jpeg") -> bytes:
    """Write a file (creating its folders) and return its full bytes path."""
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path


def _found(root: bytes, options: WalkOptions = DEFAULT) -> set[bytes]:
    """The paths the walk yields, relative to root, asserting none is yielded twice."""
    paths = [os.path.relpath(f.path, root) for f in walk(root, options)]
    assert len(paths) == len(set(paths)), f"duplicates in {paths}"
    return set(paths)


# --- extension() ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"a.jpg", "jpg"),
        (b"a.JPG", "jpg"),
        (b"IMG_0001.Jpeg", "jpeg"),
        (b"/x/y/z.HEIC", "heic"),
        (b"DSC_1234.nef", "nef"),
        (b"scan.TiFf", "tiff"),
        (b"archive.tar.gz", "gz"),
        (b"no_extension", ""),
        (b".jpg", ""),  # a hidden file called "jpg", not a JPEG
        (b".hidden.png", "png"),
        (b"folder.d/file", ""),  # a dot in the folder is not the file's extension
        (b"bad\xff\xfe name.JPG", "jpg"),
        (b"caf\xc3\xa9 \xe2\x9c\x93.webp", "webp"),
    ],
)
def test_extension(path: bytes, expected: str) -> None:
    assert extension(path) == expected


def test_extension_with_undecodable_bytes_is_no_known_extension() -> None:
    ext = extension(b"photo.jp\xffg")
    assert ext not in EXTENSIONS


# --- what counts as an image ---------------------------------------------------------------


def test_image_extensions_found_in_any_case_and_others_ignored(tmp_path: Path) -> None:
    root = _root(tmp_path)
    images = [
        b"a.jpg",
        b"b.JPG",
        b"c.Jpeg",
        b"d.png",
        b"e.WEBP",
        b"f.gif",
        b"g.tif",
        b"h.TIFF",
        b"i.bmp",
        b"j.HEIC",
        b"k.heif",
        b"l.avif",
        b"m.nef",
        b"n.CR2",
        b"o.cr3",
        b"p.ARW",
        b"q.dng",
        b"r.orf",
        b"s.rw2",
    ]
    others = [
        b"notes.txt",
        b"clip.mp4",
        b"album.xmp",
        b"Thumbs.db",
        b"no_extension",
        b"jpg",
        b"photo.jpg.bak",
        b"photo.jpgx",
    ]
    for name in images + others:
        _touch(root, name)
    assert _found(root) == set(images)


def test_awkward_names_found_with_exact_bytes(tmp_path: Path) -> None:
    root = _root(tmp_path)
    names = [
        b"with space.jpg",
        "caf\u00e9 \u2713 \u6771\u4eac.png".encode(),
        b"bad\xff.jpg",  # not valid UTF-8: must come back byte for byte
        b"deep \xfe folder/inner\xff\xfe.JPEG",
    ]
    for name in names:
        _touch(root, name)
    found = [f.path for f in walk(root, DEFAULT)]
    assert sorted(found) == sorted(os.path.join(root, n) for n in names)
    assert os.path.join(root, b"bad\xff.jpg") in found
    assert all(isinstance(p, bytes) for p in found)
    assert all(os.path.exists(p) for p in found)


def test_size_and_mtime_match_stat(tmp_path: Path) -> None:
    root = _root(tmp_path)
    path = _touch(root, b"sub dir/sized \xff.jpg", b"x" * 12345)
    mtime_ns = 1_600_000_000_123_456_789
    os.utime(path, ns=(mtime_ns, mtime_ns))
    [found] = list(walk(root, DEFAULT))
    st = os.stat(path)
    assert found == FoundFile(path, 12345, st.st_mtime_ns)
    assert found.size == st.st_size
    # the filesystem may round to its own granularity, but never to whole seconds here
    assert abs(found.mtime_ns - mtime_ns) < 1_000_000


def test_walk_is_deterministic_and_nested(tmp_path: Path) -> None:
    root = _root(tmp_path)
    for name in [b"z.jpg", b"a/b/c/deep.jpg", b"a/top.jpg", b"m.png"]:
        _touch(root, name)
    first = [f.path for f in walk(root, DEFAULT)]
    assert first == [f.path for f in walk(root, DEFAULT)]
    assert {os.path.relpath(p, root) for p in first} == {
        b"z.jpg",
        b"a/b/c/deep.jpg",
        b"a/top.jpg",
        b"m.png",
    }


# --- hidden and AppleDouble files ----------------------------------------------------------


@pytest.fixture
def hidden_tree(tmp_path: Path) -> bytes:
    root = _root(tmp_path)
    for name in [
        b"visible.jpg",
        b".hidden.jpg",
        b".hidden dir/inside.jpg",
        b"album/.also hidden.png",
        b"album/shown.png",
        b"._visible.jpg",  # macOS AppleDouble metadata
        b"album/._shown.png",
        b".hidden dir/._inside.jpg",
    ]:
        _touch(root, name)
    return root


def test_hidden_files_and_dirs_skipped_by_default(hidden_tree: bytes) -> None:
    assert _found(hidden_tree) == {b"visible.jpg", b"album/shown.png"}


def test_hidden_included_when_asked_but_appledouble_never(hidden_tree: bytes) -> None:
    assert _found(hidden_tree, WalkOptions(include_hidden=True)) == {
        b"visible.jpg",
        b".hidden.jpg",
        b".hidden dir/inside.jpg",
        b"album/.also hidden.png",
        b"album/shown.png",
    }


def test_hidden_root_itself_is_walked(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / ".hidden root")
    _touch(root, b"a.jpg")
    assert _found(root) == {b"a.jpg"}


# --- exclude globs -------------------------------------------------------------------------


@pytest.fixture
def exclude_tree(tmp_path: Path) -> bytes:
    root = _root(tmp_path)
    for name in [
        b"keep.jpg",
        b"screenshot.png",
        b"album/also.png",
        b"album/kept.jpg",
        b"trash/gone.jpg",
        b"trash/sub dir/deeper.jpg",
        b"keep/trash/not top level.jpg",
        b"raw exports/x.nef",
    ]:
        _touch(root, name)
    return root


def test_exclude_glob_on_name_matches_at_any_depth(exclude_tree: bytes) -> None:
    found = _found(exclude_tree, WalkOptions(exclude=("*.png",)))
    assert found == {
        b"keep.jpg",
        b"album/kept.jpg",
        b"trash/gone.jpg",
        b"trash/sub dir/deeper.jpg",
        b"keep/trash/not top level.jpg",
        b"raw exports/x.nef",
    }


def test_exclude_glob_on_relative_path_prunes_directory(exclude_tree: bytes) -> None:
    found = _found(exclude_tree, WalkOptions(exclude=("trash/*",)))
    # everything under the top-level trash/ goes, nested folders included; a folder that is
    # merely called trash somewhere deeper is a different relative path and stays
    assert found == {
        b"keep.jpg",
        b"screenshot.png",
        b"album/also.png",
        b"album/kept.jpg",
        b"keep/trash/not top level.jpg",
        b"raw exports/x.nef",
    }


def test_exclude_glob_matching_a_directory_name_prunes_it(exclude_tree: bytes) -> None:
    found = _found(exclude_tree, WalkOptions(exclude=("raw*", "album")))
    assert found == {
        b"keep.jpg",
        b"screenshot.png",
        b"trash/gone.jpg",
        b"trash/sub dir/deeper.jpg",
        b"keep/trash/not top level.jpg",
    }


def test_exclude_is_case_sensitive_glob(exclude_tree: bytes) -> None:
    # fnmatchcase: "*.PNG" is a different glob from "*.png" on every platform
    found = _found(exclude_tree, WalkOptions(exclude=("*.PNG",)))
    assert b"screenshot.png" in found


def test_exclude_with_non_utf8_name(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _touch(root, b"bad\xff.jpg")
    _touch(root, b"good.jpg")
    assert _found(root, WalkOptions(exclude=("bad*",))) == {b"good.jpg"}


# --- symlinks ------------------------------------------------------------------------------


def test_symlinked_directory_is_followed(tmp_path: Path) -> None:
    root = _root(tmp_path)
    outside = os.fsencode(tmp_path / "elsewhere")
    _touch(outside, b"linked in.jpg")
    os.symlink(outside, os.path.join(root, b"link"))
    _touch(root, b"own.jpg")
    assert _found(root) == {b"own.jpg", b"link/linked in.jpg"}


def test_file_reachable_through_symlinked_dir_appears_under_both_paths(tmp_path: Path) -> None:
    # walk yields every path a user could open, so a picture in real/ also appears as
    # a_link/... and b_link/...: whichever name sorts first must not hide the others.
    # The pipeline's content hash recognises the copies; the walk does not guess.
    root = _root(tmp_path)
    _touch(root, b"real/pic.jpg")
    os.symlink(b"real", os.path.join(root, b"a_link"))  # sorts before the real folder
    os.symlink(b"real", os.path.join(root, b"z_link"))  # sorts after it
    os.makedirs(os.path.join(root, b"nested"))
    os.symlink(b"../real", os.path.join(root, b"nested/up_link"))
    assert _found(root) == {
        b"real/pic.jpg",
        b"a_link/pic.jpg",
        b"z_link/pic.jpg",
        b"nested/up_link/pic.jpg",
    }
    # walk_all dedups by path only: the same four paths, each once
    found = [os.path.relpath(f.path, root) for f in walk_all([root, root], DEFAULT)]
    assert sorted(found) == sorted(_found(root))


def test_real_dir_reached_after_a_symlink_to_it_is_still_walked(tmp_path: Path) -> None:
    # a shallow symlink found before the deep real folder must not hide the real path
    root = _root(tmp_path)
    _touch(root, b"albums/2023/best/pic.jpg")
    os.symlink(b"albums/2023/best", os.path.join(root, b"favourites"))
    assert _found(root) == {b"albums/2023/best/pic.jpg", b"favourites/pic.jpg"}


def test_symlink_loops_terminate(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _touch(root, b"top.jpg")
    _touch(root, b"a/inner.jpg")
    os.symlink(b"..", os.path.join(root, b"a/up"))  # a -> its parent, the root
    os.symlink(b".", os.path.join(root, b"a/self"))  # a -> itself
    os.symlink(b"../a", os.path.join(root, b"a/again"))  # a -> a, by another route
    assert _found(root) == {b"top.jpg", b"a/inner.jpg"}


def test_mutual_symlink_loop_terminates(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _touch(root, b"x/in x.jpg")
    _touch(root, b"y/in y.jpg")
    os.symlink(b"../y", os.path.join(root, b"x/to_y"))
    os.symlink(b"../x", os.path.join(root, b"y/to_x"))
    # each directory is entered at most once along any one path
    assert _found(root) == {
        b"x/in x.jpg",
        b"x/to_y/in y.jpg",
        b"y/in y.jpg",
        b"y/to_x/in x.jpg",
    }


def test_symlinked_file_and_broken_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _root(tmp_path)
    real = _touch(root, b"real.jpg", b"12345")
    os.symlink(b"real.jpg", os.path.join(root, b"alias.jpg"))
    os.symlink(b"does not exist.jpg", os.path.join(root, b"dangling.jpg"))
    with caplog.at_level(logging.WARNING, logger="indexer.media.discovery"):
        found = {os.path.relpath(f.path, root): f for f in walk(root, DEFAULT)}
    assert set(found) == {b"real.jpg", b"alias.jpg"}
    assert found[b"alias.jpg"].size == os.stat(real).st_size == 5  # the target's stat
    assert "dangling.jpg" in caplog.text


# --- roots ---------------------------------------------------------------------------------


def test_root_that_is_a_single_file(tmp_path: Path) -> None:
    root = _root(tmp_path)
    path = _touch(root, b"only \xff one.JPG", b"abc")
    st = os.stat(path)
    assert list(walk(path, DEFAULT)) == [FoundFile(path, 3, st.st_mtime_ns)]


def test_root_that_is_a_single_non_image_file(tmp_path: Path) -> None:
    path = _touch(_root(tmp_path), b"notes.txt")
    assert list(walk(path, DEFAULT)) == []


def test_missing_root_yields_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = os.fsencode(tmp_path / "no such folder")
    with caplog.at_level(logging.WARNING, logger="indexer.media.discovery"):
        assert list(walk(missing, DEFAULT)) == []
        assert list(walk_all([missing], DEFAULT)) == []
    assert "no such folder" in caplog.text


def test_walk_all_yields_each_path_once_across_overlapping_roots(tmp_path: Path) -> None:
    root = _root(tmp_path)
    a = _touch(root, b"a.jpg")
    b = _touch(root, b"sub/b.png")
    missing = os.path.join(root, b"missing")
    roots = [os.path.join(root, b"sub"), root, b, missing, root]
    found = [f.path for f in walk_all(roots, DEFAULT)]
    assert sorted(found) == sorted([a, b])
    # order follows the roots: the first root's files come first
    assert found[0] == b


def test_walk_all_passes_options_to_every_root(tmp_path: Path) -> None:
    one, two = os.fsencode(tmp_path / "one"), os.fsencode(tmp_path / "two")
    _touch(one, b".h.jpg")
    _touch(two, b"x.png")
    _touch(two, b"y.jpg")
    options = WalkOptions(include_hidden=True, exclude=("*.png",))
    found = {os.path.basename(f.path) for f in walk_all([one, two], options)}
    assert found == {b".h.jpg", b"y.jpg"}
