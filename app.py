"""Hypersphere Explorer: the single entry point (``streamlit run app.py``).

Sets the page config once, asks for the password when ``HSE_PASSWORD`` is set, and builds the
navigation; every page is a short script under ``pages/`` that calls ``core`` and draws with ``ui``."""

from __future__ import annotations

import streamlit as st

from core.catalog import checkpoints_root
from core.fsutil import remove_stale_tmp_files_under
from ui.password_gate import require_password


@st.cache_resource(show_spinner=False)
def _clean_leftovers_once(root: str) -> int:
    """At server start: temp files that a killed writer left in the run directories."""
    return len(remove_stale_tmp_files_under(root))


PAGES = (
    st.Page("pages/0_Home.py", title="Home", icon=":material/public:", default=True),
    st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:", url_path="Train"),
    st.Page("pages/2_Explore.py", title="Explore", icon=":material/explore:", url_path="Explore"),
    st.Page("pages/3_Anomaly.py", title="Anomaly", icon=":material/troubleshoot:", url_path="Anomaly"),
    st.Page("pages/4_Compare.py", title="Compare", icon=":material/compare_arrows:", url_path="Compare"),
    st.Page("pages/5_Tour.py", title="Tour", icon=":material/tour:", url_path="Tour"),
)

st.set_page_config(page_title="Hypersphere Explorer", page_icon=":material/public:", layout="wide")
require_password()  # before the navigation, so not even the page names are shown
_clean_leftovers_once(str(checkpoints_root()))
st.navigation(list(PAGES)).run()
