"""Placement rules shared by the sensor, the assets and the CLI: which regions exist and the default one."""

from __future__ import annotations

from dagster import ConfigurableResource

from amem_dagster.errors import SettingsError
from amem_dagster.settings import default_retention, parse_regions, parse_retention


class PlacementResource(ConfigurableResource):
    """The configured regions (each a Postgres schema and a Milvus collection) and where unplaced events go."""

    regions: str = "eu,us"
    default_region: str = "eu"
    retention: str = ""  # AMEM_RETENTION syntax, e.g. "eu=90d,us=365d,default=365d"; empty: the defaults

    def region_list(self) -> tuple[str, ...]:
        regions = parse_regions(self.regions)
        if self.default_region not in regions:
            raise SettingsError(f"default region {self.default_region!r} is not one of {', '.join(regions)}")
        return regions

    def retention_days(self, region: str) -> int:
        """Days `region` keeps memories; an event older than this on arrival is not stored at all."""
        regions = self.region_list()
        table = dict(parse_retention(self.retention or default_retention(regions), regions))
        return table.get(region, table["default"])
