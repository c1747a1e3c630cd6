"""Safe tar extraction, with and without extraction filters (bookworm's 3.11.2 has none)."""

from __future__ import annotations

import io
import tarfile

import pytest

from verifier import archive
from verifier.model import VerifyError


def _tar(entries: dict[str, str], links: dict[str, str] | None = None) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in entries.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


@pytest.fixture(params=["filters", "no-filters"])
def python_kind(request, monkeypatch):
    if request.param == "no-filters":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no extraction filters")
    return request.param


def test_extracts_files_and_inner_links(tmp_path, python_kind):
    tar = _tar({"xen/a.c": "int a;\n", "xen/sub/b.h": "#define B\n"}, {"xen/l": "a.c"})
    archive.safe_extractall(tar, tmp_path, label="t")
    assert (tmp_path / "xen/a.c").read_text() == "int a;\n"
    assert (tmp_path / "xen/l").resolve() == (tmp_path / "xen/a.c").resolve()


@pytest.mark.parametrize("entries,links", [
    ({"../evil": "x"}, {}),
    ({"/abs": "x"}, {}),
    ({}, {"xen/out": "../../etc/passwd"}),
    ({}, {"xen/abs": "/etc/passwd"}),
])
def test_refuses_what_leaves_the_tree(tmp_path, python_kind, entries, links):
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(VerifyError, match="unsafe member refused"):
        archive.safe_extractall(_tar(entries, links), dest, label="t")
    assert not (tmp_path / "evil").exists()
