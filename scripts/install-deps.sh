#!/usr/bin/env bash
# Installs every system package swarm-rs needs to build, test and demo.
# Idempotent: re-running it on a prepared machine only checks.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Packages from the machine's own Debian release.
PACKAGES=(
  docker.io          # real engines (dockerd)
  docker-registry    # local registry for pull/push tests
  docker-compose     # compose client tests
  busybox-static     # rootfs for the imported busybox image
  iproute2           # network namespaces, veth, bridges
  iptables           # dockerd inside each namespace
  util-linux         # unshare, nsenter
  procps             # ps, pkill-free process checks
  make               # jemalloc's build (the manager's allocator)
  gcc                # crates that build C (jemalloc)
  protobuf-compiler  # etcd-client build
  libprotobuf-dev    # protobuf well-known types (descriptor.proto) for etcd-client
  etcd-server        # KV store for discovery/leadership tests
  zookeeper          # KV store for discovery/leadership tests
  default-jre-headless
  wrk                # throughput bench
  openssl            # test certificates
  curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
need_consul=0
command -v consul >/dev/null 2>&1 || need_consul=1

if [ ${#missing[@]} -gt 0 ] || [ "$need_consul" = 1 ]; then
  # Consul is only packaged in bullseye. Add that suite from the same mirror
  # this machine already uses, pinned low so nothing else comes from it.
  if [ "$need_consul" = 1 ] && [ ! -f /etc/apt/sources.list.d/swarm-rs-bullseye.sources ]; then
    mirror=""
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      mirror=$(awk '/^URIs:/ {print $2; exit}' "$f" | grep -v security || true)
      [ -n "$mirror" ] && break
    done
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
      mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
    fi
    if [ -z "$mirror" ]; then
      echo "install-deps: cannot find a Debian mirror in the apt sources" >&2
      exit 1
    fi
    cat > /etc/apt/sources.list.d/swarm-rs-bullseye.sources <<SRC
Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > /etc/apt/preferences.d/swarm-rs-bullseye <<PREF
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PREF
  fi
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ "$need_consul" = 1 ]; then
    apt-get install -y -qq --no-install-recommends -t bullseye consul
  fi
fi

# The packaged services must not run on their own: tests start private
# instances on free loopback ports.
for svc in docker docker.socket containerd etcd zookeeper docker-registry consul; do
  systemctl stop "$svc" >/dev/null 2>&1 || true
done

for bin in dockerd containerd docker-registry etcd consul java protoc wrk unshare nsenter ip busybox docker-compose; do
  command -v "$bin" >/dev/null 2>&1 || { echo "install-deps: $bin missing after install" >&2; exit 1; }
done
echo "install-deps: all system dependencies present"
