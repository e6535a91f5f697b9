"""One readable red line on stderr instead of a traceback or a usage box; exit 2 for bad input, 1 otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click: its own exception classes
from typer.core import TyperGroup

from amem_dagster.cli.output import err_console
from amem_dagster.errors import AmemError, EventRejected, SettingsError

BAD_INPUT, FAILED, INTERRUPTED = 2, 1, 130


class OneLineErrors(TyperGroup):
    """The `amem` group: runs a command and turns every expected failure into one line and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            code = 0
        except click_errors.UsageError as exc:
            code = _fail(usage_line(exc), BAD_INPUT)
        except click_errors.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            code = _fail("interrupted", INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - only known kinds are turned into a line; the rest re-raise
            known = describe(exc)
            if known is None:
                raise
            code = _fail(*known)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def usage_line(exc: click_errors.UsageError) -> str:
    """`amem produce: Invalid value for '--events': ... (see amem produce --help)` on one line."""
    where = exc.ctx.command_path if exc.ctx else "amem"
    return f"{where}: {exc.format_message()} (see {where} --help)"


def describe(exc: BaseException) -> tuple[str, int] | None:
    """(one line, exit code) for the failures people cause or meet (config, services, input); None for bugs."""
    if isinstance(exc, SettingsError | EventRejected):
        return str(exc), BAD_INPUT
    if isinstance(exc, AmemError):
        return str(exc), FAILED
    if isinstance(exc, TimeoutError):  # e.g. a Kafka admin future that never completed
        return f"a service did not answer in time{': ' + str(exc) if str(exc) else ''}", FAILED
    module = type(exc).__module__ or ""
    if module.startswith("psycopg"):
        import psycopg

        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"Postgres: {first}", FAILED
    if module.startswith("cimpl") or module.startswith("confluent_kafka"):
        from confluent_kafka import KafkaException

        if isinstance(exc, KafkaException):
            error = exc.args[0] if exc.args else None
            return f"Kafka: {error.str() if hasattr(error, 'str') else error}", FAILED
    if module.startswith("pymilvus"):
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException):
            return f"Milvus: {getattr(exc, 'message', None) or exc}", FAILED
    return None


def _fail(message: str, code: int) -> int:
    err_console.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return code
