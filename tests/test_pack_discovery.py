"""Packs are found, not listed: a folder under verifier/packs that exports PACK is a pack,
and so is an installed distribution's ``xen_verify.packs`` entry point."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

import verifier.packs as packs
from verifier.model import VerifyError
from verifier.packs import Pack, all_packs


@pytest.fixture
def fresh_registry(monkeypatch):
    packs._discover.cache_clear()
    yield monkeypatch
    packs._discover.cache_clear()
    for name in [m for m in sys.modules if m.startswith("verifier.packs.toy_")]:
        del sys.modules[name]


def _toy_folder(root, name: str, body: str) -> None:
    d = root / name
    d.mkdir()
    (d / "__init__.py").write_text(textwrap.dedent(body))


def test_a_new_folder_is_a_pack_without_any_list_edited(tmp_path, fresh_registry):
    _toy_folder(tmp_path, "toy_pack", """
        from verifier.packs import Pack
        PACK = Pack(name="aaa-toy", title="a toy", roles=(), functions=("toy_fn",),
                    keywords=(), checks=(), run=lambda *a, **k: [])
    """)
    _toy_folder(tmp_path, "toy_helpers", "X = 1\n")  # a folder without PACK is not a pack
    fresh_registry.setattr(packs, "__path__", [*packs.__path__, str(tmp_path)])
    found = all_packs()
    names = [p.name for p in found]
    assert names == sorted(names)
    assert "aaa-toy" in names and "m2p-strict" in names
    assert len(names) == 2


class _EntryPoint:
    def __init__(self, value, obj):
        self.name, self.value, self._obj = "third", value, obj

    def load(self):
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


def test_entry_points_add_packs_and_a_broken_one_is_a_clear_error(fresh_registry):
    toy = Pack(name="zzz-third", title="installed", roles=(), functions=(), keywords=(),
               checks=(), run=lambda *a, **k: [])
    fresh_registry.setattr(importlib.metadata, "entry_points",
                           lambda group: [_EntryPoint("third_pack:PACK", toy)])
    assert [p.name for p in all_packs()][-1] == "zzz-third"

    packs._discover.cache_clear()
    fresh_registry.setattr(importlib.metadata, "entry_points",
                           lambda group: [_EntryPoint("third_pack:PACK", ImportError("no"))])
    with pytest.raises(VerifyError,
                       match=r"entry point third \(third_pack:PACK\) does not load: no"):
        all_packs()

    packs._discover.cache_clear()
    fresh_registry.setattr(importlib.metadata, "entry_points",
                           lambda group: [_EntryPoint("third_pack:PACK", object())])
    with pytest.raises(VerifyError, match="is not a Pack"):
        all_packs()
