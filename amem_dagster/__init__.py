"""amem_dagster: agent memory as tenant-partitioned Dagster assets over Kafka, Postgres/pgvector and Milvus."""
