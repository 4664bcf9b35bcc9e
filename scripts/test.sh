#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit,
# integration and doc tests. Tests against RabbitMQ need a broker at
# CLOUDBUS_AMQP_HOST:CLOUDBUS_AMQP_PORT (default 127.0.0.1:5672, guest/guest).
# A local broker that is installed but stopped is started; if none can be
# reached, this fails loudly: broker tests never skip silently.
set -euo pipefail
cd "$(dirname "$0")/.."

host=${CLOUDBUS_AMQP_HOST:-127.0.0.1}
port=${CLOUDBUS_AMQP_PORT:-5672}

broker_up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if ! broker_up; then
  if [[ "$host" == 127.0.0.1 || "$host" == localhost ]] && command -v rabbitmq-server >/dev/null; then
    echo "RabbitMQ is not running at $host:$port; starting it (rabbitmq-server -detached)" >&2
    rabbitmq-server -detached || true
    for _ in $(seq 1 90); do broker_up && break; sleep 1; done
  fi
fi
if ! broker_up; then
  echo "ERROR: no RabbitMQ broker reachable at $host:$port." >&2
  echo "       Start one (rabbitmq-server -detached) or set CLOUDBUS_AMQP_HOST/PORT." >&2
  exit 1
fi

# The failover tests (cloudbus/tests/amqp_failover.rs) kill broker nodes of
# a RabbitMQ cluster of their own: 3 local nodes on ports 5781-5783, apart
# from the broker above (which is neither touched nor clustered), started
# now in the background and stopped when this script ends, however it ends.
# Starting them needs RabbitMQ installed and root (or the rabbitmq user).
export CLOUDBUS_CLUSTER_DIR=/tmp/cloudbus-test-rabbitmq-cluster
export CLOUDBUS_CLUSTER_PORT=5781
export CLOUDBUS_CLUSTER_NAME=cloudbus-test
mkdir -p target
cluster_log=target/rabbitmq-cluster.log
scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true  # an interrupted run's
scripts/rabbitmq-cluster.sh start 3 >"$cluster_log" 2>&1 &
cluster_start=$!
trap 'wait "$cluster_start" 2>/dev/null; scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true' EXIT

# The cross-language tests run Python from a venv under target/ so nothing
# is installed system-wide: cloudbus/tests/interop.rs a client on pika, and
# the Python package's own pytest suite (clients/python) at the end. The
# package is reinstalled only when its sources change (a stamp of their
# hash in the venv). CLOUDBUS_INTEROP_PYTHON, if set, names another
# interpreter, which must already have pika, pytest and the package
# (pip install pika './clients/python[test]').
python_sources_hash() {
  (cd clients/python && find pyproject.toml README.md src -type f -not -path '*/__pycache__/*' \
    -not -path '*.egg-info/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
}
if [[ -z "${CLOUDBUS_INTEROP_PYTHON:-}" ]]; then
  venv_python="$PWD/target/interop-venv/bin/python3"
  stamp="$PWD/target/interop-venv/.cloudbus-python.sha256"
  want=$(python_sources_hash)
  [[ -x "$venv_python" ]] || python3 -m venv target/interop-venv 2>/dev/null || true
  if [[ -x "$venv_python" ]]; then
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] ||
       ! "$venv_python" -c 'import pika, pytest, cloudbus' 2>/dev/null; then
      echo "Installing pika and the Python package (clients/python) in target/interop-venv" >&2
      "$venv_python" -m pip install --quiet --disable-pip-version-check 'pika>=1.3,<2' './clients/python[test]'
      echo "$want" >"$stamp"
    fi
    export CLOUDBUS_INTEROP_PYTHON="$venv_python"
  else
    # No venv module (Debian without python3-venv): install for the user.
    python3 -c 'import pika, pytest, cloudbus' 2>/dev/null ||
      python3 -m pip install --quiet --user --break-system-packages 'pika>=1.3,<2' './clients/python[test]'
    export CLOUDBUS_INTEROP_PYTHON=python3
  fi
fi
"$CLOUDBUS_INTEROP_PYTHON" -c 'import pika, pytest, cloudbus' || {
  echo "ERROR: $CLOUDBUS_INTEROP_PYTHON lacks pika, pytest or cloudbus: pip install pika './clients/python[test]'" >&2
  exit 1
}

# The dashboard test (cli/tests/nodes.rs) loads the page in headless
# Chromium; CLOUDBUS_CHROMIUM, if set, names the browser.
if [[ -z "${CLOUDBUS_CHROMIUM:-}" ]] && ! command -v chromium >/dev/null; then
  echo "Chromium is not installed; installing it (apt-get install chromium)" >&2
  if [[ $(id -u) -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if ! wait "$cluster_start"; then
  echo "ERROR: the local RabbitMQ cluster for the failover tests did not start:" >&2
  cat "$cluster_log" >&2
  exit 1
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
else
  cargo test --workspace --all-targets --no-fail-fast
fi
cargo test --workspace --doc

# The Python package against Rust nodes (built above) on the broker.
(cd clients/python && "$CLOUDBUS_INTEROP_PYTHON" -m pytest -q -p no:cacheprovider)
