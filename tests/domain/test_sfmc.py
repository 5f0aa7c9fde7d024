"""The SFMC tables (SPEC §5) and the locale normaliser, directly."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_core.settings import Settings
from export_core.sfmc import LOCALE, SfmcConfigError, load_sfmc_config
from export_pipelines.exports.reminder_email import locale_expr, region_mid_exprs

DEFAULT = load_sfmc_config()

SPEC_MIDS = {
    "US": "7222895",
    "CA": "7222895",
    "MX": "523000091",
    "GB": "1314420",
    "IE": "1362441",
    "DE": "1347780",
    "AU": "1341602",
}


def test_defaults_are_the_spec_values():
    for country in ("US", "CA", "MX"):
        assert DEFAULT.region_for(country) == "NA"
    for country in ("GB", "IE"):
        assert DEFAULT.region_for(country) == "UK"
    for country, mid in SPEC_MIDS.items():
        assert DEFAULT.mid_for(country, DEFAULT.region_for(country)) == mid
    assert DEFAULT.regions["NA"].prefix == "Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03"
    assert DEFAULT.regions["LNE"].prefix.startswith("Livenation/518008883/")
    assert DEFAULT.regions["LNE"].mid == "518008883"
    assert DEFAULT.lne_campaign_ids == frozenset(), "LNE is off unless configured"


@pytest.mark.parametrize(
    ("country", "region", "mid"),
    [
        ("DE", "NA", "1347780"),  # another country: NA folder, its own MID
        ("AU", "NA", "1341602"),
        ("FR", "NA", "7222895"),  # no MID known: the region's
        (None, "NA", "7222895"),
        (" gb ", "UK", "1314420"),
        ("ie", "UK", "1362441"),
    ],
)
def test_other_countries_go_to_na_with_their_own_mid_if_known(country: str | None, region: str, mid: str):
    assert DEFAULT.region_for(country) == region
    assert DEFAULT.mid_for(country, region) == mid


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("en_US", "en-us"),
        ("EN-us", "en-us"),
        ("EN_us", "en-us"),
        ("en-mx", "en-us"),
        ("en_MX", "en-us"),
        ("en-uk", "en-gb"),
        ("en-nz", "en-au"),
        ("  en-GB\t", "en-gb"),
        ("fr_CA", "fr-ca"),
        ("es-419", "es-419"),
        ("de", "de"),
        (None, "en-us"),
        ("", "en-us"),
        ("english", "en-us"),  # not a locale tag
        ("../../etc", "en-us"),  # never a path inside the ZIP
        ("fr ca", "en-us"),  # not a tag: the default, not a guess
        ("zh-Hant-TW", "zh-hant-tw"),
    ],
)
def test_locale_normalisation_examples(raw: str | None, expected: str):
    assert DEFAULT.normalise_locale(raw) == expected


locale_like = st.builds(
    lambda lang, sep, region, pad: f"{pad}{lang}{sep}{region}{pad}",
    st.from_regex(r"[A-Za-z]{2,3}", fullmatch=True),
    st.sampled_from(["-", "_"]),
    st.from_regex(r"[A-Za-z0-9]{2,4}", fullmatch=True),
    st.sampled_from(["", " ", "\t"]),
)
any_locale = st.one_of(
    locale_like, st.text(max_size=12), st.sampled_from(["en-uk", "EN_MX", "en-NZ", "EN_us"]), st.none()
)


@given(any_locale)
def test_normalised_locales_are_sfmc_spelled_safe_and_stable(raw: str | None):
    result = DEFAULT.normalise_locale(raw)
    assert LOCALE.fullmatch(result), "lower case, hyphens, a safe file name"
    assert DEFAULT.normalise_locale(result) == result, "idempotent"


@given(locale_like)
def test_case_and_separator_do_not_matter(raw: str):
    assert DEFAULT.normalise_locale(raw.upper()) == DEFAULT.normalise_locale(raw.lower().replace("_", "-"))


@settings(max_examples=50, deadline=None)
@given(st.lists(any_locale, max_size=30))
def test_the_polars_expression_agrees_with_the_table(values: list[str | None]):
    frame = pl.DataFrame({"raw": values}, schema={"raw": pl.String})
    got = frame.select(locale_expr(pl.col("raw"), DEFAULT).alias("x"))["x"].to_list()
    assert got == [DEFAULT.normalise_locale(v) for v in values]


@pytest.mark.parametrize("lne_campaign", [False, True])
@settings(max_examples=25, deadline=None)
@given(countries=st.lists(st.one_of(st.sampled_from(["US", "MX", "GB", "IE", "DE", "AU", "FR", "NZ"]), st.none())))
def test_the_polars_region_and_mid_agree_with_the_tables(lne_campaign: bool, countries: list[str | None]):
    # GB routed to the LNE region by country: its rows take LNE's MID, not GB's.
    config = load_sfmc_config(json.dumps({"countryRegions": {"GB": "LNE"}, "lneCampaignIds": ["lne"]}))
    campaign = "lne" if lne_campaign else "other"
    region, mid = region_mid_exprs(pl.col("c"), config, config.is_lne(campaign))
    got = pl.DataFrame({"c": countries}, schema={"c": pl.String}).select(region.alias("r"), mid.alias("m")).rows()
    want = [(config.region_for(c, campaign), config.mid_for(c, config.region_for(c, campaign))) for c in countries]
    assert got == want


def test_override_file_extends_replaces_and_removes(tmp_path: Path):
    override = {
        "regions": {
            "APAC": {"mid": "1341602", "prefix": "Ticketmaster/1341602/TMDemandMgmt/DM_ArtistPresale_V03"},
            "UK": {"prefix": "Ticketmaster/1314420/Custom/DM_UK"},
        },
        "countryRegions": {"AU": "APAC", "NZ": "APAC"},
        "countryMids": {"NZ": "1341602"},
        "locales": {"EN_ie": "en-GB", "en-mx": None},
        "wording": {"fanclub": "Members Presale"},
    }
    path = tmp_path / "sfmc.json"
    path.write_text(json.dumps(override))
    config = load_sfmc_config(str(path))
    assert config.region_for("AU") == "APAC" and config.mid_for("NZ", "APAC") == "1341602"
    assert config.regions["UK"] == type(config.regions["UK"])("UK", "1314420", "Ticketmaster/1314420/Custom/DM_UK")
    assert config.region_for("US") == "NA" and config.region_for("GB") == "UK", "defaults kept"
    assert config.normalise_locale("en_IE") == "en-gb"
    assert config.normalise_locale("en-mx") == "en-mx", "null removes a rule"
    assert config.normalise_locale("en-uk") == "en-gb"
    assert config.presale_name("fanclub") == "Members Presale"
    assert config.presale_name("standard") == "Verified Fan Presale"
    # Inline JSON works as well (handy for a container's environment).
    assert load_sfmc_config(json.dumps(override)).region_for("NZ") == "APAC"


def test_locale_rule_chains_are_resolved_so_normalising_is_idempotent():
    config = load_sfmc_config(json.dumps({"locales": {"en-au": "en-gb"}, "defaultLocale": "en-nz"}))
    assert config.normalise_locale("en-nz") == "en-gb"
    assert config.normalise_locale(None) == "en-gb"
    assert config.normalise_locale("en-gb") == "en-gb"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"locale": {}}, "unknown key"),
        ({"countryMids": {"DE": "12ab"}}, "countryMids.DE"),
        ({"countryRegions": {"FR": "EU"}}, "unknown region 'EU'"),
        ({"regions": {"NA": {"prefix": "../evil"}}}, "regions.NA.prefix"),
        ({"regions": {"NA": None}}, "unknown region 'NA'"),
        ({"locales": {"en-a": "en-b", "en-b": "en-a"}}, "cycle"),
        ({"locales": {"en-gb": "not a locale"}}, "locale rule"),
        ({"lneCampaignIds": "123"}, "lneCampaignIds"),
        ({"wording": {"standard": None}}, "wording"),
    ],
)
def test_invalid_overrides_are_refused_with_the_key_named(override: dict, message: str):
    with pytest.raises(SfmcConfigError, match=message):
        load_sfmc_config(json.dumps(override))


def test_unreadable_override_is_refused(tmp_path: Path):
    with pytest.raises(SfmcConfigError, match="cannot read"):
        load_sfmc_config(str(tmp_path / "missing.json"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(SfmcConfigError, match="JSON object"):
        load_sfmc_config(str(tmp_path / "list.json"))


def test_lne_switch_sends_a_campaign_through_live_nation():
    config = load_sfmc_config(json.dumps({"lneCampaignIds": ["c-lne"]}))
    assert config.region_for("GB", "c-lne") == "LNE"
    assert config.mid_for("GB", "LNE") == "518008883"
    assert config.region_for("GB", "other") == "UK"


def test_settings_read_sfmc_config_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SFMC_CONFIG", '{"defaultLocale": "en-gb"}')
    assert load_sfmc_config(Settings.from_env().sfmc_config).normalise_locale(None) == "en-gb"
    monkeypatch.delenv("SFMC_CONFIG")
    assert Settings.from_env().sfmc_config is None
