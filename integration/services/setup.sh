#!/usr/bin/env bash
# etcd and ZooKeeper for the etcd and zookeeper component types: installed
# from Debian's packages when missing and started on their standard
# loopback ports (etcd 2379, ZooKeeper 2181) beside the machine's shared
# services, unless something already answers there. Data lives under
# LAYOTTO_SERVICES_DIR (default ~/.cache/layotto-services); the servers keep
# running after this script, like the shared services.
set -euo pipefail

state="${LAYOTTO_SERVICES_DIR:-$HOME/.cache/layotto-services}"
mkdir -p "$state"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2 log=$3
  for _ in $(seq 1 120); do
    if listening "$port"; then echo "$name 127.0.0.1:$port up"; return 0; fi
    sleep 0.5
  done
  echo "$name did not start on $port; its log:" >&2
  tail -n 40 "$log" >&2 || true
  return 1
}

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
command -v java >/dev/null || missing+=(default-jre-headless)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >"$state/apt.log" 2>&1 || {
    $sudo apt-get update >>"$state/apt.log" 2>&1
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >>"$state/apt.log" 2>&1
  } || { tail -n 30 "$state/apt.log" >&2; exit 1; }
fi

if ! listening 2379; then
  mkdir -p "$state/etcd"
  nohup etcd --name layotto-test --data-dir "$state/etcd/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster layotto-test=http://127.0.0.1:2380 \
    >"$state/etcd/etcd.log" 2>&1 </dev/null &
  wait_for etcd 2379 "$state/etcd/etcd.log"
else
  echo "etcd 127.0.0.1:2379 up"
fi

if ! listening 2181; then
  mkdir -p "$state/zookeeper/data" "$state/zookeeper/conf"
  cat >"$state/zookeeper/conf/zoo.cfg" <<CFG
tickTime=2000
dataDir=$state/zookeeper/data
clientPort=2181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
maxSessionTimeout=60000
CFG
  cp /etc/zookeeper/conf_example/log4j.properties "$state/zookeeper/conf/" 2>/dev/null || true
  cp="$state/zookeeper/conf"
  for jar in /usr/share/java/zookeeper.jar /usr/share/java/zookeeper-jute.jar /usr/share/java/*.jar; do
    cp="$cp:$jar"
  done
  nohup java -Xmx256m -Dzookeeper.log.dir="$state/zookeeper" -Dzookeeper.root.logger=INFO,CONSOLE \
    -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$state/zookeeper/conf/zoo.cfg" \
    >"$state/zookeeper/zookeeper.log" 2>&1 </dev/null &
  wait_for ZooKeeper 2181 "$state/zookeeper/zookeeper.log"
else
  echo "ZooKeeper 127.0.0.1:2181 up"
fi
