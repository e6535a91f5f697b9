-- Once, as an admin (a superuser, or a role with CREATEROLE and BYPASSRLS), in the application database:
--   psql "postgresql://ADMIN@HOST:5432/amem" -v ON_ERROR_STOP=1 -f deployments/postgres/app-database.sql
--   psql ... -c "ALTER ROLE amem PASSWORD '...'"
-- Then the login role amem (no superuser) runs the schema migration on the code location's first start
-- (resources/pg_schema.py). Idempotent. tests/deployments/test_postgres_setup.py runs this file.
CREATE EXTENSION IF NOT EXISTS vector;
-- On Citus, also: CREATE EXTENSION IF NOT EXISTS citus;   (roles propagate to the workers on Citus 11+)

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'amem') THEN
    CREATE ROLE amem LOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  -- Group roles the application switches to with SET LOCAL ROLE: row-level security applies to amem_app;
  -- operator jobs (stats, purges, erasures) run as amem_maintainer. Only an admin may create BYPASSRLS roles.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'amem_app') THEN
    CREATE ROLE amem_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'amem_maintainer') THEN
    CREATE ROLE amem_maintainer NOLOGIN NOSUPERUSER BYPASSRLS;
  END IF;
  -- The migration re-grants both roles to itself: that needs the ADMIN option (PostgreSQL 16+).
  GRANT amem_app, amem_maintainer TO amem WITH ADMIN OPTION;
  EXECUTE format('GRANT CREATE ON DATABASE %I TO amem', current_database());
END
$$;
