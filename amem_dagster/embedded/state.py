"""A small JSON file under AMEM_HOME recording what the embedded services run with (pids, ports)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE_FILE = "services.json"


def read(home: Path) -> dict:
    try:
        return json.loads((home / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def update(home: Path, **entries: object) -> None:
    current = read(home)
    current.update(entries)
    tmp = home / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(current, indent=2))
    tmp.replace(home / STATE_FILE)
