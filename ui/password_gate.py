"""The password gate every page calls first (`require_password()`), when `HSE_PASSWORD` is set.

It asks once per browser session (the answer is kept in `st.session_state`) and stops the script
(`st.stop()`) until the right password is given, so nothing of the page below it is sent to the
browser: no run names, no data. Without `HSE_PASSWORD` it does nothing."""

from __future__ import annotations

import time

import streamlit as st

from core import auth

SESSION_KEY = "hse_password_ok"
WRONG_PASSWORD_DELAY_S = 1.0  # slows down guessing from one browser session


def require_password() -> None:
    """Return when the app is open or this session gave the password; otherwise draw the password
    form and stop the script run."""
    if not auth.password_required() or st.session_state.get(SESSION_KEY):
        return
    st.title("Hypersphere Explorer")
    with st.form("hse_password_form"):
        given = st.text_input("Password", type="password", key="hse_password_input")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if auth.check_password(given):
            st.session_state[SESSION_KEY] = True
            st.session_state.pop("hse_password_input", None)
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    st.stop()
