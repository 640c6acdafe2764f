"""Template stores shipped with the core: a directory of YAML files, and an in-memory dict.

Layout of a directory store (a project folder, see `dee.project`)::

    templates/<template_id>.yaml   email: subject (optional), text, html (optional)
    scripts/<script_id>.yaml       voice: kind "script" (greeting, steps) or "voicemail" (tts)

Lookups read files once, at construction: a store is a snapshot, so every run in a process sees
the same content and a changed file is picked up by a new store (a restart or a reload), which
replay then compares against what was sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

EMAIL, VOICE, VOICEMAIL = "email", "voice", "voicemail"


class MemoryTemplateStore:
    """Templates held in a dict: `{kind: {template_id: document}}`."""

    def __init__(self, documents: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None, name: str = "memory") -> None:
        self.name = name
        self._docs = {kind: dict(docs) for kind, docs in (documents or {}).items()}

    def get(self, kind: str, template_id: str) -> Mapping[str, Any] | None:
        return self._docs.get(kind, {}).get(template_id)

    def ids(self, kind: str) -> list[str]:
        return sorted(self._docs.get(kind, {}))

    def with_document(self, kind: str, template_id: str, document: Mapping[str, Any]) -> MemoryTemplateStore:
        """A copy with one document added or replaced (stores are never edited in place)."""
        docs = {k: dict(v) for k, v in self._docs.items()}
        docs.setdefault(kind, {})[template_id] = dict(document)
        return MemoryTemplateStore(docs, self.name)


def load_directory(root: str | os.PathLike[str]) -> MemoryTemplateStore:
    """Read `templates/` and `scripts/` under `root` into a store named after the directory."""
    base = Path(root)
    docs: dict[str, dict[str, Mapping[str, Any]]] = {EMAIL: {}, VOICE: {}, VOICEMAIL: {}}
    for path in sorted((base / "templates").glob("*.y*ml")):
        docs[EMAIL][path.stem] = _read(path)
    for path in sorted((base / "scripts").glob("*.y*ml")):
        doc = _read(path)
        docs[VOICEMAIL if doc.get("kind") == "voicemail" else VOICE][path.stem] = doc
    return MemoryTemplateStore(docs, name=f"directory:{base}")


def _read(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a template file must hold a mapping")
    return doc


class ChainedTemplateStore:
    """Several stores asked in order; the first that knows an id answers."""

    def __init__(self, stores: Sequence[Any]) -> None:
        self.stores = list(stores)
        self.name = "+".join(s.name for s in self.stores) or "empty"

    def get(self, kind: str, template_id: str) -> Mapping[str, Any] | None:
        for store in self.stores:
            doc: Mapping[str, Any] | None = store.get(kind, template_id)
            if doc is not None:
                return doc
        return None

    def ids(self, kind: str) -> list[str]:
        return sorted({i for s in self.stores for i in s.ids(kind)})

