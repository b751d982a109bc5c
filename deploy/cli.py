"""The ``jwtedge`` command line: bake, check, inspect, serve and demo.

Data goes to stdout, diagnostics to a rich console on stderr. Exit codes are
the contract of DESIGN.md::

    0   ok
    1   drift (check) or an invalid token (inspect)
    2   usage or configuration error
    3   the issuer could not be reached or returned unusable keys
    4   an output could not be written
    70  an unexpected error

An unexpected exception is reported as one line naming its type only: its
message and the traceback's locals may hold a token or a secret, so neither
is ever printed.

I/O is injected through the Typer context ``obj`` (a :class:`Seams`, or a
dict of its fields), so tests pass ``httpx2.MockTransport``, a fake clock and
a sleep that does not wait, without monkeypatching.

This module is the Typer app and nothing else: the commands live in
:mod:`deploy.key_commands` (bake, check), :mod:`deploy.inspect_command` and
:mod:`deploy.run` (serve, demo); what they print, in :mod:`deploy.console`
and :mod:`deploy.report`.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from .console import EXIT_CODES, UNEXPECTED, console, printable
from .inspect_command import INSPECT_SETTINGS, inspect
from .key_commands import bake, check
from .run import demo, serve
from .seams import Seams, make_fetcher

__all__ = ["EXIT_CODES", "Seams", "app", "main", "make_fetcher", "printable"]


class _Guarded(TyperGroup):
    """Turns any unexpected exception into one line and exit 70.

    It sits on the group, so every command (present and future) is covered.
    Typer's own exits and usage errors pass through untouched.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        # The top of the program is the one place a blanket catch is right: the
        # message could quote a token, so only the type is reported.
        except Exception as exc:  # noqa: BLE001
            console().print(
                f"jwtedge: unexpected error ({type(exc).__name__}); please report it",
                style="bold red",
                markup=False,
            )
            raise typer.Exit(UNEXPECTED) from None


app = typer.Typer(
    name="jwtedge",
    help="Bake an issuer's public keys into config, check them for drift, inspect tokens, "
    "serve the edge app, or run the demo.",
    epilog="Exit codes: 0 ok; 1 drift or an invalid token; 2 usage or configuration error; "
    "3 issuer unreachable or unusable keys; 4 output not writable; 70 unexpected error.",
    cls=_Guarded,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command()(bake)
app.command()(check)
app.command(context_settings=INSPECT_SETTINGS)(inspect)
app.command()(serve)
app.command()(demo)


def main() -> None:
    """Console-script entry point (``jwtedge``)."""
    app(prog_name="jwtedge")


if __name__ == "__main__":
    main()
