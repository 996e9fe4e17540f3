#!/usr/bin/env bash
# testbed.sh - a throw-away cluster of real Docker engines for swarm-rs tests.
#
# Every engine is a separate "host" on this machine:
#   * its own network namespace (own IP, docker0 bridge, iptables, port space),
#   * its own UTS namespace (hostname = engine name, e.g. node-02),
#   * its own mount namespace with a private /etc/docker (so dockerd generates
#     its own key.json = its own engine ID) and a private /run (containerd shim
#     sockets, xtables lock),
#   * its own data-root / exec-root / managed containerd under DIR.
# All engines of one testbed hang off one bridge in the root namespace, so the
# test process reaches them at 10.250.K.(10+i) and they reach the optional
# registry at the bridge address 10.250.K.1:5000.
#
# Usage:
#   testbed.sh up --dir DIR --engines N [--label node-02:key=value]...
#                 [--registry] [--tls [--tls-trust CA.pem]...] [--owner-pid PID]
#   testbed.sh down --dir DIR
#   testbed.sh stop-engine  --dir DIR --name node-02   # SIGKILL (crash)
#   testbed.sh start-engine --dir DIR --name node-02   # restart, same ID/address
#   testbed.sh cut  --dir DIR --name node-02           # host-side veth down
#   testbed.sh heal --dir DIR --name node-02           # host-side veth up
#   testbed.sh freeze --dir DIR --name node-02         # SIGSTOP dockerd (hangs)
#   testbed.sh thaw   --dir DIR --name node-02         # SIGCONT dockerd
#   testbed.sh reap                                    # tear down stale testbeds
#
# `up` prints only machine-readable lines on stdout (all logging is on stderr):
#   engine <name> <ip>:2375 <unix socket path>     one per engine (:2376 with --tls)
#   registry <ip>:5000                             with --registry
#   tls <DIR/tls>                                  with --tls
#   bridge <ip>
#   dir <DIR>
#   index <K>
#
# With --tls every engine serves its API only over TLS on <ip>:2376 and
# requires a client certificate (dockerd --tlsverify); its unix socket stays
# plain. `up` makes a throw-away CA and the certificates under DIR/tls:
#   ca.pem ca-key.pem               the CA (P-256 key)
#   node-NN/{ca,cert,key}.pem       engine NN: SAN IP:<ip>,DNS:node-NN
#   client/{ca,cert,key}.pem        SAN IP:127.0.0.1,DNS:localhost: for the
#                                   Docker CLI (DOCKER_CERT_PATH) and for
#                                   managers serving on 127.0.0.1
# Every certificate is for serverAuth and clientAuth and valid for 30 days.
# --tls-trust adds the CA certificates of a PEM file to what the engines
# trust (clients certified by that CA are accepted too), e.g. for a test
# that rotates a manager onto a new CA. stop-engine/start-engine keep the
# engine on TLS.
#
# Bookkeeping shared by all testbeds lives in /tmp/swarm-testbed:
#   slots/K/{dir,owner}  one directory per allocated index K (mkdir = atomic)
#   locks/K              flock(1) file serialising teardowns of index K
#   cache/               busybox image tarball (docker save), built once
#
# stop-engine simulates a host crash: dockerd gets SIGKILL first, then every
# other process of that engine (containerd, shims, docker-proxy, containers).
# SWARM_TESTBED_PING_TIMEOUT (seconds, default 60) bounds the wait for /_ping.
set -euo pipefail

SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
readonly SCRIPT_PATH
readonly STATE_ROOT=/tmp/swarm-testbed
readonly SLOTS=$STATE_ROOT/slots
readonly LOCKS=$STATE_ROOT/locks
readonly CACHE=$STATE_ROOT/cache
readonly MAX_INDEX=200
readonly MAX_ENGINES=99
readonly DOCKER_PORT=2375
readonly DOCKER_TLS_PORT=2376
readonly REGISTRY_PORT=5000
readonly PING_TIMEOUT=${SWARM_TESTBED_PING_TIMEOUT:-60}
readonly STOP_TIMEOUT=10
readonly INSTALL_HINT="run: sudo scripts/install-deps.sh"

# The Docker CLI used to talk to the engines (a newer client is fine; it
# negotiates the API version down to the 20.10 daemons).
if [ -x /usr/local/bin/docker ]; then
  DOCKER_CLI=/usr/local/bin/docker
else
  DOCKER_CLI=$(command -v docker || true)
fi

# Runs inside each engine's fresh UTS+mount namespace, just before dockerd.
# shellcheck disable=SC2016 # expanded by the inner sh, not here
readonly ENGINE_BOOT='set -e
edir=$1 name=$2
shift 2
mkdir -p /etc/docker
mount --bind "$edir/etc" /etc/docker   # empty dir -> fresh key.json -> own engine ID
mount --bind "$edir/run" /run          # private /run (shim sockets, xtables.lock)
hostname "$name"                       # engine name comes from the hostname
exec "$@"'

# Globals describing the testbed being worked on (filled by load_env / cmd_up).
CALLER_PWD=$PWD
DIR=""        # absolute testbed directory
K=""          # testbed index 1..MAX_INDEX
N=0           # number of engines
REGISTRY=0    # 1 when the testbed has a registry
TLS=0         # 1 when the engines serve their TCP API over TLS (--tls)

