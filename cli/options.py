"""The options several commands share, and every ``STARLING_*`` variable the command line reads.

Each variable is declared here once, as the ``envvar`` of its option: click
resolves a value from the flag, then the variable, then the default, and
``--help`` shows the variable (``show_envvar``). Nothing else reads these
variables. The token secrets are read where they are loaded and have no flag
(a flag shows in ``ps``): ``STARLING_SECRET`` by :func:`auth.tokens.load_secret`,
``STARLING_PREVIOUS_SECRET`` by :func:`auth.tokens.load_keyring`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import click

from settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

DATA_DIR_ENV = "STARLING_DATA_DIR"
GRAPH_URL_ENV = "STARLING_GRAPH_URL"
REDIS_URL_ENV = "STARLING_REDIS_URL"
NEO4J_USER_ENV = "STARLING_NEO4J_USER"
NEO4J_PASSWORD_ENV = "STARLING_NEO4J_PASSWORD"
API_KEY_ENV = "STARLING_API_KEY"
PREVIOUS_SECRET_UNTIL_ENV = "STARLING_PREVIOUS_SECRET_UNTIL"

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=DATA_DIR_ENV,
    show_envvar=True,
    help="Embedded data directory: the Ladybug graph, the token secret [default ./starling-data].",
)
api_key_option = click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    help="The bearer key of /rpc (serve: the key clients must send; none: loopback only).",
)
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
previous_secret_until_option = click.option(
    "--previous-secret-until",
    type=float,
    envvar=PREVIOUS_SECRET_UNTIL_ENV,
    show_envvar=True,
    help="Epoch second until which tokens signed with the previous secret "
    "(STARLING_PREVIOUS_SECRET, or <data-dir>/secret.previous) are still accepted; "
    "needed when there is one.",
)

_BACKEND_OPTIONS = (
    data_dir_option,
    click.option(
        "--graph-url",
        envvar=GRAPH_URL_ENV,
        show_envvar=True,
        help="ladybug://PATH | neo4j://… | bolt://… [default: Ladybug in the data directory].",
    ),
    click.option(
        "--redis-url",
        envvar=REDIS_URL_ENV,
        show_envvar=True,
        help="memory:// | redis://… [default memory://].",
    ),
    click.option("--neo4j-user", envvar=NEO4J_USER_ENV, show_envvar=True, help="Neo4j user."),
    click.option(
        "--neo4j-password", envvar=NEO4J_PASSWORD_ENV, show_envvar=True, help="Neo4j password."
    ),
    debug_option,
)


@overload
def backend_options(command: F) -> F: ...
@overload
def backend_options(*, api_key: bool = False) -> Callable[[F], F]: ...
def backend_options(command: F | None = None, *, api_key: bool = False) -> Any:
    """The backend flags (and ``--api-key`` if asked), folded into one ``settings`` argument.

    The command receives ``settings: Settings`` (:meth:`Settings.resolve`) and ``debug``
    instead of the individual flags.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def command_with_settings(
            *args: Any,
            data_dir: Path | None,
            graph_url: str | None,
            redis_url: str | None,
            neo4j_user: str | None,
            neo4j_password: str | None,
            **kwargs: Any,
        ) -> Any:
            settings = Settings.resolve(
                data_dir,
                graph_url,
                redis_url,
                neo4j_user=neo4j_user,
                neo4j_password=neo4j_password,
                api_key=kwargs.pop("api_key", None) or None,
            )
            return function(*args, settings=settings, **kwargs)

        decorated: Any = command_with_settings
        for option in reversed((*_BACKEND_OPTIONS, *((api_key_option,) if api_key else ()))):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate if command is None else decorate(command)
