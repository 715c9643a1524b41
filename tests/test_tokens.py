"""User tokens: HS256 JWTs issued and verified with one secret, and where the secret lives."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest

from auth.tokens import (
    SECRET_BYTES,
    Claims,
    Keyring,
    TokenError,
    TokenExpired,
    TokenInvalid,
    issue_token,
    load_keyring,
    load_secret,
    verify_token,
)

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
NOW = 1_700_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A token with any header and claims, signed with ``signature`` as given."""
    parts = (json.dumps(header).encode(), json.dumps(claims).encode())
    return ".".join([*(_b64(part) for part in parts), signature])


def test_round_trip() -> None:
    """A token issued for a user verifies to that user and its expiry time."""
    token = issue_token(SECRET, "alice@example.org", ttl_seconds=60, now=NOW + 0.7)

    assert verify_token(SECRET, token, now=NOW + 30) == Claims("alice@example.org", NOW + 60)
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False}) == {
        "sub": "alice@example.org",
        "iat": NOW,
        "exp": NOW + 60,
    }


def test_expired() -> None:
    """A token is valid until the second before ``exp`` and expired from ``exp`` on."""
    token = issue_token(SECRET, "alice", ttl_seconds=60, now=NOW)

    assert verify_token(SECRET, token, now=NOW + 59.9).user == "alice"
    with pytest.raises(TokenExpired):
        verify_token(SECRET, token, now=NOW + 60)


def test_tampered_signature() -> None:
    """Changing the signature, or the claims under a signature, makes the token invalid."""
    token = issue_token(SECRET, "alice", now=NOW)
    header, payload, signature = token.split(".")
    bad_signature = ("B" if signature[0] == "A" else "A") + signature[1:]
    other_payload = issue_token(SECRET, "mallory", now=NOW).split(".")[1]

    for forged in (f"{header}.{payload}.{bad_signature}", f"{header}.{other_payload}.{signature}"):
        with pytest.raises(TokenInvalid):
            verify_token(SECRET, forged, now=NOW)


def test_other_secret() -> None:
    """A token signed with another secret is invalid."""
    token = issue_token(OTHER_SECRET, "alice", now=NOW)

    with pytest.raises(TokenInvalid):
        verify_token(SECRET, token, now=NOW)


def test_alg_none_and_other_algorithms_are_refused() -> None:
    """Only HS256 is accepted: an unsigned ``alg: none`` token and an HS512 one are invalid."""
    claims = {"sub": "alice", "exp": NOW + 60}
    unsigned = _forge({"alg": "none", "typ": "JWT"}, claims)
    hs512 = jwt.encode(claims, SECRET + SECRET, algorithm="HS512")

    for token in (unsigned, unsigned + "x", hs512):
        with pytest.raises(TokenInvalid):
            verify_token(SECRET, token, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"exp": NOW + 60}, id="missing sub"),
        pytest.param({"sub": 42, "exp": NOW + 60}, id="int sub"),
        pytest.param({"sub": "", "exp": NOW + 60}, id="empty sub"),
        pytest.param({"sub": "al ice", "exp": NOW + 60}, id="sub with a space"),
        pytest.param({"sub": "a" * 65, "exp": NOW + 60}, id="sub too long"),
        pytest.param({"sub": "alice"}, id="missing exp"),
        pytest.param({"sub": "alice", "exp": str(NOW + 60)}, id="string exp"),
        pytest.param({"sub": "alice", "exp": True}, id="bool exp"),
        pytest.param({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 10}, id="nbf in the future"),
    ],
)
def test_missing_or_ill_typed_claims(claims: dict[str, Any]) -> None:
    """A well-signed token whose ``sub``/``exp`` are missing or ill-typed (or not valid yet) is invalid."""  # noqa: E501
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    with pytest.raises(TokenInvalid):
        verify_token(SECRET, token, now=NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "é.é.é", "x" * 5000])
def test_malformed_tokens_are_invalid(token: str) -> None:
    """Garbage, oversized or non-ASCII input is a TokenInvalid (a TokenError), never another error."""  # noqa: E501
    with pytest.raises(TokenInvalid) as caught:
        verify_token(SECRET, token, now=NOW)
    assert isinstance(caught.value, TokenError)


