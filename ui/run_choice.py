"""The chosen run, shared by the pages and kept in the URL (``?run=<run id>``) so a link to a view
opens the same run and the choice survives a page switch.

``pick_run(entries, key, label="Run") -> RunEntry``: a select box of the runs. It opens on, in order:
the run in the URL's query parameters, the run chosen last in this session (on any page), or
``core.catalog.default_entry`` (the newest non-sweep run with the best health). A choice is written
back to the URL and to the session."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core import catalog
from core.catalog import RunEntry

Preference = Callable[[RunEntry], bool] | None
QUERY_PARAM = "run"
LAST_CHOICE = "chosen_run"  # session key shared by every page (not a widget key: it survives page switches)


def _remember(run_id: str) -> None:
    st.session_state[LAST_CHOICE] = run_id
    if st.query_params.get(QUERY_PARAM) != run_id:
        st.query_params[QUERY_PARAM] = run_id


def _on_change(key: str) -> None:
    _remember(str(st.session_state[key]))


def wanted_run(ids: list[str], entries: list[RunEntry], prefer: Preference = None) -> str:
    """The run id to show: URL, then this session's last choice, then the default."""
    for candidate in (st.query_params.get(QUERY_PARAM), st.session_state.get(LAST_CHOICE)):
        if candidate in ids:
            return str(candidate)
    return catalog.default_entry(entries, prefer).run_id


def pick_run(entries: list[RunEntry], key: str, label: str = "Run", prefer: Preference = None) -> RunEntry:
    """Select box of ``entries`` (non-empty, newest first) opening on the run the user chose last;
    with no choice yet, on the default among the runs ``prefer`` accepts (core.catalog.default_entry)."""
    by_id = {e.run_id: e for e in entries}
    ids = list(by_id)
    wanted = wanted_run(ids, entries, prefer)
    if st.session_state.get(key) != wanted:
        st.session_state[key] = wanted  # the URL or another page's choice wins over a stale widget state
    chosen = st.selectbox(label, ids, key=key, on_change=_on_change, args=(key,))
    _remember(str(chosen))
    return by_id[str(chosen)]