# ---------------------------------------------------------------- utilities --

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  # shellcheck disable=SC2016 # literal backquotes in the pattern
  sed -n '/^# Usage:/,/^# `up` prints/p' "$SCRIPT_PATH" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

now_ms() {
  local t=${EPOCHREALTIME//[.,]/}
  echo $((t / 1000))
}

# Engine i (1-based) naming; everything derives from the index K and i.
engine_name() { printf 'node-%02d' "$1"; }
engine_ip() { echo "10.250.$K.$((10 + $1))"; }
engine_ns() { echo "swtb$K-n$1"; }
engine_veth() { echo "swtb${K}v$1"; }
engine_dir() { echo "$DIR/$(engine_name "$1")"; }
engine_sock() { echo "$(engine_dir "$1")/docker.sock"; }
engine_port() { if [ "$TLS" = 1 ]; then echo "$DOCKER_TLS_PORT"; else echo "$DOCKER_PORT"; fi; }
tls_dir() { echo "$DIR/tls"; }
bridge_name() { echo "swtb$1"; }
bridge_ip() { echo "10.250.$1.1"; }

# `docker` against one engine's unix socket, isolated from the caller's
# environment (contexts, credential helpers in ~/.docker).
dock() {
  local sock=$1
  shift
  env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    DOCKER_CONFIG="$DIR/docker-config" "$DOCKER_CLI" -H "unix://$sock" "$@"
}

require_root_and_tools() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, mounts)"
  local t missing=()
  for t in dockerd containerd runc ip nsenter unshare setsid flock curl busybox ps "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ -n "$DOCKER_CLI" ] || missing+=(docker)
  [ -x /bin/busybox ] || missing+=(/bin/busybox)
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]}; $INSTALL_HINT"
}

# ------------------------------------------------------------ process helpers --
# Processes are only ever identified by PID (pidfiles, namespace membership,
# cgroup membership, parent/child relationships), never by name.

