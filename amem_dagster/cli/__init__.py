"""The `amem` command line: services, demo traffic, search, stats and the local Dagster dev loop."""
