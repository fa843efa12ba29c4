#!/usr/bin/env bash
# Install Debian's Chromium (/usr/bin/chromium) for the browser tests, if it is missing.
# The tests drive it through the Python playwright package with executable_path=/usr/bin/chromium;
# `playwright install` (which downloads its own browser build) is never used.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "error: $CHROMIUM is missing and neither root nor sudo is available." >&2
    echo "       Install it yourself: apt-get install -y chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $CHROMIUM is missing and apt-get is not available (the tests expect Debian's chromium)." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo ">> installing Debian's chromium (for the browser tests)"
if ! "${SUDO[@]}" apt-get install -y chromium; then
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y chromium
fi
test -x "$CHROMIUM"
