#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, trust auth, database `test`)
# answer; start them (installing them from Debian's packages if needed) when they do not.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
ls /etc/postgresql >/dev/null 2>&1 || need_install+=(postgresql)
if ((${#need_install[@]})) && { ! port_open 6379 || ! port_open 5432; }; then
  echo "installing ${need_install[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

if ! port_open 6379; then
  echo "starting redis-server on 127.0.0.1:6379" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! port_open 5432; then
  echo "starting PostgreSQL on 127.0.0.1:5432" >&2
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main
  # Trust authentication on loopback for the test database (as on the project's machines).
  if ! grep -q "radreport-trust" "$conf/pg_hba.conf" 2>/dev/null; then
    sed -i '1i host all all 127.0.0.1/32 trust # radreport-trust\nhost all all ::1/128 trust # radreport-trust\nlocal all all trust # radreport-trust' "$conf/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi

for _ in $(seq 1 30); do port_open 6379 && port_open 5432 && break; sleep 1; done
port_open 6379 || { echo "Redis did not come up on 127.0.0.1:6379" >&2; exit 1; }
port_open 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
if command -v psql >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
fi
echo "services: redis and postgresql are up" >&2
