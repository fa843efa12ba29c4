"""One shared password for a demo served on a network: `HSE_PASSWORD` (unset or empty: no password).

The comparison is constant-time: both sides are hashed to SHA-256 first, so neither the content nor
the length of the password leaks through how long a wrong guess takes to be refused."""

from __future__ import annotations

import hashlib
import hmac
import os

PASSWORD_ENV = "HSE_PASSWORD"


def configured_password() -> str | None:
    """The password the app asks for, read at call time; None when the app is open to everyone."""
    value = os.environ.get(PASSWORD_ENV, "")
    return value or None


def password_required() -> bool:
    return configured_password() is not None


def password_matches(given: str, expected: str) -> bool:
    """Constant-time equality of two passwords (any length, any Unicode)."""
    given_digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    expected_digest = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(given_digest, expected_digest)


def check_password(given: str) -> bool:
    """True when no password is configured, or `given` is it."""
    expected = configured_password()
    return expected is None or password_matches(given, expected)
