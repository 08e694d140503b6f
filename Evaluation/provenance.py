"""What a dataset's figures were computed from, so that no stale figure is shown: the record an evaluation writes
beside its figures in ``metrics_<task>.json`` (``"source"``), and the check that the maps are still those.

The maps are identified by their folder's content: every file under ``<results-dir>/<EXP>/<DATASET>/`` (recursively;
names, sizes and a SHA-256 over names and bytes), so regenerating the maps with another model, copying other maps
over or deleting some changes the record, while touching files without changing them does not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["maps_record", "source_record", "maps_changed"]


def maps_record(folder: Path) -> dict:
    """``{'files': N, 'bytes': total size, 'sha256': digest of every relative name and content}`` of the files
    under ``folder`` (sorted by relative path; an absent folder has no files)."""
    digest, count, size = hashlib.sha256(), 0, 0
    files = sorted(Path(root, name) for root, _, names in os.walk(folder) for name in names)
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:  # vanished or unreadable: recorded as such, so that it differs from a readable one
            data = b"\0unreadable"
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + len(data).to_bytes(8, "little"))
        digest.update(data)
        count, size = count + 1, size + len(data)
    return {"files": count, "bytes": size, "sha256": digest.hexdigest()}


def source_record(maps_folder: Path, maps: dict, gt: str, datadir: Path, test_lst: Path | None = None) -> dict:
    """The ``"source"`` entry of a dataset's figures: its maps (``maps``: their `maps_record`, with their folder
    relative to the experiment folder that holds the JSON file, so that a copied experiment keeps a true record),
    the GT it was compared with (``gt``: a folder, or the list file's annotation folders) and what re-evaluating it
    takes (the data folder and, for videos, the list file)."""
    record = {"maps": {"folder": Path(maps_folder).name, **maps}, "gt": gt,
              "datadir": str(Path(datadir).resolve())}
    if test_lst is not None:
        record["test_lst"] = str(Path(test_lst).resolve())
    return record


def maps_changed(entry: dict, now: dict) -> str | None:
    """Why a dataset's recorded figures no longer describe the maps whose `maps_record` is ``now`` (one phrase), or
    None when they still do. An entry without a record (written before records were kept) cannot be trusted
    either."""
    recorded = entry.get("source", {}).get("maps")
    if not isinstance(recorded, dict):
        return "the figures do not record which maps they were computed from (an older evaluation)"
    if all(recorded.get(key) == now[key] for key in ("files", "bytes", "sha256")):
        return None
    if recorded.get("files") != now["files"]:
        return f"{recorded.get('files')} map files then, {now['files']} now"
    return "the maps changed since (other bytes)"
