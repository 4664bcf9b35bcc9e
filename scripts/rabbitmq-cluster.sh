#!/usr/bin/env bash
# A local RabbitMQ cluster of N nodes on one machine, for trying failover and
# for the test suite's cluster tests. It is separate from any broker already
# running (the one at 5672 is neither touched nor clustered): each node has its
# own Erlang node name, AMQP and distribution ports, config, data and log
# directories, all under one folder that `stop` removes.
#
#   scripts/rabbitmq-cluster.sh start [N]   start N nodes (default 3) and cluster them
#   scripts/rabbitmq-cluster.sh urls        the AMQP URLs, comma-separated (for --amqp-url)
#   scripts/rabbitmq-cluster.sh kill I      SIGKILL node I's process (a crash, not a stop)
#   scripts/rabbitmq-cluster.sh start-node I  start node I again after kill/stop-node
#   scripts/rabbitmq-cluster.sh stop-node I   stop node I gracefully
#   scripts/rabbitmq-cluster.sh pid I       the OS pid of node I
#   scripts/rabbitmq-cluster.sh status      the cluster as node 1 sees it
#   scripts/rabbitmq-cluster.sh ctl ARGS…   rabbitmqctl ARGS against the first running node
#   scripts/rabbitmq-cluster.sh stop        stop every node and delete the folder
#
# Settings (environment):
#   CLOUDBUS_CLUSTER_DIR   the folder (default /tmp/cloudbus-rabbitmq-cluster)
#   CLOUDBUS_CLUSTER_PORT  node 1's AMQP port; node I uses PORT+I-1 (default 5681)
#   CLOUDBUS_CLUSTER_NAME  node name prefix; node I is NAME<I>@localhost (default cloudbus-rmq)
# Node I's Erlang distribution port is its AMQP port + 20000, as RabbitMQ's
# own default (5672 → 25672). Needs RabbitMQ installed, run as root or as the
# rabbitmq user (the nodes run as rabbitmq and share its Erlang cookie).
set -euo pipefail

dir=${CLOUDBUS_CLUSTER_DIR:-/tmp/cloudbus-rabbitmq-cluster}
base_port=${CLOUDBUS_CLUSTER_PORT:-5681}
prefix=${CLOUDBUS_CLUSTER_NAME:-cloudbus-rmq}
sbin=/usr/lib/rabbitmq/bin

die() { echo "rabbitmq-cluster: $*" >&2; exit 1; }

[[ -x $sbin/rabbitmq-server ]] || die "RabbitMQ is not installed ($sbin/rabbitmq-server missing)"

if [[ $(id -u) -eq 0 ]]; then
  as_rabbitmq() { runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "$@"; }
elif [[ $(id -un) == rabbitmq ]]; then
  as_rabbitmq() { env HOME=/var/lib/rabbitmq "$@"; }
else
  die "run as root or as the rabbitmq user (the nodes run as rabbitmq)"
fi

node_name() { echo "$prefix$1@localhost"; }
node_port() { echo $((base_port + $1 - 1)); }
node_dir() { echo "$dir/node$1"; }

is_index() { [[ $1 =~ ^[1-9][0-9]*$ ]] || die "node index must be a positive number, got '$1'"; }

# The environment of node I: everything RabbitMQ would otherwise take from
# /etc/rabbitmq or /var/lib/rabbitmq points into the node's own folder.
node_env() {
  local i=$1 d
  d=$(node_dir "$i")
  echo RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
    RABBITMQ_NODENAME="$(node_name "$i")" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_MNESIA_DIR="$d/mnesia/data" \
    RABBITMQ_PLUGINS_EXPAND_DIR="$d/mnesia/plugins-expand" \
    RABBITMQ_FEATURE_FLAGS_FILE="$d/mnesia/feature_flags" \
    RABBITMQ_QUORUM_DIR="$d/mnesia/quorum" \
    RABBITMQ_STREAM_DIR="$d/mnesia/stream" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$d/rabbitmq.pid" \
    RABBITMQ_DIST_PORT=$(($(node_port "$i") + 20000))
}

ctl() {
  local i=$1
  shift
  # shellcheck disable=SC2046
  as_rabbitmq env $(node_env "$i") "$sbin/rabbitmqctl" -q -n "$(node_name "$i")" "$@"
}

