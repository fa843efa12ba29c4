"""Every page is behind app.py's password gate, also when a fresh server's first request is a page URL.

Streamlit treats a ``pages/`` folder beside the main script as the old multipage mode until the main
script has called ``st.navigation`` once: the very first script run of a new server, if it is for
``/Anomaly`` say, runs ``pages/3_Anomaly.py`` alone, without app.py's page config and, worse, without
its password gate. Each page therefore starts with ``run_inside_app()``: in that mode it asks for the
password itself, switches Streamlit to app.py's navigation and reruns at once through it, so the first
page already has app.py's sidebar and page config, and a widget never finds its page re-rendered under
it. (The first run of a fresh server is a page load: there is no widget event that the rerun could drop,
except from a tab left open across a server restart, which then clicks once more.)"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from ui.password_gate import require_password


def run_inside_app() -> None:
    """Call first in every page script; does nothing when app.py's navigation is running it."""
    if PagesManager.uses_pages_directory:
        # A session with no state yet is on its first run: a page load, no widget event that a rerun
        # could drop (streamlit.testing resets this mode before each of its runs, with widget events).
        first_run = not list(st.session_state.keys())
        # What st.navigation itself does on its first call (streamlit/commands/navigation.py).
        PagesManager.uses_pages_directory = False
        require_password()
        if first_run:
            st.rerun()
