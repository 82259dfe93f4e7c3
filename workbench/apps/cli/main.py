"""The `workbench` command line: headless runs of the same library functions the notebooks use.

Commands load when they run: `app.py` lists which module registers each one (see `LazyGroup` there), so
`workbench --help` imports none of the library the commands drive.

A user mistake (WorkbenchError) prints one `error: ...` line on stderr and exits with
status 2; set WORKBENCH_DEBUG=1 to see the traceback as well. So does a path the operating
system cannot take (a NUL byte, a name too long, no permission...).

Signals: the console script (`entrypoint`) turns SIGTERM into `Terminated` (a SystemExit, status
143) raised in the main thread, so `with` blocks and `finally` clauses run as they do for Ctrl-C
(KeyboardInterrupt, status 130); either ends with one line on stderr, not a traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import threading
import traceback

import typer

from workbench.apps.cli.app import app
from workbench.core.errors import WorkbenchError, sqlite_hint

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc


class Terminated(SystemExit):
    """SIGTERM arrived (see `install_signal_handlers`). A SystemExit, so `except Exception` does not swallow it
    while context managers and `finally` clauses see it on the way out, as they see KeyboardInterrupt."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


_signals_seen: list[int] = []   # set by the handlers below; main() words its last line from it


def _on_sigterm(signum, frame):
    _signals_seen.append(signum)
    signal.signal(signum, signal.SIG_DFL)   # a second SIGTERM during the clean-up ends the process at once
    raise Terminated(signum)


def _on_sigint(signum, frame):
    _signals_seen.append(signum)
    signal.default_int_handler(signum, frame)   # KeyboardInterrupt, as always


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C (raises `Terminated` in the main thread). Signals that were set to be ignored
    (nohup, a parent's choice) stay ignored. Called by the console script only, not by `main()` itself, so
    in-process callers (tests, notebooks) keep their own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def _stopped_message(signum: int) -> str:
    how = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
    return f"{how}; everything finished so far is saved in the workspace"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    del _signals_seen[:]
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="workbench")
        if rv == 130 and signal.SIGINT in _signals_seen:   # typer turns Ctrl-C into a quiet exit 130
            typer.echo(_stopped_message(signal.SIGINT), err=True)
        return rv if isinstance(rv, int) else 0
    except Terminated as exc:
        typer.echo(_stopped_message(exc.signum), err=True)
        return exc.code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help(), err=True)
        return 2
    except click_exc.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint)
        return 2
    except click_exc.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except WorkbenchError as exc:
        _fail(str(exc))
        return 2
    except sqlite3.DatabaseError as exc:
        _fail(f"workspace database error: {exc}. {sqlite_hint(str(exc))}")
        return 2
    except KeyboardInterrupt:
        typer.echo(_stopped_message(signal.SIGINT), err=True)
        return 130
    except ValueError as exc:
        if "null byte" not in str(exc):
            raise   # a bug: keep the traceback
        bad = [a for a in args if "\0" in a]
        what = f"argument {_short(bad[0])}" if bad else "a path (from an argument or workbench.toml)"
        _fail(f"{what} contains a NUL byte (\\x00), which no file name can hold; check how it was typed or quoted")
        return 2
    except OSError as exc:
        if exc.filename is None or exc.errno is None:
            raise   # not about a file the user named (a socket, a bug): keep the traceback
        _fail(_os_error_message(exc))
        return 2


def _short(value, limit: int = 80) -> str:
    """repr() of a user-given value, shortened in the middle when long (a 4,000-character path helps no one)."""
    text = repr(os.fsdecode(value) if isinstance(value, bytes) else str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text) - 2} characters)"


def _os_error_message(exc: OSError) -> str:
    where = _short(exc.filename) + (f" -> {_short(exc.filename2)}" if exc.filename2 is not None else "")
    reason = exc.strerror or os.strerror(exc.errno)
    hint = {
        errno.ENAMETOOLONG: "; a file or folder name may have at most 255 bytes, a whole path 4,096",
        errno.EACCES: "; check the permissions, or choose another place",
        errno.EPERM: "; check the permissions, or choose another place",
        errno.ENOSPC: "; free some disk space and run it again",
        errno.EROFS: "; choose a writable place",
    }.get(exc.errno, "")
    return f"{where}: {reason}{hint}"


def _fail(message: str) -> None:
    if os.environ.get("WORKBENCH_DEBUG"):
        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)


def entrypoint() -> None:
    install_signal_handlers()
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
