"""S3 keys: user data (campaign names and ids) never reaches a key unescaped."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9 ._()-]+")


def safe_key_part(value: str, *, max_length: int = 100) -> str:
    """Keep letters, digits, space and ._()- ; everything else becomes `_`. Never empty or dot-only."""
    cleaned = _UNSAFE.sub("_", value).strip(" .")[:max_length].strip(" .")
    return cleaned or "_"


def export_key(export_type: str, campaign_id: str, export_id: str, file_name: str) -> str:
    """Unique to the export, so a re-run overwrites its own file and nothing else."""
    return f"{export_type}/{safe_key_part(campaign_id)}/{safe_key_part(export_id)}/{file_name}"


def unique_file_names(named: list[tuple[str, str | None]]) -> dict[str, str]:
    """Key-safe, distinct file names (ignoring case) for (id, name) pairs, named after `name`.

    A name two ids share gets the id as a suffix; an id without a name is named after the id.
    """
    base = {ident: safe_key_part(name if name else ident) for ident, name in named}
    taken: dict[str, int] = {}
    for name in base.values():
        taken[name.casefold()] = taken.get(name.casefold(), 0) + 1
    names = {
        ident: name if taken[name.casefold()] == 1 else safe_key_part(f"{name} ({ident})", max_length=150)
        for ident, name in base.items()
    }
    seen: set[str] = set()
    for ident in sorted(names):  # a suffixed name can still collide: number what is left
        candidate, n = names[ident], 1
        while candidate.casefold() in seen:
            n += 1
            candidate = f"{names[ident]} ({n})"
        names[ident] = candidate
        seen.add(candidate.casefold())
    return names
