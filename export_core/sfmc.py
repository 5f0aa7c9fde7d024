"""Salesforce Marketing Cloud tables for the reminder e-mail exports (SPEC §5): data, not code.

Regions (folder in the ZIP, default MID, file prefix in the SFMC bucket), country → region,
country → MID, the locale normalisation table, the Live Nation (LNE) switch and the wording
per campaign type. `DEFAULTS` holds SPEC §5's values; the `SFMC_CONFIG` variable (a JSON file
path, or the JSON itself) is merged over them, so a new country, MID, region, prefix or locale
rule is configuration. docs/reminder-email.md describes every key.

Merge rule: objects merge key by key (recursively), `null` removes a key, anything else
replaces. The merged result is validated as a whole; an invalid table is refused with a
message naming the key, never half-applied.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Region → its SFMC business unit (default MID of its rows) and the key prefix its
    # automated files are written under in the SFMC bucket. Only NA's prefix is fixed by
    # SPEC §5; UK's and the rest of LNE's follow the same layout and are configuration.
    "regions": {
        "NA": {"mid": "7222895", "prefix": "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03"},
        "UK": {"mid": "1314420", "prefix": "Ticketmaster/1314420/TMDemandMgmt/DM_ArtistPresale_V03"},
        "LNE": {"mid": "518008883", "prefix": "Livenation/518008883/LNDemandMgmt/DM_ArtistPresale_V03"},
    },
    # Fan's country (ISO-2) → region; any other country goes to `defaultRegion`.
    "countryRegions": {"US": "NA", "CA": "NA", "MX": "NA", "GB": "UK", "IE": "UK"},
    "defaultRegion": "NA",
    # Fan's country → SFMC MID; a country not listed gets its region's MID.
    "countryMids": {
        "US": "7222895",
        "CA": "7222895",
        "MX": "523000091",
        "GB": "1314420",
        "IE": "1362441",
        "DE": "1347780",
        "AU": "1341602",
    },
    # Applied after the canonical form (lower case, `_` → `-`); keys may be written in any case.
    "locales": {"en-mx": "en-us", "en-uk": "en-gb", "en-nz": "en-au"},
    # For a fan without a usable locale (missing, or not a locale tag at all).
    "defaultLocale": "en-us",
    # Campaigns whose reminder e-mails go out through Live Nation's business unit: all their
    # rows use region `lneRegion` (its folder, MID and prefix). None by default.
    "lneCampaignIds": [],
    "lneRegion": "LNE",
    # Campaign type → the presale's name in the e-mail (`presaleName` column).
    "wording": {"standard": "Verified Fan Presale", "fanclub": "Fan Club Presale"},
}

_REGION_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MID = re.compile(r"[0-9]{1,12}")
_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_COUNTRY = re.compile(r"[A-Z]{2}")
# What a locale may look like before normalisation (ASCII only, so lower-casing is the same
# everywhere) and after it (also what makes it a safe file name inside the ZIP).
RAW_LOCALE = re.compile(r"[A-Za-z0-9_-]{1,35}")
LOCALE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
LOCALE_STRIP = " \t\r\n"


class SfmcConfigError(ValueError):
    """SFMC_CONFIG is unreadable or would produce an invalid table."""


@dataclass(frozen=True)
class Region:
    name: str
    mid: str
    prefix: str


@dataclass(frozen=True)
class SfmcConfig:
    regions: Mapping[str, Region]
    country_regions: Mapping[str, str]
    default_region: str
    country_mids: Mapping[str, str]
    locales: Mapping[str, str]  # canonical → SFMC locale, chains already resolved
    default_locale: str
    lne_campaign_ids: frozenset[str]
    lne_region: str
    wording: Mapping[str, str]

    def region_for(self, country: str | None, campaign_id: str | None = None) -> str:
        if campaign_id is not None and campaign_id in self.lne_campaign_ids:
            return self.lne_region
        return self.country_regions.get(canonical_country(country) or "", self.default_region)

    def mid_for(self, country: str | None, region: str) -> str:
        """Live Nation's rows all use its business unit; others their country's MID, else the region's."""
        if region == self.lne_region:
            return self.regions[region].mid
        return self.country_mids.get(canonical_country(country) or "", self.regions[region].mid)

    def normalise_locale(self, raw: str | None) -> str:
        """SFMC's spelling of a fan's locale: `EN_us` → `en-us`, then the table (`en-uk` → `en-gb`)."""
        canonical = canonical_locale(raw)
        if canonical is None:
            return self.default_locale
        mapped = self.locales.get(canonical, canonical)
        return mapped if LOCALE.fullmatch(mapped) else self.default_locale

    def presale_name(self, campaign_type: str | None) -> str:
        return self.wording.get(campaign_type or "standard", self.wording["standard"])

    def is_lne(self, campaign_id: str) -> bool:
        return campaign_id in self.lne_campaign_ids


def canonical_country(country: str | None) -> str | None:
    if country is None:
        return None
    return country.strip(LOCALE_STRIP).upper() or None


