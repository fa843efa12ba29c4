"""Placeholder home page (replaced by the app engineer)."""

import streamlit as st

st.set_page_config(page_title="Hypersphere Explorer", layout="wide")
st.title("Hypersphere Explorer")
st.write("Train embeddings with L2-softmax, triplet and friends, and explore them on the hypersphere.")
