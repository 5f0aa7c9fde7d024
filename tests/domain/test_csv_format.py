"""The cell rules (SPEC §3) on whole columns, whichever way csv_format takes through them.

A column's cells are fixed in place, all at once, or once per distinct value when values repeat
(`_patch`, `_fix_distinct`); every way must give what the rules, written out in plain Python in
tests/pipelines/expected.py, give for each cell.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from export_core.csv_format import REPEAT_SAMPLE, format_cells
from tests.pipelines.expected import cell

# Few distinct values, so that columns repeat them (or not), with every character the rules act on.
WORDS = st.text(st.sampled_from(["a", "=", "+", "-", "@", "\t", "\r", "\n", ",", ";", '"', "é"]), max_size=4)


def quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',;"\r\n') else text


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), WORDS), min_size=1, max_size=6),
    st.lists(st.integers(0, 5), min_size=1, max_size=2 * REPEAT_SAMPLE),
    st.lists(st.lists(st.one_of(st.none(), WORDS), max_size=3), min_size=1, max_size=4),
)
def test_every_cell_follows_the_rules_whether_values_repeat_or_not(
    words: list[str | None], picks: list[int], lists: list[list[str | None]]
):
    texts = [words[i % len(words)] for i in picks]
    items = [lists[i % len(lists)] for i in picks]
    frame = pl.DataFrame({"text": texts, "items": items}, schema={"text": pl.String, "items": pl.List(pl.String)})
    cells = format_cells(frame, ("text", "items", "absent"))
    assert cells.get_column("text").fill_null("").to_list() == [quoted(cell(t)) for t in texts]
    assert cells.get_column("items").fill_null("").to_list() == [quoted(cell(i)) for i in items]
    assert cells.get_column("absent").fill_null("").to_list() == [""] * len(picks)
