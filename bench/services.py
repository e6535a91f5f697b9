"""Fresh embedded services for a benchmark: a throwaway AMEM_HOME, stopped and deleted afterwards."""

import os
import tempfile
from contextlib import contextmanager

from amem_dagster.embedded import services
from amem_dagster.settings import Settings
from resources.postgres import close_pools


@contextmanager
def fresh_services():
    """Yield (settings, env) of new embedded services; their addresses are exported into os.environ too."""
    with tempfile.TemporaryDirectory(prefix="amem-bench-", dir="/tmp") as home:
        settings = Settings.from_env({"AMEM_HOME": home})
        services.up(settings)
        try:
            env = {"AMEM_HOME": home, **services.connection_env(settings)}
            os.environ.update(env)
            yield Settings.from_env(env), env
        finally:
            close_pools()
            services.down(settings)
