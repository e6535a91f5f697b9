"""Sensors and schedules: Kafka offsets in sensor cursors turned into tenant-partitioned runs."""
