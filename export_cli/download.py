"""Saving a FINISHED export's files: to a file or a folder the user names, never above it, never half-written."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from export_cli.api import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from export_cli.output import failure, say
from export_core.vocabulary import EXPIRED, FAILED, FINISHED


def _safe_relative(key: str) -> Path:
    """A key as a relative path that cannot leave the target directory."""
    parts = [p for p in PurePosixPath(key).parts if p not in ("", "/", ".", "..")]
    if not parts:
        raise CliError(f"cannot store key {key!r} as a file", EXIT_REFUSED)
    return Path(*parts)


def _missing_folder(folder: Path) -> CliError:
    return CliError(f"the folder {folder} does not exist; create it first or choose another path", EXIT_USAGE)


def check_target(target: str | None) -> None:
    """Before waiting for an export: PATH is a folder, or the folder it would be written in exists."""
    if target is None:
        return
    path = Path(target)
    if not path.is_dir() and not path.parent.is_dir():
        raise _missing_folder(path.parent)


def _file_target(target: str | None, name: str) -> Path:
    """Where a single-file export goes: `target` (a file, or a folder to put `name` in), or `name` here."""
    if target is None:
        return Path(name)
    path = Path(target)
    if path.is_dir():
        return path / name
    if target.endswith(("/", os.sep)):  # meant as a folder
        raise _missing_folder(path)
    if not path.parent.is_dir():
        raise _missing_folder(path.parent)
    return path


def _folder_target(target: str | None) -> Path:
    """The folder a multi-file export goes under: created when missing, if the folder it is in exists."""
    root = Path(target or ".")
    if root.is_dir():
        return root
    if root.exists():
        raise CliError(f"{root} is a file; a multi-file export is saved under a folder", EXIT_USAGE)
    if not root.parent.is_dir():
        raise _missing_folder(root.parent)
    root.mkdir()
    return root


def download(record: dict[str, Any], target: str | None) -> list[Path]:
    """Every file of a FINISHED export: one file to `target` (or its key's name), several under a folder.

    Nothing is created above `target`: a single file needs its folder to exist; a multi-file
    export creates its folder `target` when the folder that holds it exists, and the keys'
    subfolders under it. The files come from the record's presigned URLs, not through the API.
    """
    if record.get("status") != FINISHED:
        if record.get("status") in (FAILED, EXPIRED):
            raise failure(record)
        raise CliError(f"export {record.get('id')} is {record.get('status')}, not FINISHED yet", EXIT_REFUSED)
    if record.get("path"):
        key = str(record.get("key") or f"{record.get('id')}.csv")
        files = [(str(record["path"]), _file_target(target, _safe_relative(key).name))]
    elif record.get("paths"):
        root = _folder_target(target)
        files = [(str(p["url"]), root / _safe_relative(str(p["key"]))) for p in record["paths"]]
    else:
        raise CliError(f"export {record.get('id')} has no file to download (deleted?)", EXIT_REFUSED)
    for url, path in files:
        path.parent.mkdir(parents=True, exist_ok=True)  # a key's subfolders, under the target only
        partial = path.with_name(path.name + ".part")
        try:
            with httpx.stream("GET", url, timeout=60.0) as response:
                if not response.is_success:
                    raise CliError(f"download of {path.name} failed (HTTP {response.status_code})", EXIT_REFUSED)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise CliError(f"download of {path.name} failed ({type(exc).__name__})", EXIT_UNREACHABLE) from None
        partial.replace(path)  # never a half-written file under the final name
        say(f"saved {path}")
    return [path for _, path in files]
