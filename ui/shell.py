"""Every page is behind app.py's password gate, also when a fresh server's first request is a page URL.

Streamlit treats a ``pages/`` folder beside the main script as the old multipage mode until the main
script has called ``st.navigation`` once: the very first script run of a new server, if it is for
``/Anomaly`` say, runs ``pages/3_Anomaly.py`` alone, without app.py's page config and, worse, without
its password gate. Each page therefore starts with ``run_inside_app()``: in that mode it asks for the
password itself and switches Streamlit to app.py's navigation for every later run. (A rerun right away
would also fix the first page's look, but it would drop the widget event that started this run.)"""

from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager

from ui.password_gate import require_password


def run_inside_app() -> None:
    """Call first in every page script; does nothing when app.py's navigation is running it."""
    if PagesManager.uses_pages_directory:
        # What st.navigation itself does on its first call (streamlit/commands/navigation.py).
        PagesManager.uses_pages_directory = False
        require_password()
