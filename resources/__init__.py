"""Dagster resources: Kafka, Postgres/Citus with pgvector, Milvus, and the sentence-transformers embedder."""