# True if PID exists and is not a zombie.
is_alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Kernel start time of PID (guards against PID reuse).
proc_start_time() {
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# True if PID's command line contains STRING (a path of ours).
pid_cmd_has() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Prints the PID in PIDFILE if that process is alive and its command line
# mentions MARK (so a recycled PID is never signalled).
pidfile_pid() {
  local file=$1 mark=$2 pid
  pid=$(cat "$file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_alive "$pid" && pid_cmd_has "$pid" "$mark" || return 1
  echo "$pid"
}

# wait_gone TIMEOUT_S PID...: true once none of the PIDs is alive.
wait_gone() {
  local deadline p alive
  deadline=$(($(now_ms) + $1 * 1000))
  shift
  while :; do
    alive=0
    for p in "$@"; do
      if is_alive "$p"; then alive=1 && break; fi
    done
    [ "$alive" = 0 ] && return 0
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# terminate TIMEOUT_S PID...: SIGTERM, wait, then SIGKILL what is left.
terminate() {
  local timeout=$1
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  wait_gone "$timeout" "$@" && return 0
  log "SIGKILL after ${timeout}s: $*"
  kill -KILL "$@" 2>/dev/null || true
  wait_gone 5 "$@" || true
}

# Prints the given PIDs and all their descendants.
with_descendants() {
  [ $# -gt 0 ] || return 0
  ps -e -o pid=,ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do {
        changed = 0
        for (p in parent)
          if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
      } while (changed)
      for (p in keep) print p
    }'
}

# -------------------------------------------------------- slots and reaping --

slot_dir_of() { cat "$SLOTS/$1/dir" 2>/dev/null || true; }

# True if the owner recorded for slot K ("PID STARTTIME") is gone.
slot_owner_dead() {
  local pid start
  read -r pid start <"$SLOTS/$1/owner" 2>/dev/null || return 1
  [ -n "${pid:-}" ] || return 1 # no owner: lives until `down`
  is_alive "$pid" || return 0
  [ "$(proc_start_time "$pid")" = "${start:-}" ] || return 0
  return 1
}

slot_is_stale() {
  local k=$1 dir
  [ -d "$SLOTS/$k" ] || return 1
  if [ ! -f "$SLOTS/$k/dir" ]; then
    # mkdir'ed but never filled in: an `up` died right after allocating.
    [ -n "$(find "$SLOTS/$k" -maxdepth 0 -mmin +1 2>/dev/null)" ]
    return
  fi
  dir=$(slot_dir_of "$k")
  [ -f "$dir/testbed.env" ] || return 0
  slot_owner_dead "$k"
}

# Tears down every testbed whose owner died or whose directory vanished, and
# removes namespaces/bridges/cgroups left behind without any slot.
reap_stale() {
  mkdir -p "$SLOTS" "$LOCKS"
  local slot k ns
  for slot in "$SLOTS"/*; do
    [ -d "$slot" ] || continue
    k=${slot##*/}
    [[ $k =~ ^[0-9]+$ ]] || continue
    (
      exec 9>"$LOCKS/$k"
      flock -n 9 || exit 0 # someone is tearing it down right now
      if slot_is_stale "$k"; then
        log "reaping stale testbed $k ($(slot_dir_of "$k"))"
        teardown "$k" "$(slot_dir_of "$k")"
        # A slot taken but never filled in has no dir for teardown to match.
        [ -f "$SLOTS/$k/dir" ] || rm -rf "${SLOTS:?}/$k"
      fi
    )
  done
  # Leftovers of a teardown that was itself killed half-way.
  for k in $( (ip netns list 2>/dev/null | sed -n 's/^swtb\([0-9]\+\)-n[0-9]\+\b.*/\1/p'
    ip -o link show 2>/dev/null | sed -n 's/^[0-9]\+: swtb\([0-9]\+\)[v:@].*/\1/p'
    for ns in /sys/fs/cgroup/swtb*-n* /sys/fs/cgroup/*/swtb*-n*; do
      [ -d "$ns" ] && basename "$ns" | sed -n 's/^swtb\([0-9]\+\)-n.*/\1/p'
    done) | sort -un); do
    (
      exec 9>"$LOCKS/$k"
      flock 9
      if [ ! -d "$SLOTS/$k" ]; then
        log "removing leftovers of testbed index $k"
        teardown "$k" ""
      fi
    )
  done
}

# Allocates a free index K (atomic mkdir), records DIR and owner in the slot.
alloc_index() {
  local owner=$1 k
  mkdir -p "$SLOTS" "$LOCKS"
  for ((k = 1; k <= MAX_INDEX; k++)); do
    # The slot is created under the index lock, the same lock under which a
    # reaper checks that the slot is absent before sweeping index leftovers:
    # otherwise a concurrent `up` could sweep (and free) a slot just taken.
    # A locked index is being reaped or taken right now: try the next one.
    if (
      exec 9>"$LOCKS/$k"
      flock -n 9 || exit 1
      mkdir "$SLOTS/$k" 2>/dev/null || exit 1
      echo "$DIR" >"$SLOTS/$k/dir"
      echo "$owner" >"$SLOTS/$k/owner"
      # Anything still named after this index is a leak we now own.
      cleanup_net "$k"
      cleanup_cgroups "$k"
    ); then
      K=$k
      return 0
    fi
  done
  die "no free testbed index (all $MAX_INDEX in use; try: $0 reap)"
}

# ------------------------------------------------------------------ network --

list_ns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^swtb$1-n[0-9]+$" || true; }

create_bridge() {
  local br
  br=$(bridge_name "$K")
  ip link add "$br" type bridge
  ip addr add "$(bridge_ip "$K")/24" dev "$br"
  ip link set "$br" up
  # With br_netfilter loaded, frames bridged between two engines traverse the
  # root namespace's FORWARD chain; if something set its policy to DROP
  # (e.g. a dockerd in the root namespace), engines could not reach each other.
  if [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] &&
    command -v iptables >/dev/null 2>&1 &&
    ! iptables -w -S FORWARD 2>/dev/null | grep -qx -- '-P FORWARD ACCEPT'; then
    iptables -w -I FORWARD -i "$br" -o "$br" -j ACCEPT || true
  fi
}

# Namespace swtbK-ni with eth0 (peer of host-side swtbKvi on the bridge) and lo.
create_engine_net() {
  local i=$1 ns veth
  ns=$(engine_ns "$i")
  veth=$(engine_veth "$i")
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$(bridge_name "$K")" up
  ip -n "$ns" addr add "$(engine_ip "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

# Removes namespaces, veths, bridge and our FORWARD rule of index K.
cleanup_net() {
  local k=$1 ns link br
  br=$(bridge_name "$k")
  for ns in $(list_ns "$k"); do
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
    grep -E "^swtb${k}v[0-9]+$" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$br" 2>/dev/null || true
  if command -v iptables >/dev/null 2>&1; then
    while iptables -w -D FORWARD -i "$br" -o "$br" -j ACCEPT 2>/dev/null; do :; done
  fi
}

# ------------------------------------------------------------------- cgroups --
# Each engine runs its containers under cgroup parent /swtbK-ni, which gives
# teardown an exact list of container processes and lets it remove the
# cgroups a SIGKILLed runtime leaves behind.

# engine_cgroup_dirs K [I]: cgroup directories of engine I (default: all
# engines) of index K, in every mounted hierarchy.
engine_cgroup_dirs() {
  local d pat="swtb$1-n${2:-[0-9]*}"
  # $pat unquoted on purpose: it is a glob (and has no blanks).
  # shellcheck disable=SC2231
  for d in /sys/fs/cgroup/$pat /sys/fs/cgroup/*/$pat; do
    [ -d "$d" ] && echo "$d"
  done
  return 0
}

# kill_cgroup_procs K [I]: SIGKILL every container process of the engine(s).
kill_cgroup_procs() {
  local d f pids
  for d in $(engine_cgroup_dirs "$1" "${2:-}"); do
    # A paused (frozen) container would never see the SIGKILL.
    find "$d" -name freezer.state -exec sh -c 'for f; do echo THAWED >"$f"; done' sh {} + 2>/dev/null || true
    find "$d" -name cgroup.freeze -exec sh -c 'for f; do echo 0 >"$f"; done' sh {} + 2>/dev/null || true
    pids=$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    for f in $pids; do kill -KILL "$f" 2>/dev/null || true; done
  done
}

cleanup_cgroups() {
  local k=$1 d _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill_cgroup_procs "$k"
    for d in $(engine_cgroup_dirs "$k"); do
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    [ -z "$(engine_cgroup_dirs "$k")" ] && return 0
    sleep 0.2
  done
  log "warning: could not remove cgroups: $(engine_cgroup_dirs "$k" | tr '\n' ' ')"
}

# ------------------------------------------------------------------ engines --

# Writes the dockerd arguments of engine i (one per line) so that
# start-engine restarts it with exactly the same settings (TLS included).
write_engine_args() {
  local i=$1 edir label certs
  shift
  edir=$(engine_dir "$i")
  certs="$(tls_dir)/$(engine_name "$i")"
  mkdir -p "$edir/etc" "$edir/run" "$edir/data" "$edir/exec"
  {
    printf '%s\n' --data-root "$edir/data" --exec-root "$edir/exec" \
      --pidfile "$edir/dockerd.pid" \
      -H "unix://$edir/docker.sock" -H "tcp://$(engine_ip "$i"):$(engine_port)"
    if [ "$TLS" = 1 ]; then
      # --tlsverify: TLS on the TCP socket with client certificates required
      # (the unix socket stays plain).
      printf '%s\n' --tlsverify --tlscacert "$certs/ca.pem" --tlscert "$certs/cert.pem" --tlskey "$certs/key.pem"
    else
      # An explicit --tls=false: dockerd 20.10 pauses its startup to warn
      # about a plain TCP socket unless told that this is intended.
      printf '%s\n' --tls=false
    fi
    printf '%s\n' --storage-driver=vfs \
      --cgroup-parent "/$(engine_ns "$i")" \
      --insecure-registry "$(bridge_ip "$K"):$REGISTRY_PORT"
    for label in "$@"; do printf '%s\n' --label "$label"; done
  } >"$edir/dockerd.args"
}

# Starts engine i's dockerd detached (own session, stdio to its log) inside
# its network namespace and new UTS+mount namespaces. Sets LAUNCHER_PID: the
# PID that execs into dockerd (setsid does not fork here because a background
# job of a non-interactive shell is never a process-group leader).
LAUNCHER_PID=""
launch_dockerd() {
  local i=$1 edir name args
  edir=$(engine_dir "$i")
  name=$(engine_name "$i")
  mapfile -t args <"$edir/dockerd.args"
  rm -f "$edir/dockerd.pid" # a stale pidfile with a recycled PID blocks dockerd
  # After a crash dockerd looks at its managed containerd's pidfile and, if
  # that PID "exists", waits for it instead of starting a new one. A killed
  # containerd can linger as an unreaped zombie (PID 1 here reaps lazily), so
  # drop the pidfile unless it names a live containerd of this engine.
  pidfile_pid "$edir/exec/containerd/containerd.pid" "$edir/" >/dev/null ||
    rm -f "$edir/exec/containerd/containerd.pid"
  echo "--- $(date '+%F %T') starting $name" >>"$edir/dockerd.log"
  setsid nsenter --net="/var/run/netns/$(engine_ns "$i")" \
    unshare --uts --mount --propagation private \
    sh -c "$ENGINE_BOOT" sh "$edir" "$name" dockerd "${args[@]}" \
    >>"$edir/dockerd.log" 2>&1 </dev/null &
  LAUNCHER_PID=$!
}

# Prints the PID of engine i's dockerd if it is running.
dockerd_pid() {
  local edir
  edir=$(engine_dir "$1")
  pidfile_pid "$edir/dockerd.pid" "$edir/"
}

# curl's options to reach an engine's TCP API: with --tls, the client
# certificate and the testbed CA (empty otherwise).
engine_curl_opts() {
  [ "$TLS" = 1 ] || return 0
  local c
  c="$(tls_dir)/client"
  printf '%s\n' --cacert "$c/ca.pem" --cert "$c/cert.pem" --key "$c/key.pem"
}

# wait_until_answers WHAT URL LOG SECONDS [DIED...]: polls URL until it
# answers. Fails after SECONDS, or as soon as the command DIED... (if given)
# says the server is gone, showing the last lines of LOG either way. An
# https:// URL is asked with engine_curl_opts.
wait_until_answers() {
  local what=$1 url=$2 logfile=$3 seconds=$4 deadline opts=()
  shift 4
  if [[ $url == https://* ]]; then mapfile -t opts < <(engine_curl_opts); fi
  deadline=$(($(now_ms) + seconds * 1000))
  until curl -sf -m 2 -o /dev/null "${opts[@]}" "$url"; do
    if [ $# -gt 0 ] && "$@"; then
      log "$what exited during startup; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      log "$what: no answer on $url after ${seconds}s; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# dockerd_gone I LAUNCHER: true once engine i's launcher has exited and no
# dockerd of it runs.
dockerd_gone() {
  ! is_alive "$2" && ! dockerd_pid "$1" >/dev/null
}

# Waits until engine i answers GET /_ping on its TCP address (over TLS with
# the client certificate, with --tls); with the PID of its launcher, fails
# early if dockerd exits during startup.
wait_engine_ready() {
  local i=$1 launcher=${2:-} what url logfile scheme=http
  if [ "$TLS" = 1 ]; then scheme=https; fi
  what="$(engine_name "$i"): dockerd"
  url="$scheme://$(engine_ip "$i"):$(engine_port)/_ping"
  logfile="$(engine_dir "$i")/dockerd.log"
  if [ -n "$launcher" ]; then
    wait_until_answers "$what" "$url" "$logfile" "$PING_TIMEOUT" dockerd_gone "$i" "$launcher"
  else
    wait_until_answers "$what" "$url" "$logfile" "$PING_TIMEOUT"
  fi
}

# kill_ns_procs NS...: SIGKILL everything in the given network namespaces
# (dockerd, containerd, shims, docker-proxy) plus descendants (containers,
# which live in namespaces of their own), until nothing is left.
kill_ns_procs() {
  local round ns all
  for round in $(seq 1 50); do
    all=()
    for ns in "$@"; do
      mapfile -t -O "${#all[@]}" all < <(ip netns pids "$ns" 2>/dev/null || true)
    done
    [ ${#all[@]} -eq 0 ] && return 0
    [ "$round" = 1 ] || sleep 0.1
    with_descendants "${all[@]}" | xargs -r kill -KILL 2>/dev/null || true
  done
  log "warning: processes left in namespace(s) $*"
}

# Kills every process of every engine of index K: containers (by cgroup),
# dockerd (by pidfile; SIGTERM first so it shuts down its containerd), then
# whatever is left in the engines' network namespaces.
kill_engines() {
  local k=$1 dir=$2 d pid pids=()
  kill_cgroup_procs "$k"
  if [ -n "$dir" ]; then
    for d in "$dir"/node-*/; do
      [ -d "$d" ] || continue
      pid=$(pidfile_pid "$d/dockerd.pid" "$d") && pids+=("$pid")
    done
  fi
  terminate "$STOP_TIMEOUT" "${pids[@]}"
  # shellcheck disable=SC2046 # namespace names have no blanks
  kill_ns_procs $(list_ns "$k")
}

# ---------------------------------------------------------------- the image --

busybox_cache_tar() {
  echo "$CACHE/busybox-$(sha256sum /bin/busybox | cut -c1-16).tar"
}

# Builds the busybox image once per machine: a rootfs of busybox-static plus
# applet symlinks, `docker import`ed into the given engine and `docker save`d
# into the cache, so every engine of every testbed loads the same image ID.
ensure_busybox_cache() {
  local sock=$1 cached tmp a
  cached=$(busybox_cache_tar)
  mkdir -p "$CACHE"
  (
    exec 8>"$CACHE/.lock"
    flock 8
    [ -s "$cached" ] && exit 0
    log "building busybox image (once; cached in $cached)"
    tmp=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" \
      "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev"
    chmod 1777 "$tmp/rootfs/tmp"
    cp /bin/busybox "$tmp/rootfs/bin/busybox"
    for a in $(/bin/busybox --list); do
      [ "$a" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$a"
    done
    tar --numeric-owner --owner=0 --group=0 -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
    dock "$sock" import -c 'CMD ["sh"]' "$tmp/rootfs.tar" busybox:latest >/dev/null
    dock "$sock" save -o "$tmp/image.tar" busybox:latest
    mv "$tmp/image.tar" "$cached"
  )
}

# Per-engine startup job: wait for /_ping, then load busybox.
engine_ready_job() {
  local i=$1 launcher=$2 sock
  sock=$(engine_sock "$i")
  wait_engine_ready "$i" "$launcher"
  ensure_busybox_cache "$sock"
  dock "$sock" load -q -i "$(busybox_cache_tar)" >/dev/null
}

# ---------------------------------------------------------------------- TLS --
# A throw-away CA and one certificate per engine plus a client one, made with
# the openssl CLI. Every certificate carries X.509 v3 extensions (rustls
# refuses v1 certificates): the SANs the peer is verified against, both
# serverAuth and clientAuth, CA:FALSE.

# ossl ARGS...: openssl, quiet unless it fails.
ossl() {
  local out
  out=$(openssl "$@" 2>&1) || { log "openssl $1 failed: $out"; return 1; }
}

make_tls_ca() {
  local d
  d=$(tls_dir)
  mkdir -p "$d"
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=swarm testbed $K CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$d/ca-key.pem" -out "$d/ca.pem"
}

# make_tls_cert NAME CN SANS SERIAL: DIR/tls/NAME/{ca,cert,key}.pem (the
# names Docker's DOCKER_CERT_PATH expects), signed by the testbed CA.
make_tls_cert() {
  local name=$1 cn=$2 sans=$3 serial=$4 d out
  d=$(tls_dir)
  out="$d/$name"
  mkdir -p "$out"
  printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
    extendedKeyUsage=serverAuth,clientAuth "subjectAltName=$sans" >"$out/ext.cnf"
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
    -keyout "$out/key.pem" -out "$out/req.csr"
  ossl x509 -req -days 30 -set_serial "$serial" -in "$out/req.csr" \
    -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -extfile "$out/ext.cnf" -out "$out/cert.pem"
  cp "$d/ca.pem" "$out/ca.pem"
  rm -f "$out/req.csr"
}

make_tls() {
  local i name
  make_tls_ca
  for ((i = 1; i <= N; i++)); do
    name=$(engine_name "$i")
    make_tls_cert "$name" "$name" "IP:$(engine_ip "$i"),DNS:$name" "$((100 + i))"
    if [ ${#OPT_TLS_TRUST[@]} -gt 0 ]; then
      cat -- "${OPT_TLS_TRUST[@]}" >>"$(tls_dir)/$name/ca.pem"
    fi
  done
  make_tls_cert client "swarm testbed client" "IP:127.0.0.1,DNS:localhost" 2
}

# ----------------------------------------------------------------- registry --

start_registry() {
  local rdir=$DIR/registry addr
  addr="$(bridge_ip "$K"):$REGISTRY_PORT"
  mkdir -p "$rdir/data"
  cat >"$rdir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $rdir/data
  delete:
    enabled: true
http:
  addr: $addr
EOF
  # The inner sh records its own PID (== the registry's, after exec) whether
  # or not setsid had to fork.
  # shellcheck disable=SC2016
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$rdir/registry.pid" \
    docker-registry serve "$rdir/config.yml" >"$rdir/registry.log" 2>&1 </dev/null &
}

wait_registry_ready() {
  wait_until_answers registry "http://$(bridge_ip "$K"):$REGISTRY_PORT/v2/" "$DIR/registry/registry.log" 30
}

# Puts busybox into the registry (via node-01) and removes the tag again, so
# that `docker pull <registry>/busybox` on any engine takes the real pull path.
seed_registry() {
  local sock ref
  sock=$(engine_sock 1)
  ref="$(bridge_ip "$K"):$REGISTRY_PORT/busybox:latest"
  dock "$sock" tag busybox:latest "$ref"
  dock "$sock" push -q "$ref" >/dev/null
  dock "$sock" rmi "$ref" >/dev/null
}

# ----------------------------------------------------------------- teardown --

stop_watchdog() {
  local pid
  pid=$(pidfile_pid "$1/watchdog.pid" "$1") || return 0
  [ "$pid" = "$$" ] && return 0 # we are the watchdog, exec'ed into `down`
  pid_cmd_has "$pid" " _watch " || return 0
  kill -TERM "$pid" 2>/dev/null || true
}

stop_registry() {
  local pid
  pid=$(pidfile_pid "$1/registry/registry.pid" "$1/registry/") || return 0
  terminate 5 "$pid"
}

# Lazily unmounts anything mounted at or below DIR (deepest first). Engine
# mounts live in the engines' private mount namespaces and vanish with their
# processes; this catches whatever leaked into the root namespace.
umount_under() {
  local m
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

remove_dir() {
  local dir=$1
  [ -d "$dir" ] || return 0
  case $dir in /|/tmp|/root|/home|/var|/etc|/usr) log "refusing to delete $dir"; return 0 ;; esac
  if [ -f "$dir/testbed.env" ]; then
    rm -rf --one-file-system "$dir" 2>/dev/null || rm -rf --one-file-system "$dir" ||
      log "warning: could not delete $dir"
  else
    rmdir "$dir" 2>/dev/null || log "not deleting $dir: not a testbed directory"
  fi
}

# teardown K DIR: everything of index K (DIR may be empty if unknown).
# Callers hold the index lock. Every step tolerates things already gone.
teardown() {
  local k=$1 dir=$2
  log "tearing down testbed $k${dir:+ ($dir)}"
  [ -n "$dir" ] && stop_watchdog "$dir"
  kill_engines "$k" "$dir"
  [ -n "$dir" ] && stop_registry "$dir"
  [ -n "$dir" ] && umount_under "$dir"
  cleanup_net "$k"
  cleanup_cgroups "$k"
  [ -n "$dir" ] && remove_dir "$dir"
  # Free the slot last: while it exists nobody else can get index K.
  # A sweep of leftovers (no dir) never frees a slot: it runs only while the
  # slot is absent, and a slot taken meanwhile belongs to someone else.
  if [ -n "$dir" ] && [ -d "$SLOTS/$k" ] && { [ "$(slot_dir_of "$k")" = "$dir" ] || [ ! -f "$SLOTS/$k/dir" ]; }; then
    rm -rf "${SLOTS:?}/$k"
  fi
  return 0
}

# ------------------------------------------------------------ argument parsing --

OPT_DIR="" OPT_ENGINES="" OPT_NAME="" OPT_OWNER="" OPT_OWNER_START="" OPT_REGISTRY=0 OPT_TLS=0
OPT_LABELS=() OPT_TLS_TRUST=()
parse_opts() {
  while [ $# -gt 0 ]; do
    case $1 in
      --dir) OPT_DIR=${2:?--dir needs a value}; shift 2 ;;
      --engines) OPT_ENGINES=${2:?--engines needs a value}; shift 2 ;;
      --label) OPT_LABELS+=("${2:?--label needs a value}"); shift 2 ;;
      --registry) OPT_REGISTRY=1; shift ;;
      --tls) OPT_TLS=1; shift ;;
      --tls-trust) OPT_TLS_TRUST+=("$(realpath -- "${2:?--tls-trust needs a value}")"); shift 2 ;;
      --owner-pid) OPT_OWNER=${2:?--owner-pid needs a value}; shift 2 ;;
      --owner-start) OPT_OWNER_START=${2:?}; shift 2 ;; # internal (watchdog)
      --name) OPT_NAME=${2:?--name needs a value}; shift 2 ;;
      -h|--help) usage ;;
      *) log "unknown argument: $1"; usage ;;
    esac
  done
}

