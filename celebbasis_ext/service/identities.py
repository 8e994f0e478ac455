"""The identities made: the ``.safetensors`` files in the output folder and the likeness record beside them.

``IdentityFolder`` lists them (newest first), deletes one (only inside the
folder: a link pointing elsewhere is refused), checks a new name against them,
and keeps the identities table's Likeness column: the last measured preview
score per name (``LIKENESS_FILE``).
"""

from __future__ import annotations

import datetime
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from ..errors import BadInput
from ..identity import output_path, validate_name
from .records import as_float, as_int, now, read_record, update_record

LIKENESS_FILE = "celebbasis-likeness.json"

FolderSource = Union[str, os.PathLike, Callable[[], Union[str, os.PathLike]]]


class IdentityNotFound(BadInput):
    """The identity to delete or preview has no file in the output folder."""


@dataclass
class NameCheck:
    """The verdict on a name typed by the user: ``level`` is ok, warning, error or empty."""

    level: str
    message: str

    @property
    def ok(self) -> bool:
        return self.level in ("ok", "warning")

    def __str__(self) -> str:
        return self.message


class IdentityFolder:
    """See the module docstring. ``source`` is the folder, or a callable giving it (read anew each time)."""

    def __init__(self, source: FolderSource):
        self.source = source
        self._delete_lock = threading.Lock()

    @property
    def path(self) -> Path:
        source = self.source() if callable(self.source) else self.source
        return Path(source).expanduser().resolve()

    def file_of(self, name: str) -> Path:
        """The existing file of identity ``name``, or ``IdentityNotFound``."""
        folder = self.path
        path = output_path(folder, name)
        if not path.is_file():
            raise IdentityNotFound(f"no identity called '{name}' in {folder}")
        return path

    # -- names ----------------------------------------------------------------------------------
    def check_name(self, name: str, overwrite: bool = False,
                   known_embeddings: Optional[Callable[[], Iterable[str]]] = None,
                   vocabulary: Optional[Callable[[str], bool]] = None) -> NameCheck:
        """Is ``name`` usable as a new token here? Allowed characters, clashes, vocabulary words."""
        name = (name or "").strip()
        if not name:
            return NameCheck("empty", "Type a name for the token, e.g. anna_k")
        try:
            path = output_path(self.path, name)
        except BadInput as error:
            return NameCheck("error", str(error))
        folder = path.parent
        if path.exists():
            if overwrite:
                return NameCheck("warning", f"{path.name} exists and will be replaced")
            return NameCheck("error", f"{path.name} already exists: choose another name or tick overwrite")
        if folder.is_dir():
            for other in folder.glob("*.safetensors"):
                if other.stem.lower() == name.lower():
                    return NameCheck("error", f"'{name}' differs from the existing {other.name} only in case; "
                                              "prompts cannot tell them apart")
        if known_embeddings is not None:
            try:
                known = {str(item).lower() for item in known_embeddings()}
            except Exception:  # noqa: BLE001 - advice only
                known = set()
            if name.lower() in known:
                return NameCheck("error", f"an embedding called '{name}' is already loaded from another folder; "
                                          "choose another name")
        if _is_vocabulary_word(name, vocabulary):
            return NameCheck("warning", f"'{name}' is a word the model already knows; the embedding would shadow "
                                        f"it. A rarer name (e.g. {name}_cb) works better")
        return NameCheck("ok", f"'{name}' is free: type {name} in a prompt after training")

    # -- the files ------------------------------------------------------------------------------
    def list(self) -> list[dict]:
        """Every embedding in the folder, newest first: name, date, base model, likeness, file."""
        folder = self.path
        if not folder.is_dir():
            return []
        likeness = read_record(folder / LIKENESS_FILE)
        rows = []
        for path in folder.glob("*.safetensors"):
            if not path.is_file():
                continue
            metadata, error = _read_metadata(path)
            stat = path.stat()
            created = metadata.get("created") or datetime.datetime.fromtimestamp(
                stat.st_mtime, datetime.timezone.utc).replace(microsecond=0).isoformat()
            measured = likeness.get(path.stem) if isinstance(likeness.get(path.stem), dict) else {}
            rows.append({
                "name": path.stem,
                "date": created,
                "base_model": metadata.get("base_model") or "",
                "family": metadata.get("family") or "",
                "likeness": as_float(measured.get("likeness")),
                "likeness_note": measured.get("note") if measured else None,
                "steps": as_int(metadata.get("steps")),
                "method": metadata.get("method") or "",
                "file": str(path),
                "error": error,
                "_mtime": stat.st_mtime,
            })
        rows.sort(key=lambda row: (-row["_mtime"], row["name"]))
        for row in rows:
            row.pop("_mtime")
        return rows

    def delete(self, name: str) -> Path:
        """Delete ``folder/NAME.safetensors`` (only there) and its likeness record."""
        name = (name or "").strip()
        validate_name(name)
        folder = self.path
        path = output_path(folder, name)  # resolved: a symlink pointing elsewhere is refused
        with self._delete_lock:
            if not path.is_file():
                raise IdentityNotFound(f"no identity called '{name}' in {folder}")
            path.unlink()
        self.forget_likeness(name)
        return path

    # -- the Likeness column --------------------------------------------------------------------
    def record_likeness(self, name: str, value: Optional[float], note: Optional[str] = None) -> None:
        """The last measured score of ``name``'s previews (or, without one, why: e.g. no face in them)."""
        def change(data: dict) -> bool:
            data[name] = {"likeness": value, "measured": now(), **({"note": note} if note else {})}
            return True

        update_record(self.path / LIKENESS_FILE, change)

    def forget_likeness(self, name: str) -> None:
        update_record(self.path / LIKENESS_FILE, lambda data: data.pop(name, None) is not None)


def _is_vocabulary_word(name: str, vocabulary: Optional[Callable[[str], bool]]) -> Optional[bool]:
    if vocabulary is not None:
        return bool(vocabulary(name))
    try:
        from ..clip_tokenizer import clip_tokenizer

        return len(clip_tokenizer()(name, add_special_tokens=False).input_ids) == 1
    except Exception:  # no tokenizer files: the check is advice only
        return None


def _read_metadata(path: Path) -> tuple[dict, Optional[str]]:
    """The header metadata of a .safetensors file, or an empty dict and why (listed with a note, not fatal)."""
    from ..identity import read_metadata

    try:
        return read_metadata(path), None
    except BadInput as error:
        return {}, "unreadable (" + str(error).rsplit("(", 1)[-1]
