#!/bin/sh
# Run once by the postgres image when the `db` volume is first initialised
# (/docker-entrypoint-initdb.d). Creates `bank_app`, the role the web processes connect as: it can
# log in and connect, and holds no table privileges until `flask grant-app-role bank_app` (run by
# compose's `migrate` service as the schema owner, after the migrations) gives it exactly what the
# services need: never UPDATE, DELETE or TRUNCATE on the audit log or the ledger
# (app/db_privileges.py). The owner `bank` keeps the schema; only it could drop the triggers.
set -eu
psql --no-psqlrc --set=ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set=app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE bank_app LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO bank_app;
SQL