set_dir() {
  [ -n "$OPT_DIR" ] || die "--dir is required"
  case $OPT_DIR in
    /*) DIR=$(realpath -m -- "$OPT_DIR") ;;
    *) DIR=$(realpath -m -- "$CALLER_PWD/$OPT_DIR") ;;
  esac
  [ "$DIR" != / ] || die "--dir must not be /"
}

load_env() {
  local key val
  [ -f "$DIR/testbed.env" ] || die "no testbed in $DIR"
  while IFS='=' read -r key val; do
    case $key in
      index) K=$val ;;
      engines) N=$val ;;
      registry) REGISTRY=$val ;;
      tls) TLS=$val ;;
    esac
  done <"$DIR/testbed.env"
  [[ $K =~ ^[0-9]+$ ]] || die "$DIR/testbed.env has no index"
}

# Engine index from --name (node-NN).
engine_from_name() {
  [ -n "$OPT_NAME" ] || die "--name is required"
  [[ $OPT_NAME =~ ^node-([0-9]+)$ ]] || die "bad engine name: $OPT_NAME"
  local i=$((10#${BASH_REMATCH[1]}))
  if [ "$i" -lt 1 ] || [ "$i" -gt "$N" ]; then die "no engine $OPT_NAME in $DIR"; fi
  echo "$i"
}

# ----------------------------------------------------------------- commands --

UP_DONE=0
on_up_exit() {
  local rc=$?
  [ "$UP_DONE" = 1 ] && return 0
  log "up failed (exit $rc); tearing down"
  if [ -z "$K" ]; then
    remove_dir "$DIR"
    exit 1
  fi
  (
    exec 9>"$LOCKS/$K"
    flock 9
    teardown "$K" "$DIR"
  ) || true
  exit 1
}

UP_LINES=()
cmd_up() {
  parse_opts "$@"
  set_dir
  if ! [[ $OPT_ENGINES =~ ^[0-9]+$ ]] || [ "$OPT_ENGINES" -lt 1 ] || [ "$OPT_ENGINES" -gt "$MAX_ENGINES" ]; then
    die "--engines must be 1..$MAX_ENGINES"
  fi
  N=$OPT_ENGINES
  REGISTRY=$OPT_REGISTRY
  TLS=$OPT_TLS
  # Everything but the final result lines goes to stderr. (Daemons started
  # below redirect their own stdio to log files so they never hold the
  # caller's pipes open.)
  up_setup >&2
  printf '%s\n' "${UP_LINES[@]}"
}

up_setup() {
  local tools=()
  if [ "$REGISTRY" = 1 ]; then tools+=(docker-registry); fi
  if [ "$TLS" = 1 ]; then tools+=(openssl); fi
  require_root_and_tools "${tools[@]}"
  # containerd's ttrpc socket is the longest unix socket path below DIR (max 108).
  [ ${#DIR} -le 60 ] || die "--dir path too long for unix sockets (max 60 chars): $DIR"

  local owner="" t0 i label name labels
  if [ -n "$OPT_OWNER" ]; then
    [[ $OPT_OWNER =~ ^[0-9]+$ ]] || die "--owner-pid must be a PID"
    is_alive "$OPT_OWNER" || die "owner pid $OPT_OWNER is not running"
    owner="$OPT_OWNER $(proc_start_time "$OPT_OWNER")"
  fi
  t0=$(now_ms)

  mkdir -p "$DIR"
  [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
  # The marker exists before the slot does, so a concurrent reaper never
  # mistakes this half-built testbed for one whose directory vanished.
  printf 'engines=%s\nregistry=%s\ntls=%s\n' "$N" "$REGISTRY" "$TLS" >"$DIR/testbed.env"
  trap on_up_exit EXIT
  trap 'exit 1' INT TERM HUP
  reap_stale
  alloc_index "$owner"
  echo "index=$K" >>"$DIR/testbed.env"
  log "index $K: $N engine(s) on $(bridge_ip "$K")/24 in $DIR"

  # Certificates and network first (cheap), then all dockerds at once.
  if [ "$TLS" = 1 ]; then make_tls; fi
  create_bridge
  for ((i = 1; i <= N; i++)); do
    create_engine_net "$i"
    name=$(engine_name "$i")
    labels=()
    for label in "${OPT_LABELS[@]}"; do
      case $label in
        "$name":*) labels+=("${label#*:}") ;;
        node-[0-9]*:*) ;;            # for another engine
        *) labels+=("$label") ;;     # no engine prefix: every engine
      esac
    done
    write_engine_args "$i" "${labels[@]}"
  done
  local launchers=() ready_jobs=() failed=0
  for ((i = 1; i <= N; i++)); do
    launch_dockerd "$i"
    launchers[i]=$LAUNCHER_PID
  done
  [ "$REGISTRY" = 1 ] && start_registry
  for ((i = 1; i <= N; i++)); do
    engine_ready_job "$i" "${launchers[i]}" &
    ready_jobs[i]=$!
  done
  for ((i = 1; i <= N; i++)); do
    wait "${ready_jobs[i]}" || failed=1
  done
  [ "$failed" = 0 ] || die "some engines failed to start"
  log "engines up and busybox loaded after $(($(now_ms) - t0)) ms"
  if [ "$REGISTRY" = 1 ]; then
    wait_registry_ready
    seed_registry
  fi

  if [ -n "$OPT_OWNER" ]; then
    # Detached: survives this script and the owner; tears down when the owner dies.
    setsid bash "$SCRIPT_PATH" _watch --dir "$DIR" --owner-pid "$OPT_OWNER" \
      --owner-start "${owner#* }" >"$DIR/watchdog.log" 2>&1 </dev/null &
  fi

  for ((i = 1; i <= N; i++)); do
    UP_LINES+=("engine $(engine_name "$i") $(engine_ip "$i"):$(engine_port) $(engine_sock "$i")")
  done
  [ "$REGISTRY" = 1 ] && UP_LINES+=("registry $(bridge_ip "$K"):$REGISTRY_PORT")
  [ "$TLS" = 1 ] && UP_LINES+=("tls $(tls_dir)")
  UP_LINES+=("bridge $(bridge_ip "$K")" "dir $DIR" "index $K")
  UP_DONE=1
  trap - EXIT INT TERM HUP
  log "testbed $K ready in $(($(now_ms) - t0)) ms"
}

cmd_down() {
  parse_opts "$@"
  set_dir
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  mkdir -p "$SLOTS" "$LOCKS"
  local k="" slot
  # The index from the testbed's own record, else from the slot that names
  # DIR (an `up` that died before writing it).
  k=$(sed -n 's/^index=\([0-9]\+\)$/\1/p' "$DIR/testbed.env" 2>/dev/null || true)
  if [ -z "$k" ]; then
    for slot in "$SLOTS"/*; do
      [ "$(slot_dir_of "${slot##*/}")" = "$DIR" ] && k=${slot##*/} && break
    done
  fi
  if [ -z "$k" ]; then
    [ -d "$DIR" ] && remove_dir "$DIR"
    log "nothing to tear down in $DIR"
    return 0
  fi
  exec 9>"$LOCKS/$k"
  flock 9
  if [ -d "$SLOTS/$k" ] && [ -f "$SLOTS/$k/dir" ] && [ "$(slot_dir_of "$k")" != "$DIR" ]; then
    # Index K was reaped and reused by another testbed: only clean our dir.
    log "index $k now belongs to $(slot_dir_of "$k"); cleaning $DIR only"
    stop_watchdog "$DIR"
    stop_registry "$DIR"
    umount_under "$DIR"
    remove_dir "$DIR"
    return 0
  fi
  teardown "$k" "$DIR"
  log "testbed $k down"
}

