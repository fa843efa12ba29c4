"""Keep the chosen run in the URL (``?run=<run id>``), so a link to a view can be shared and the
choice survives a reload. A stand-in for ``ui.run_choice.pick_run`` (Anomaly/Home helper): the
merge should make Explore call that one."""

from __future__ import annotations

from typing import Any

import streamlit as st

URL_KEY = "run"


def pick_run_in_url(where: Any, label: str, run_ids: list[str], key: str) -> str:
    """A selectbox of ``run_ids`` in ``where`` whose choice is mirrored in ``st.query_params["run"]``:
    a run named in the URL is chosen on arrival; choosing another writes it back."""
    wanted = st.query_params.get(URL_KEY)
    if wanted in run_ids and st.session_state.get(f"{key}_url") != wanted:
        st.session_state[key] = wanted  # arrived with (or navigated to) a new link
    if st.session_state.get(key) not in run_ids:
        st.session_state[key] = run_ids[0]

    def remember() -> None:
        st.query_params[URL_KEY] = st.session_state[key]
        st.session_state[f"{key}_url"] = st.session_state[key]

    choice = where.selectbox(label, run_ids, key=key, on_change=remember)
    if st.query_params.get(URL_KEY) != choice:
        st.query_params[URL_KEY] = choice
    st.session_state[f"{key}_url"] = choice
    return choice
