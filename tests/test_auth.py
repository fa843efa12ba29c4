"""core.auth: the password comes from HSE_PASSWORD at call time; unset or empty means no password."""

from core import auth


def test_no_password_configured_means_open(monkeypatch):
    monkeypatch.delenv("HSE_PASSWORD", raising=False)
    assert auth.configured_password() is None and not auth.password_required()
    assert auth.check_password("") and auth.check_password("anything")
    monkeypatch.setenv("HSE_PASSWORD", "")
    assert not auth.password_required()


def test_only_the_exact_password_passes(monkeypatch):
    monkeypatch.setenv("HSE_PASSWORD", "s3cret-Ünïcode")
    assert auth.password_required()
    assert auth.check_password("s3cret-Ünïcode")
    for wrong in ("", "s3cret", "s3cret-Ünïcode ", "S3CRET-Ünïcode", "s3cret-Unicode", "x" * 10_000):
        assert not auth.check_password(wrong), wrong
    monkeypatch.setenv("HSE_PASSWORD", "changed")  # read at call time
    assert auth.check_password("changed") and not auth.check_password("s3cret-Ünïcode")


def test_password_matches_compares_digests():
    assert auth.password_matches("a", "a")
    assert not auth.password_matches("a", "b")
    assert not auth.password_matches("a", "a\0")
