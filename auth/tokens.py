"""User tokens for the WebSocket endpoint and ``POST /rpc``: HS256 JSON Web Tokens (PyJWT).

A client authenticates its WebSocket session (or an HTTP call) with a token
that names the user (``sub``) and when the token stops being valid
(``exp``). The server issues and verifies tokens with one shared secret
(:func:`load_secret`), so every Starling process that shares the secret
accepts every other one's tokens.

Secret rotation (:class:`Keyring`, :func:`load_keyring`): tokens are always
signed with the current secret; the previous one (``$STARLING_PREVIOUS_SECRET``
or ``<data_dir>/secret.previous``) still verifies until the epoch second its
grace ends (``--previous-secret-until``), and never after. A token verified
with it expires at the end of the grace at the latest, so nothing it
authenticated outlives the grace.

Sources: RFC 7519 (JSON Web Token) sections 4.1.2 ``sub``, 4.1.4 ``exp``,
4.1.5 ``nbf``, 4.1.6 ``iat``; RFC 7518 section 3.2 (HMAC with SHA-2: the key
should be at least as long as the hash, 32 bytes for HS256); RFC 8725
section 3.1 (accept only the algorithms you expect, never ``none``). The
only accepted algorithm is fixed here, never read from the token.

Errors, as httpx draws them::

    TokenError            base: the token authenticates nobody
    ├── TokenExpired      well formed and well signed, but ``exp`` is past
    └── TokenInvalid      bad signature, malformed, another algorithm than HS256
                          (``none`` included), ``sub`` or ``exp`` missing or ill-typed,
                          ``nbf`` in the future

Bad *arguments* of the issuing side (an invalid user id, a ttl that is not
positive, an empty secret) raise :class:`ValueError`: they are bugs or
configuration errors, not a client's fault.

Times are epoch seconds; ``now`` can be passed in so that tests are
deterministic.
"""

from __future__ import annotations

import contextlib
import hmac
import math
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from actors.ids import ID

ALGORITHM = "HS256"
SECRET_ENV = "STARLING_SECRET"
SECRET_FILE = "secret"
PREVIOUS_SECRET_ENV = "STARLING_PREVIOUS_SECRET"
"""The secret being rotated out: still verifies until the grace ends (:func:`load_keyring`)."""
PREVIOUS_SECRET_FILE = "secret.previous"
SECRET_BYTES = 32
"""Length of a generated secret: the HS256 hash size (RFC 7518 section 3.2)."""
DEFAULT_TTL_SECONDS = 3600
OPERATOR = "operator"
"""The ``role`` claim of an operator's token."""
SERVICE = "service"
"""The ``role`` claim of an internal service's token."""
MAX_TOKEN_LENGTH = 4096
"""Longest token accepted, in characters; ours are about 150."""

USER_ID = ID
"""User ids follow the one id rule (:mod:`actors.ids`)."""


class TokenError(Exception):
    """Base class of the token errors: the token authenticates nobody."""


class TokenExpired(TokenError):
    """The token is well signed but its ``exp`` is at or before now."""


class TokenInvalid(TokenError):
    """The token is malformed, badly signed, of another algorithm, or its claims are wrong."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says.

    Attributes:
        user: the user id (the ``sub`` claim), matching ``^[A-Za-z0-9_.:@-]{1,64}$``.
        expires_at: the ``exp`` claim, epoch seconds (rounded down); for a token verified
            with the previous secret of a :class:`Keyring`, the end of its grace if that
            comes first.
        operator: the ``role`` claim is ``"operator"``: may read the ``system:``
            channels (supervisor health, live figures) and call every JSON-RPC method
            over the WebSocket.
        service: the ``role`` claim is ``"service"``: an internal service, which may call
            every JSON-RPC method over the WebSocket (one connection, pipelined calls).
    """

    user: str
    expires_at: int
    operator: bool = False
    service: bool = False


