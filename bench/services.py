"""Fresh embedded services for a benchmark (a throwaway AMEM_HOME), and the CPU time their processes have used."""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from amem_dagster.embedded import services, state
from amem_dagster.settings import Settings
from resources.postgres import close_pools

SERVICES = ("postgres", "milvus", "kafka")
_TICK = os.sysconf("SC_CLK_TCK")


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


def service_pids(home: str | Path) -> dict[str, int]:
    """The root process of each embedded service under AMEM_HOME: the postmaster, the Milvus Lite server, Tansu."""
    home = Path(home)
    pids = {name: info["pid"] for name, info in state.read(home).items() if name in SERVICES and "pid" in info}
    try:
        pids["postgres"] = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return pids


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process plus its reaped children) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state, ppid, ... utime (14th field of the line), stime, cutime, cstime.
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICK


def tree_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each root and all its live descendants (exited ones count via their parent's
    reaped-children time: Postgres backends end with their connection, and the postmaster reaps them)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    totals = {}
    for name, root in roots.items():
        seen, todo, total = set(), [root], 0.0
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in stats:
                continue
            seen.add(pid)
            total += stats[pid][1]
            todo.extend(children.get(pid, ()))
        totals[name] = total
    return totals


class CpuMeter:
    """CPU seconds of this process and of the services, read at each `mark` and charged to the named step."""

    def __init__(self, home: str | Path) -> None:
        self.pids = service_pids(home)
        self.steps: dict[str, dict[str, float]] = {}
        self._last = self._now()

    def _now(self) -> dict[str, float]:
        own = os.times()
        return {"client": own.user + own.system, **tree_cpu(self.pids)}

    def mark(self, step: str) -> dict[str, float]:
        """Charge the CPU used since the previous mark to `step` (per process: client and each service)."""
        now = self._now()
        used = {k: max(now[k] - self._last.get(k, 0.0), 0.0) for k in now}
        self._last = now
        entry = self.steps.setdefault(step, {})
        for k, v in used.items():
            entry[k] = entry.get(k, 0.0) + v
        return used


def shares(cpu: dict[str, float]) -> dict[str, float]:
    """Each entry's share of the total, rounded; an empty or all-zero input gives zeros."""
    total = sum(cpu.values())
    return {k: round(v / total, 3) if total else 0.0 for k, v in cpu.items()}
