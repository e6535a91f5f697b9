"""Placement rules shared by the sensor, the assets and the CLI: which regions exist and the default one."""

from __future__ import annotations

from dagster import ConfigurableResource

from amem_dagster.errors import SettingsError
from amem_dagster.settings import parse_regions


class PlacementResource(ConfigurableResource):
    """The configured regions (each a Postgres schema and a Milvus collection) and where unplaced events go."""

    regions: str = "eu,us"
    default_region: str = "eu"

    def region_list(self) -> tuple[str, ...]:
        regions = parse_regions(self.regions)
        if self.default_region not in regions:
            raise SettingsError(f"default region {self.default_region!r} is not one of {', '.join(regions)}")
        return regions
