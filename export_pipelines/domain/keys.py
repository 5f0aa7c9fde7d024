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