prepare_node() {
  local i=$1 d
  d=$(node_dir "$i")
  mkdir -p "$d/mnesia" "$d/log"
  # Erlang listens on loopback only, as the machine's own broker does.
  cat >"$d/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(node_port "$i")
loopback_users.guest = true
log.console = false
log.file.level = warning
EOF
  echo "[]." >"$d/advanced.config"
  echo "[]." >"$d/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$d" 2>/dev/null || true
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_running() { [[ -f $(node_dir "$1")/rabbitmq.pid ]] && ctl "$1" status >/dev/null 2>&1; }

start_node() {
  local i=$1
  [[ -d $(node_dir "$i") ]] || prepare_node "$i"
  if node_running "$i"; then return 0; fi
  if port_open "$(node_port "$i")"; then
    die "port $(node_port "$i") is taken by something else; set CLOUDBUS_CLUSTER_PORT"
  fi
  # shellcheck disable=SC2046
  (cd "$(node_dir "$i")" && as_rabbitmq env $(node_env "$i") "$sbin/rabbitmq-server" -detached) ||
    die "node $i did not start; see $(node_dir "$i")/log"
}

wait_node() {
  local i=$1
  # rabbitmqctl wait returns once the node's applications run (or the timeout).
  ctl "$i" wait --timeout 120 "$(node_dir "$i")/rabbitmq.pid" >/dev/null ||
    die "node $i ($(node_name "$i")) did not come up; see $(node_dir "$i")/log"
  for _ in $(seq 1 200); do port_open "$(node_port "$i")" && return 0; sleep 0.1; done
  die "node $i runs but does not listen on $(node_port "$i")"
}

count_nodes() { ls -d "$dir"/node* 2>/dev/null | wc -l; }

joined() { ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node_name 1)\""; }

cmd_start() {
  local n=${1:-3} i
  is_index "$n"
  mkdir -p "$dir"
  chmod 755 "$dir"
  for ((i = 1; i <= n; i++)); do start_node "$i"; done
  for ((i = 1; i <= n; i++)); do wait_node "$i"; done
  for ((i = 2; i <= n; i++)); do
    joined "$i" && continue
    ctl "$i" stop_app
    ctl "$i" join_cluster "$(node_name 1)"
    ctl "$i" start_app
  done
  ctl 1 await_online_nodes "$n" --timeout 120 >/dev/null 2>&1 || true
  cmd_urls
}

cmd_urls() {
  local n i urls=()
  n=$(count_nodes)
  [[ $n -gt 0 ]] || die "no cluster in $dir; run: $0 start"
  for ((i = 1; i <= n; i++)); do urls+=("amqp://guest:guest@127.0.0.1:$(node_port "$i")/%2f"); done
  (IFS=,; echo "${urls[*]}")
}

cmd_pid() {
  is_index "$1"
  local f
  f=$(node_dir "$1")/rabbitmq.pid
  [[ -s $f ]] || die "node $1 has no pid file"
  cat "$f"
}

cmd_kill() {
  local pid
  pid=$(cmd_pid "$1")
  kill -KILL "$pid" 2>/dev/null || true
  # Wait until the process is gone, so that the caller sees a dead node.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$(node_dir "$1")/rabbitmq.pid"
}

cmd_start_node() {
  is_index "$1"
  [[ -d $(node_dir "$1") ]] || die "node $1 is not part of the cluster in $dir"
  start_node "$1"
  wait_node "$1"
}

cmd_stop_node() {
  is_index "$1"
  node_running "$1" || return 0
  ctl "$1" stop "$(node_dir "$1")/rabbitmq.pid" >/dev/null 2>&1 || cmd_kill "$1"
}

cmd_stop() {
  local i n
  [[ -d $dir ]] || return 0
  n=$(count_nodes)
  # Stopped in reverse order, then any process that did not stop is killed.
  for ((i = n; i >= 1; i--)); do
    if [[ -s $(node_dir "$i")/rabbitmq.pid ]]; then
      ctl "$i" stop "$(node_dir "$i")/rabbitmq.pid" >/dev/null 2>&1 || true
      [[ -s $(node_dir "$i")/rabbitmq.pid ]] && cmd_kill "$i"
    fi
  done
  rm -rf "$dir"
}

first_running() {
  local i n
  n=$(count_nodes)
  for ((i = 1; i <= n; i++)); do
    [[ -s $(node_dir "$i")/rabbitmq.pid ]] && { echo "$i"; return 0; }
  done
  die "no node of the cluster in $dir is running"
}

case "${1:-}" in
  start) cmd_start "${2:-3}" ;;
  stop) cmd_stop ;;
  urls) cmd_urls ;;
  pid) cmd_pid "${2:?node index}" ;;
  kill) cmd_kill "${2:?node index}" ;;
  start-node) cmd_start_node "${2:?node index}" ;;
  stop-node) cmd_stop_node "${2:?node index}" ;;
  status) ctl "$(first_running)" cluster_status ;;
  ctl) shift; ctl "$(first_running)" "$@" ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
