"""S3 keys: user data (campaign names and ids) never reaches a key unescaped."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse

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


# -- the file name a download saves under (RFC 6266 / RFC 5987) ------------------------------

MAX_FILE_NAME_BYTES = 255  # what common file systems (ext4, APFS, NTFS in UTF-16 units) hold per name
# RFC 5987 attr-char minus what urllib.parse.quote always keeps (letters, digits, `_.-~`).
_ATTR_CHAR_EXTRA = "!#$&+^`|"
_NOT_IN_A_FILE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")  # control characters, path separators


def display_file_name(template: str, campaign_name: str) -> str:
    """The file name users see: `template` with `{campaign}` replaced by the campaign's own name.

    Unlike the key (safe_key_part), the name keeps accents, emoji and punctuation. The campaign
    part is shortened, never the rest of the template, so the name fits MAX_FILE_NAME_BYTES.
    """
    before, marker, after = template.partition("{campaign}")
    if not marker:
        return template
    budget = MAX_FILE_NAME_BYTES - len((before + after).encode())
    return before + _utf8_prefix(campaign_name, max(budget, 1)) + after


def content_disposition(file_name: str) -> str:
    """`attachment; filename="<ASCII>"; filename*=UTF-8''<percent-encoded>` for `file_name` (RFC 6266).

    Path separators and control characters (CR/LF included) become `_` in both forms, so the
    header can never be split and a browser never sees a directory. `filename*` keeps every
    other character, percent-encoded; the ASCII fallback, for clients without RFC 5987, strips
    accents (é → e) and turns whatever else is not printable ASCII, `"`, `\\` and `%`, into `_`.
    Both are cut to MAX_FILE_NAME_BYTES, keeping the extension. The result is pure ASCII.
    """
    name = _fit(_NOT_IN_A_FILE_NAME.sub("_", file_name)) or "_"
    fallback = _fit(_ascii_fallback(name)) or "_"
    encoded = urllib.parse.quote(name, safe=_ATTR_CHAR_EXTRA, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` (whole code points) that is at most `max_bytes` in UTF-8."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def _fit(name: str) -> str:
    """`name` cut to MAX_FILE_NAME_BYTES of UTF-8, shortening the stem and keeping a short extension."""
    if len(name.encode()) <= MAX_FILE_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        return _utf8_prefix(name, MAX_FILE_NAME_BYTES)
    return _utf8_prefix(stem, MAX_FILE_NAME_BYTES - len(extension.encode()) - 1) + "." + extension


def _ascii_fallback(name: str) -> str:
    """Printable ASCII only: accents stripped, each run of anything else one `_`."""
    out: list[str] = []
    for char in name:
        if " " <= char <= "~" and char not in '"\\%':
            out.append(char)
            continue
        plain = "".join(c for c in unicodedata.normalize("NFKD", char) if " " <= c <= "~" and c not in '"\\%')
        if plain:
            out.append(plain)
        elif not out or out[-1] != "\x00":
            out.append("\x00")  # a placeholder, so a run of replaced characters becomes one `_`
    return "".join(out).replace("\x00", "_")