def test_issuing_checks_its_arguments() -> None:
    """Issuing for an invalid user id, with a ttl that is not positive, or an empty secret is a ValueError."""  # noqa: E501
    with pytest.raises(ValueError, match="user id"):
        issue_token(SECRET, "bob smith")
    for ttl in (0, -5):
        with pytest.raises(ValueError, match="ttl_seconds"):
            issue_token(SECRET, "bob", ttl_seconds=ttl)
    with pytest.raises(ValueError, match="empty"):
        issue_token(b"", "bob")


def test_secret_file_created_once_with_mode_0600_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the env var, the secret is made once in ``<data_dir>/secret`` (0600, dirs created) and read back after."""  # noqa: E501
    monkeypatch.delenv("STARLING_SECRET", raising=False)
    data_dir = tmp_path / "nested" / "data"

    first = load_secret(data_dir)
    path = data_dir / "secret"
    assert len(first) == SECRET_BYTES
    assert path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret"]  # no temporary file left
    assert load_secret(data_dir) == first

    token = issue_token(first, "alice", now=NOW)
    assert verify_token(load_secret(data_dir), token, now=NOW).user == "alice"


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``STARLING_SECRET`` is used as utf-8 bytes when set, and no file is made."""
    monkeypatch.setenv("STARLING_SECRET", "ß" * 32)

    assert load_secret(tmp_path / "data") == ("ß" * 32).encode()
    assert not (tmp_path / "data").exists()


def test_empty_secrets_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty env var or an empty secret file is a ValueError, not an empty signing key."""
    monkeypatch.setenv("STARLING_SECRET", "")
    with pytest.raises(ValueError, match="STARLING_SECRET"):
        load_secret(tmp_path)

    monkeypatch.delenv("STARLING_SECRET")
    (tmp_path / "secret").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_secret(tmp_path)


def test_operator_role_round_trips() -> None:
    """``operator=True`` adds ``"role": "operator"``; a plain token is no operator's."""
    secret = b"k" * 32
    assert verify_token(secret, issue_token(secret, "ops", operator=True)).operator is True
    assert verify_token(secret, issue_token(secret, "ops")).operator is False


def test_service_role_round_trips_and_a_token_has_one_role() -> None:
    """``service=True`` adds ``"role": "service"`` (no operator's); both at once is refused,
    and a token with another role claim is neither."""
    secret = b"k" * 32
    claims = verify_token(secret, issue_token(secret, "ranker", service=True))
    assert (claims.service, claims.operator) == (True, False)
    assert verify_token(secret, issue_token(secret, "ops", operator=True)).service is False
    with pytest.raises(ValueError, match="one role"):
        issue_token(secret, "x", operator=True, service=True)
    other = jwt.encode({"sub": "x", "exp": 4_000_000_000, "role": "admin"}, secret, "HS256")
    assert (verify_token(secret, other).operator, verify_token(secret, other).service) == (
        False,
        False,
    )


def test_the_token_command_mints_service_tokens(tmp_path: Path) -> None:
    """``starling token NAME --service`` prints a service token of the local secret;
    ``--operator --service`` is a usage error."""
    from click.testing import CliRunner

    from cli import main

    runner = CliRunner()
    minted = runner.invoke(main, ["token", "ranker", "--service", "--data-dir", str(tmp_path)])
    assert minted.exit_code == 0, minted.output
    token = minted.stdout.strip().splitlines()[-1]
    assert verify_token(load_secret(tmp_path), token).service is True
    both = runner.invoke(main, ["token", "x", "--service", "--operator"])
    assert both.exit_code == 2
    assert "one role" in both.output


# -- rotation: the previous secret, until its grace ends ------------------------------

UNTIL = NOW + 600
"""When the previous secret's grace ends in the rotation tests."""


