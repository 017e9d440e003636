# A throwaway PostgreSQL for tests and benchmarks: Debian's server binaries, a cluster in
# a directory of its own, listening on one loopback port, stopped and removed after.
#   source tools/lib/pg.sh
#   nf_pg_start DIR PORT [SETTING=VALUE...]   initdb + pg_ctl start; sets NF_PG_URL
#   nf_pg_stop DIR                           fast shutdown (safe to call twice)
# PostgreSQL refuses to run as root: as root the cluster belongs to the system user
# `nexusflow` (created when missing), otherwise to the caller.
# shellcheck shell=bash

# nf_pg_bindir: the newest installed server's bin directory.
nf_pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2
    return 1
  fi
  printf '%s\n' "$dir"
}

# nf_pg_user: who runs the server.
nf_pg_user() {
  if [ "$(id -u)" != 0 ]; then
    id -un
    return
  fi
  if ! id nexusflow >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nexusflow
  fi
  echo nexusflow
}

# _nf_pg_as USER CMD...: runs CMD as USER (directly when that is the caller).
_nf_pg_as() {
  local user=$1
  shift
  if [ "$(id -un)" = "$user" ]; then
    "$@"
  else
    runuser -u "$user" -- "$@"
  fi
}

# nf_pg_start DIR PORT [SETTING=VALUE...]: a new cluster in DIR (created when missing)
# on 127.0.0.1:PORT, trust authentication for its superuser on loopback only; extra
# server settings (e.g. fsync=off) as arguments. Sets NF_PG_URL to its URL.
nf_pg_start() {
  local dir=$1 port=$2
  shift 2
  local bin user
  bin="$(nf_pg_bindir)" || return 1
  user="$(nf_pg_user)" || return 1
  mkdir -p "$dir"
  chown "$user" "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _nf_pg_as "$user" "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 \
      --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      return 1
    }
  fi
  local opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
  local setting
  for setting in "$@"; do opts+=" -c $setting"; done
  if ! _nf_pg_as "$user" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 \
    start >/dev/null; then
    echo "PostgreSQL did not start on 127.0.0.1:$port; its log:" >&2
    tail -n 20 "$dir/server.log" >&2 || true
    return 1
  fi
  NF_PG_URL="postgresql://$user@127.0.0.1:$port/postgres"
  export NF_PG_URL
}

# nf_pg_stop DIR: stops the cluster in DIR when it runs.
nf_pg_stop() {
  local dir=$1 bin user
  [ -f "$dir/data/postmaster.pid" ] || return 0
  bin="$(nf_pg_bindir)" || return 1
  user="$(stat -c %U "$dir/data")"
  _nf_pg_as "$user" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}
