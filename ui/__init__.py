"""Streamlit drawing helpers shared by app.py and the pages (``core`` never imports streamlit)."""
