"""Errors raised by every backend, whatever its driver.

Hierarchy::

    StoreError                  base of every backend failure
    ├── BackendUnavailable      the service cannot be reached (connection refused, timed out)
    ├── QueryError              the backend rejected a query or a command (syntax, constraint)
    └── ConfigError             a backend URL or setting that cannot be used

Adapters translate their driver's exceptions into these, so that actors and
protocols never import a driver.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every backend failure."""


class BackendUnavailable(StoreError):
    """The backend cannot be reached: connection refused, reset or timed out."""


class QueryError(StoreError):
    """The backend rejected a query or command (syntax, constraint, type)."""


class ConfigError(StoreError):
    """A backend URL or setting that cannot be used."""
