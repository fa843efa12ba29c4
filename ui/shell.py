"""Every page runs inside app.py's navigation, also when a fresh server's first request is a page URL.

Streamlit treats a ``pages/`` folder beside the main script as the old multipage mode until the main
script has called ``st.navigation`` once: the very first script run of a new server, if it is for
``/Anomaly`` say, would run ``pages/3_Anomaly.py`` alone, without app.py's page config and, worse,
without its password gate. Each page therefore starts with ``run_inside_app()``: in that mode it
switches Streamlit to app.py's navigation and reruns, which lands on the same page through app.py."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager


def run_inside_app() -> None:
    """Call first in every page script; returns at once when app.py's navigation is running it."""
    if PagesManager.uses_pages_directory:
        # What st.navigation itself does on its first call (streamlit/commands/navigation.py).
        PagesManager.uses_pages_directory = False
        st.rerun()