@dataclass(frozen=True, slots=True)
class Keyring:
    """The secrets a server verifies tokens with: the current one, and during a rotation the
    previous one, until ``previous_until``.

    Tokens are issued with :attr:`current` only. The secrets never show in a ``repr``.

    Attributes:
        current: the signing secret.
        previous: the secret being rotated out, or ``None``.
        previous_until: epoch seconds at which :attr:`previous` stops verifying.

    Raises:
        ValueError: a secret is empty, or ``previous`` equals ``current``.
    """

    current: bytes = field(repr=False)
    previous: bytes | None = field(default=None, repr=False)
    previous_until: float = -math.inf

    def __post_init__(self) -> None:
        _non_empty(self.current, "secret")
        if self.previous is not None:
            _non_empty(self.previous, "previous secret")
            if hmac.compare_digest(self.previous, self.current):
                raise ValueError("the previous secret is the current one: rotate to a new secret")

    def keys(self, now: float) -> tuple[bytes, ...]:
        """The secrets that verify at ``now`` (epoch seconds), the current one first."""
        if self.previous is not None and now < self.previous_until:
            return (self.current, self.previous)
        return (self.current,)


def keyring_of(secret: bytes | Keyring) -> Keyring:
    """``secret`` as a :class:`Keyring` (a lone secret: no previous one)."""
    return secret if isinstance(secret, Keyring) else Keyring(secret)


def load_keyring(data_dir: Path, *, previous_until: float | None = None) -> Keyring:
    """The server's secrets: the current one (:func:`load_secret`) and, during a rotation, the
    previous one: ``$STARLING_PREVIOUS_SECRET``, else ``<data_dir>/secret.previous`` if it
    exists.

    Blocking file I/O: call it once at startup (or in a thread).

    Args:
        data_dir: the server's data directory.
        previous_until: epoch seconds at which the previous secret stops verifying
            (``--previous-secret-until``); needed when there is a previous secret, ignored
            when there is none.

    Raises:
        ValueError: a secret is empty, the previous secret is the current one, or there is a
            previous secret but no ``previous_until``.
        OSError: a secret file cannot be read or created.
    """
    current = load_secret(data_dir)
    previous: bytes | None = None
    from_env = os.environ.get(PREVIOUS_SECRET_ENV)
    if from_env is not None:
        previous = _non_empty(from_env.encode(), f"${PREVIOUS_SECRET_ENV}")
        where = f"${PREVIOUS_SECRET_ENV}"
    else:
        path = data_dir / PREVIOUS_SECRET_FILE
        with contextlib.suppress(FileNotFoundError):
            previous = _non_empty(path.read_bytes(), str(path))
        where = str(path)
    if previous is None:
        return Keyring(current)
    if previous_until is None or not math.isfinite(previous_until):
        raise ValueError(
            f"{where} is set but its grace has no end: pass --previous-secret-until "
            "(STARLING_PREVIOUS_SECRET_UNTIL, epoch seconds), or remove the previous secret"
        )
    return Keyring(current, previous, previous_until)


def load_secret(data_dir: Path) -> bytes:
    """The signing secret: ``$STARLING_SECRET``, else ``<data_dir>/secret``.

    The file is created on first use with :data:`SECRET_BYTES` random bytes
    from :mod:`secrets`, mode 0600, its parent directories created. It is
    written atomically: the bytes go to a temporary file in the same
    directory, which is then hard-linked to its final name; the link fails if
    another process got there first, and then that process's secret is read
    and used, so concurrent first starts agree on one secret.

    Blocking file I/O: call it once at startup (or in a thread).

    Args:
        data_dir: the server's data directory.

    Returns:
        The secret: the environment variable's utf-8 bytes, or the file's bytes.

    Raises:
        ValueError: the environment variable or the file is empty.
        OSError: the file cannot be read or created.
    """
    from_env = os.environ.get(SECRET_ENV)
    if from_env is not None:
        return _non_empty(from_env.encode(), f"${SECRET_ENV}")
    path = data_dir / SECRET_FILE
    try:
        return _non_empty(path.read_bytes(), str(path))
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600, readable by its owner only.
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{SECRET_FILE}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        # Fails if another process created it first: then use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _non_empty(path.read_bytes(), str(path))


