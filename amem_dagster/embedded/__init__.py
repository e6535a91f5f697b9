"""Embedded services for laptops and tests: Postgres with pgvector, the Tansu Kafka broker, a Milvus Lite file."""
