# Throwaway Redis servers for tests and local runs: loopback only, no persistence,
# daemonized with a pidfile in the given directory.
# shellcheck shell=bash

# nf_redis_start DIR PORT: starts redis-server on 127.0.0.1:PORT (pidfile and log in DIR)
# and waits until it answers. Fails when redis-server is not installed.
nf_redis_start() {
  local dir=$1 port=$2
  if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed (Debian package redis-server)" >&2
    return 1
  fi
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
    echo "127.0.0.1:$port already answers (another redis-server?)" >&2
    return 1
  fi
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" || return 1
  # Ready when the server answering on the port is the one just started (not another
  # process's server that already held the port).
  local i pid
  for ((i = 0; i < 100; i++)); do
    pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
      tr -d '\r' | grep -qx "process_id:$pid"; then
      return 0
    fi
    [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && break  # it exited (port taken?)
    sleep 0.1
  done
  echo "redis-server on 127.0.0.1:$port did not start (is the port taken?); its log:" >&2
  cat "$dir/redis.log" >&2 || true
  return 1
}

# nf_redis_stop DIR: stops the server whose pidfile is in DIR (started by nf_redis_start)
# and waits until it is gone. Nothing to do when it is not running.
nf_redis_stop() {
  local dir=$1 pid i
  [ -f "$dir/redis.pid" ] || return 0
  pid=$(cat "$dir/redis.pid")
  rm -f "$dir/redis.pid"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}