def test_the_previous_secret_verifies_until_its_grace_ends_and_never_after() -> None:
    """A token signed with the previous secret verifies before ``previous_until`` (expiring
    then at the latest) and is invalid from ``previous_until`` on, while tokens of the
    current secret verify throughout."""
    keyring = Keyring(SECRET, OTHER_SECRET, UNTIL)
    old = issue_token(OTHER_SECRET, "alice", ttl_seconds=3600, now=NOW)
    short = issue_token(OTHER_SECRET, "bob", ttl_seconds=60, now=NOW)
    new = issue_token(keyring, "alice", ttl_seconds=3600, now=NOW)

    assert verify_token(keyring, old, now=UNTIL - 1) == Claims("alice", UNTIL)
    assert verify_token(keyring, short, now=NOW) == Claims("bob", NOW + 60)
    with pytest.raises(TokenExpired):
        verify_token(keyring, short, now=NOW + 60)
    for later in (UNTIL, UNTIL + 1):
        with pytest.raises(TokenInvalid):
            verify_token(keyring, old, now=later)
        assert verify_token(keyring, new, now=later) == Claims("alice", NOW + 3600)


def test_tokens_are_issued_with_the_current_secret_only() -> None:
    """Issuing with a keyring signs with its current secret: the previous one alone does not
    verify the token."""
    keyring = Keyring(SECRET, OTHER_SECRET, UNTIL)
    token = issue_token(keyring, "alice", now=NOW)

    assert verify_token(SECRET, token, now=NOW).user == "alice"
    with pytest.raises(TokenInvalid):
        verify_token(OTHER_SECRET, token, now=NOW)


def test_the_previous_secret_checks_the_same_claims() -> None:
    """During the grace, a token of the previous secret with ``alg: none``, another algorithm
    or a missing claim is as invalid as one of the current secret."""
    keyring = Keyring(SECRET, OTHER_SECRET, UNTIL)
    claims = {"sub": "alice", "exp": NOW + 60}
    for token in (
        _forge({"alg": "none", "typ": "JWT"}, claims),
        jwt.encode(claims, OTHER_SECRET + OTHER_SECRET, algorithm="HS512"),
        jwt.encode({"sub": "alice"}, OTHER_SECRET, algorithm="HS256"),
        jwt.encode({"exp": NOW + 60}, OTHER_SECRET, algorithm="HS256"),
    ):
        with pytest.raises(TokenInvalid):
            verify_token(keyring, token, now=NOW)


def test_a_keyring_hides_its_secrets_and_refuses_a_rotation_to_itself() -> None:
    """A keyring's ``repr`` shows neither secret; a previous secret equal to the current one,
    or an empty one, is a ValueError."""
    assert "s" * 8 not in repr(Keyring(SECRET, OTHER_SECRET, UNTIL))
    assert "o" * 8 not in repr(Keyring(SECRET, OTHER_SECRET, UNTIL))
    with pytest.raises(ValueError, match="previous secret is the current one"):
        Keyring(SECRET, SECRET, UNTIL)
    with pytest.raises(ValueError, match="empty"):
        Keyring(SECRET, b"", UNTIL)


def test_load_keyring_reads_the_previous_secret_from_the_environment_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous secret is ``$STARLING_PREVIOUS_SECRET``, else ``<data_dir>/secret.previous``,
    else none (and then a ``previous_until`` is ignored)."""
    monkeypatch.setenv("STARLING_SECRET", "current-secret")
    monkeypatch.delenv("STARLING_PREVIOUS_SECRET", raising=False)

    assert load_keyring(tmp_path, previous_until=UNTIL).keys(NOW) == (b"current-secret",)
    (tmp_path / "secret.previous").write_bytes(b"from-the-file")
    keyring = load_keyring(tmp_path, previous_until=UNTIL)
    assert keyring.keys(NOW) == (b"current-secret", b"from-the-file")
    assert keyring.keys(UNTIL) == (b"current-secret",)
    monkeypatch.setenv("STARLING_PREVIOUS_SECRET", "from-the-environment")
    assert load_keyring(tmp_path, previous_until=UNTIL).previous == b"from-the-environment"


def test_a_previous_secret_without_the_end_of_its_grace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous secret with no ``previous_until`` is a ValueError naming the flag, so a grace
    never lasts for ever by mistake; an empty one is a ValueError too."""
    monkeypatch.setenv("STARLING_SECRET", "current-secret")
    monkeypatch.setenv("STARLING_PREVIOUS_SECRET", "old-secret")

    with pytest.raises(ValueError, match="--previous-secret-until"):
        load_keyring(tmp_path)
    monkeypatch.setenv("STARLING_PREVIOUS_SECRET", "")
    with pytest.raises(ValueError, match="STARLING_PREVIOUS_SECRET"):
        load_keyring(tmp_path, previous_until=UNTIL)