def canonical_locale(raw: str | None) -> str | None:
    """Lower case with hyphens, or None when the value is not shaped like a locale tag at all."""
    if raw is None:
        return None
    stripped = raw.strip(LOCALE_STRIP)
    if not RAW_LOCALE.fullmatch(stripped):
        return None
    return stripped.lower().replace("_", "-")


def load_sfmc_config(source: str | None = None) -> SfmcConfig:
    """The defaults, with `source` (SFMC_CONFIG: a JSON file path or inline JSON) merged over them."""
    data = copy.deepcopy(DEFAULTS)
    if source and source.strip():
        data = merge(data, _read_override(source.strip()))
    return _build(data)


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key by key, `null` removes a key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_override(source: str) -> dict[str, Any]:
    try:
        text = source if source.startswith("{") else Path(source).read_text(encoding="utf-8")
        override = json.loads(text)
    except (OSError, ValueError) as exc:
        raise SfmcConfigError(f"SFMC_CONFIG: cannot read {source[:200]!r}: {exc}") from exc
    if not isinstance(override, dict):
        raise SfmcConfigError("SFMC_CONFIG must be a JSON object")
    unknown = sorted(set(override) - set(DEFAULTS))
    if unknown:
        raise SfmcConfigError(f"SFMC_CONFIG: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return override


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise SfmcConfigError(f"SFMC config: {key} must be an object")
    return value


def _text(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SfmcConfigError(f"SFMC config: invalid {what}: {value!r}")
    return value


def _build(data: dict[str, Any]) -> SfmcConfig:
    regions: dict[str, Region] = {}
    for name, region in _mapping(data, "regions").items():
        _text(name, _REGION_NAME, "region name")
        if not isinstance(region, dict):
            raise SfmcConfigError(f"SFMC config: regions.{name} must be an object with mid and prefix")
        mid = _text(region.get("mid"), _MID, f"regions.{name}.mid")
        prefix = _text(region.get("prefix"), _PREFIX, f"regions.{name}.prefix")
        if ".." in prefix.split("/"):
            raise SfmcConfigError(f"SFMC config: invalid regions.{name}.prefix: {prefix!r}")
        regions[name] = Region(name, mid, prefix)

    def region_name(value: Any, what: str) -> str:
        if value not in regions:
            raise SfmcConfigError(f"SFMC config: {what} names unknown region {value!r}; regions: {sorted(regions)}")
        return str(value)

    country_regions = {
        _text(str(c).upper(), _COUNTRY, "country code"): region_name(r, f"countryRegions.{c}")
        for c, r in _mapping(data, "countryRegions").items()
    }
    country_mids = {
        _text(str(c).upper(), _COUNTRY, "country code"): _text(m, _MID, f"countryMids.{c}")
        for c, m in _mapping(data, "countryMids").items()
    }

    locales: dict[str, str] = {}
    for raw_from, raw_to in _mapping(data, "locales").items():
        source, target = canonical_locale(raw_from), canonical_locale(raw_to) if isinstance(raw_to, str) else None
        if source is None or target is None or not LOCALE.fullmatch(target):
            raise SfmcConfigError(f"SFMC config: invalid locale rule {raw_from!r} → {raw_to!r}")
        locales[source] = target
    default_locale = canonical_locale(data.get("defaultLocale"))
    if default_locale is None or not LOCALE.fullmatch(default_locale):
        raise SfmcConfigError(f"SFMC config: invalid defaultLocale {data.get('defaultLocale')!r}")

    lne_ids = data.get("lneCampaignIds")
    if not isinstance(lne_ids, list) or not all(isinstance(i, str) for i in lne_ids):
        raise SfmcConfigError("SFMC config: lneCampaignIds must be a list of campaign ids (strings)")
    wording = _mapping(data, "wording")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in wording.items()) or "standard" not in wording:
        raise SfmcConfigError("SFMC config: wording must map campaign types to text and include 'standard'")

    locales = _resolve_chains(locales)
    return SfmcConfig(
        regions=regions,
        country_regions=country_regions,
        default_region=region_name(data.get("defaultRegion"), "defaultRegion"),
        country_mids=country_mids,
        locales=locales,
        default_locale=locales.get(default_locale, default_locale),
        lne_campaign_ids=frozenset(lne_ids),
        lne_region=region_name(data.get("lneRegion"), "lneRegion"),
        wording=dict(wording),
    )


def _resolve_chains(rules: dict[str, str]) -> dict[str, str]:
    """`a → b` and `b → c` become `a → c`, so normalising twice changes nothing; cycles are refused."""
    resolved: dict[str, str] = {}
    for start in rules:
        seen = [start]
        target = rules[start]
        while target in rules and target != rules[target]:
            if target in seen:
                raise SfmcConfigError(f"SFMC config: locale rules form a cycle: {' → '.join([*seen, target])}")
            seen.append(target)
            target = rules[target]
        resolved[start] = target
    return resolved
