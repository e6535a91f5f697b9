"""Software-defined assets of the memory pipeline, partitioned by tenant."""
