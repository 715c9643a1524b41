"""Opaque page cursors: one codec for every paged method.

A cursor is ``base64url("<kind>/<field>/<field>…")`` without padding. Fields
are ids (:mod:`actors.ids`: no ``/``), snapshot ids and integers; ``kind``
says which method made it and its format version (``u1``: a page of users
after an id; ``f1``: a feed snapshot and a position in it). A cursor is
opaque to clients: they send back what they got.
"""

from __future__ import annotations

import base64
import binascii

from protocols.jsonrpc import JsonRpcError, invalid_params

SEPARATOR = "/"


def encode_cursor(kind: str, *fields: str | int) -> str:
    """The cursor of ``kind`` naming ``fields`` (none may contain ``/``).

    Raises:
        ValueError: a field contains the separator.
    """
    parts = [kind, *(str(field) for field in fields)]
    if any(SEPARATOR in part for part in parts):
        raise ValueError(f"cursor fields must not contain {SEPARATOR!r}: {parts!r}")
    raw = SEPARATOR.join(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, count: int) -> list[str]:
    """The ``count`` fields of a cursor of ``kind``.

    Raises:
        JsonRpcError: -32602 "malformed cursor" for anything this server did not make
            (another kind, another number of fields, an empty field, not base64).
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise malformed() from None
    parts = text.split(SEPARATOR)
    if parts[0] != kind or len(parts) != count + 1 or not all(parts[1:]):
        raise malformed()
    return parts[1:]


def malformed() -> JsonRpcError:
    """``-32602`` with ``data.detail = "malformed cursor"``."""
    return invalid_params("malformed cursor")


__all__ = ["decode_cursor", "encode_cursor", "malformed"]
