"""The `amem` Typer application: registers each command module and is the console-script entry point."""

from __future__ import annotations

import warnings

import typer

from amem_dagster.cli import backfill, dev, forget, lifecycle, produce, purge, relayout, search, stats, tenants
from amem_dagster.cli.errors import OneLineErrors
from amem_dagster.cli.metrics import app as metrics_app

# platformdirs (via the embedded Postgres wheel) warns on every run where XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

app = typer.Typer(
    name="amem",
    cls=OneLineErrors,
    help="Agent memory on Kafka, Postgres/pgvector, Milvus and Dagster: run it, feed it, query it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("up")(lifecycle.up)
app.command("down")(lifecycle.down)
app.command("status")(lifecycle.status)
app.command("dev")(dev.dev)
app.command("produce")(produce.produce)
app.command("search")(search.search)
app.command("stats")(stats.stats)
app.command("purge")(purge.purge)
app.command("forget")(forget.forget)
app.command("backfill")(backfill.backfill)
app.command("milvus-relayout")(relayout.milvus_relayout)
app.add_typer(tenants.app, name="tenants")
app.add_typer(metrics_app, name="metrics")


def main() -> None:
    """Console-script entry point (`amem`)."""
    app()


if __name__ == "__main__":
    main()