cmd_stop_engine() {
  parse_opts "$@"
  set_dir
  load_env
  local i pid
  i=$(engine_from_name)
  # A host crash: dockerd first (so it records nothing), then everything else
  # of that engine - containerd, shims, docker-proxy and the containers.
  if pid=$(dockerd_pid "$i"); then
    kill -KILL "$pid"
    log "$OPT_NAME: dockerd $pid killed"
  else
    log "$OPT_NAME: dockerd not running"
  fi
  kill_cgroup_procs "$K" "$i"
  kill_ns_procs "$(engine_ns "$i")"
  rm -f "$(engine_dir "$i")/dockerd.pid"
}

cmd_start_engine() {
  parse_opts "$@"
  set_dir
  load_env
  local i
  i=$(engine_from_name)
  if dockerd_pid "$i" >/dev/null; then
    log "$OPT_NAME: already running"
    wait_engine_ready "$i"
    return
  fi
  launch_dockerd "$i"
  wait_engine_ready "$i" "$LAUNCHER_PID" || die "$OPT_NAME did not come back"
  log "$OPT_NAME: up again"
}

# A hung engine: its dockerd stops (SIGSTOP) or goes on (SIGCONT); the
# kernel still accepts connections on its port, nothing answers them.
cmd_signal_dockerd() {
  local signal=$1 i pid
  shift
  parse_opts "$@"
  set_dir
  load_env
  i=$(engine_from_name)
  pid=$(dockerd_pid "$i") || die "$OPT_NAME: dockerd not running"
  kill -"$signal" "$pid"
  log "$OPT_NAME: dockerd $pid got SIG$signal"
}