def issue_token(
    secret: bytes | Keyring,
    user: str,
    *,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
    operator: bool = False,
    service: bool = False,
) -> str:
    """A signed HS256 token for ``user``, valid for ``ttl_seconds``.

    Args:
        secret: the signing secret (:func:`load_secret`), or a :class:`Keyring` (its current
            secret signs).
        user: the user id, ``^[A-Za-z0-9_.:@-]{1,64}$``; becomes ``sub``.
        ttl_seconds: how long the token is valid, in seconds.
        now: the issuing time in epoch seconds; defaults to ``time.time()``.
        operator: add ``"role": "operator"`` (may read the ``system:`` channels).
        service: add ``"role": "service"`` (an internal service); not with ``operator``.

    Returns:
        The compact JWT, claims ``{"sub": user, "iat": now, "exp": now + ttl_seconds}``
        (``now`` rounded down to whole seconds), plus ``"role"`` when one is asked.

    Raises:
        ValueError: ``user`` is not a valid user id, ``ttl_seconds`` is not
            positive, ``secret`` is empty, or both roles are asked.
    """
    if not USER_ID.fullmatch(user):
        raise ValueError(f"user id must match {USER_ID.pattern!r}, got {user!r}")
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
    if isinstance(secret, Keyring):
        secret = secret.current
    _non_empty(secret, "secret")
    issued_at = math.floor(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user, "iat": issued_at, "exp": issued_at + ttl_seconds}
    if operator and service:
        raise ValueError("a token has one role: operator or service, not both")
    if operator:
        claims["role"] = OPERATOR
    elif service:
        claims["role"] = SERVICE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: bytes | Keyring, token: str, *, now: float | None = None) -> Claims:
    """Check ``token``'s signature and claims, and say whom it names.

    With a :class:`Keyring`, the current secret is tried first, then the previous one
    while its grace lasts (only a signature that does not match moves on to it); a token
    verified with the previous secret expires at the end of the grace at the latest.

    Args:
        secret: the signing secret (:func:`load_secret`), or the secrets (:func:`load_keyring`).
        token: the compact JWT the client sent.
        now: the checking time in epoch seconds; defaults to ``time.time()``.

    Returns:
        The token's :class:`Claims`.

    Raises:
        TokenExpired: the token is valid but ``exp`` <= ``now``.
        TokenInvalid: anything else is wrong (see the module docstring).
        ValueError: ``secret`` is empty.
    """
    checked_at = time.time() if now is None else now
    keys = (
        secret.keys(checked_at) if isinstance(secret, Keyring) else (_non_empty(secret, "secret"),)
    )
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid(f"token longer than {MAX_TOKEN_LENGTH} characters")
    payload = _decode(keys[0], token)
    expires_cap = math.inf
    if payload is None and len(keys) > 1:
        payload = _decode(keys[1], token)
        assert isinstance(secret, Keyring)  # two keys come from a keyring only
        expires_cap = math.floor(secret.previous_until)
    if payload is None:
        raise TokenInvalid("Signature verification failed")
    user = payload["sub"]
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        raise TokenInvalid("sub is not a valid user id")
    expires_at = int(min(_numeric_date(payload, "exp"), expires_cap))
    if "nbf" in payload and _numeric_date(payload, "nbf") > checked_at:
        raise TokenInvalid("token not valid yet (nbf)")
    if expires_at <= checked_at:
        raise TokenExpired(f"token expired at {expires_at}")
    role = payload.get("role")
    return Claims(user, expires_at, operator=role == OPERATOR, service=role == SERVICE)


def _decode(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of ``token`` if ``key`` signed it, ``None`` if its signature does not match.

    Raises:
        TokenInvalid: the token is malformed, of another algorithm, or lacks ``sub``/``exp``.
    """
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "require": ["sub", "exp"],
                # Times are checked by the caller against ``now``; PyJWT reads the clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError:
        return None
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(str(exc)) from exc
    return payload


def _numeric_date(payload: dict[str, Any], claim: str) -> int:
    """A NumericDate claim (RFC 7519 section 2) as whole epoch seconds, rounded down."""
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenInvalid(f"{claim} is not a number of seconds")
    return math.floor(value)


def _non_empty(secret: bytes, what: str) -> bytes:
    if not secret:
        raise ValueError(f"{what} is empty: the signing secret must not be")
    return secret
