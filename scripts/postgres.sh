#!/usr/bin/env bash
# A local PostgreSQL for a shared Optuna study (tests/test_cluster.py, or many workers on one box).
#   sudo scripts/postgres.sh            # install if missing, start on 127.0.0.1:5432, role/db vlmsweep
#   VLMSWEEP_PG_USER=me VLMSWEEP_PG_PASSWORD=secret VLMSWEEP_PG_DB=study scripts/postgres.sh
# Then: python -m vlmsweep -m +sweep=lora_rank sweep.storage=postgresql://vlmsweep:vlmsweep@127.0.0.1:5432/vlmsweep
# Debian/Ubuntu only (apt + pg_ctlcluster). Safe to run again: every step checks before it acts.
set -euo pipefail

PG_USER="${VLMSWEEP_PG_USER:-vlmsweep}"
PG_PASSWORD="${VLMSWEEP_PG_PASSWORD:-vlmsweep}"
PG_DB="${VLMSWEEP_PG_DB:-vlmsweep}"
PG_PORT="${VLMSWEEP_PG_PORT:-5432}"

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/postgres.sh: run as root (sudo scripts/postgres.sh): it installs and starts a system service" >&2
  exit 1
fi

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y postgresql >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
  pg_createcluster "$VERSION" main --port "$PG_PORT" >/dev/null
fi
# loopback only (the study's password travels in the storage URL); conf.d is read after postgresql.conf
CONF_D="/etc/postgresql/$VERSION/main/conf.d"
mkdir -p "$CONF_D"
printf "listen_addresses = '127.0.0.1'\nport = %s\n" "$PG_PORT" >"$CONF_D/vlmsweep.conf"
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main" {print $4}' | grep -qx online; then
  pg_ctlcluster "$VERSION" main start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$PG_PORT" >/dev/null || { echo "PostgreSQL did not start; see /var/log/postgresql/" >&2; exit 1; }

psql_admin() { su postgres -c "psql -p $PG_PORT -v ON_ERROR_STOP=1 -qtAX $*"; }
if [[ -z $(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"") ]]; then
  psql_admin "-c \"CREATE ROLE \\\"$PG_USER\\\" LOGIN PASSWORD '$PG_PASSWORD'\""
fi
if [[ -z $(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"") ]]; then
  psql_admin "-c \"CREATE DATABASE \\\"$PG_DB\\\" OWNER \\\"$PG_USER\\\"\""
fi
echo "postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