cmd_link() {
  local state=$1 i veth
  shift
  parse_opts "$@"
  set_dir
  load_env
  i=$(engine_from_name)
  veth=$(engine_veth "$i")
  ip link set "$veth" "$state"
  log "$OPT_NAME: $veth $state"
}

# Internal: the detached watchdog started by `up --owner-pid`.
cmd_watch() {
  parse_opts "$@"
  set_dir
  echo $$ >"$DIR/watchdog.pid"
  cd /
  while is_alive "$OPT_OWNER" && [ "$(proc_start_time "$OPT_OWNER")" = "$OPT_OWNER_START" ]; do
    [ -f "$DIR/testbed.env" ] || exit 0 # torn down by someone else
    sleep 0.5
  done
  log "owner $OPT_OWNER is gone; tearing down $DIR"
  exec bash "$SCRIPT_PATH" down --dir "$DIR"
}

main() {
  [ $# -ge 1 ] || usage
  local cmd=$1
  shift
  CALLER_PWD=$PWD
  cd / # never keep a testbed directory busy
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    stop-engine) cmd_stop_engine "$@" ;;
    start-engine) cmd_start_engine "$@" ;;
    cut) cmd_link down "$@" ;;
    heal) cmd_link up "$@" ;;
    freeze) cmd_signal_dockerd STOP "$@" ;;
    thaw) cmd_signal_dockerd CONT "$@" ;;
    reap)
      [ "$(id -u)" -eq 0 ] || die "must run as root"
      reap_stale
      ;;
    _watch) cmd_watch "$@" ;;
    -h|--help|help) usage ;;
    *) log "unknown command: $cmd"; usage ;;
  esac
}

main "$@"
