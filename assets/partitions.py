"""The `tenants` dynamic partitions: one partition per tenant, added by the memory_events_sensor."""

from dagster import DynamicPartitionsDefinition

TENANTS = DynamicPartitionsDefinition(name="tenants")
