#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the launcher's tests and for trying sweeps.
#
#   slurm/local_cluster.sh start    # installs slurm-wlm + munge when missing, starts munged,
#                                   # slurmctld and slurmd; prints the line to export SLURM_CONF
#   slurm/local_cluster.sh stop     # stops exactly the daemons `start` launched (by their PIDs)
#   slurm/local_cluster.sh status   # exit 0 when the cluster answers
#
# Everything lives under $AVSF_SLURM_DIR (default /tmp/avsf-slurm): config, munge key and
# socket, controller state, slurmd spool, logs, and the PID file. Needs root (Debian): munged
# runs as user munge with a fresh key; slurmctld and slurmd run as root (SlurmUser=root) without
# cgroups (proctrack/linuxproc, task/none); a job's --mem is enforced by jobacct_gather's
# OverMemoryKill (polled every second), so an over-limit job ends OUT_OF_MEMORY. The node's CPUs and memory come from `slurmd -C`.
# Client commands find the config through SLURM_CONF, and through /etc/slurm/slurm.conf, which
# `start` links to our config when no other config is there (and `stop` unlinks).
set -euo pipefail

DIR="${AVSF_SLURM_DIR:-/tmp/avsf-slurm}"
CONF="$DIR/slurm.conf"
PIDS="$DIR/pids"
ETC_LINK=/etc/slurm/slurm.conf
PARTITION="${AVSF_SLURM_PARTITION:-local}"

log() { echo "local_cluster: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (it installs packages and starts munged/slurmctld/slurmd); try: sudo $0 $*"
    exit 2
  fi
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
      && command -v sbatch >/dev/null; then
    return
  fi
  log "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

# A PID counts as ours only while it still runs the daemon we started (PIDs get reused).
pid_alive() {  # pid name
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"
}

cluster_answers() {
  SLURM_CONF="$CONF" timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'
}

running() {
  [ -f "$PIDS" ] || return 1
  local name pid
  while read -r name pid; do
    pid_alive "$pid" "$name" || return 1
  done <"$PIDS"
  return 0
}

write_config() {
  local host node_line
  host="$(hostname -s)"
  # `slurmd -C` prints the node's real hardware; keep only the fields slurm.conf takes.
  node_line="$(slurmd -C | head -1 | sed -E 's/ (UpTime|Boards)=[^ ]*//g')"
  # memory is a consumable resource, so --mem is a limit (enforced by OverMemoryKill below);
  # a job that asks for none gets its CPUs' share, so as many jobs run at once as without it
  local mem cpus
  mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$node_line")"
  cpus="$(sed -nE 's/.*CPUs=([0-9]+).*/\1/p' <<<"$node_line")"
  DEF_MEM_PER_CPU=$(( mem / cpus ))
  cat >"$CONF" <<EOF
# Written by slurm/local_cluster.sh: a one-node cluster for tests.
ClusterName=avsflocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,defer_batch=0
MessageTimeout=20
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
MaxArraySize=10001
SlurmctldTimeout=30
SlurmdTimeout=60
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  local mdir="$DIR/munge"
  mkdir -p "$mdir"
  chown munge: "$mdir"
  chmod 0700 "$mdir"
  # A fresh key for this cluster: nothing outside it should be able to talk to it.
  dd if=/dev/urandom of="$mdir/munge.key" bs=1024 count=1 status=none
  chown munge: "$mdir/munge.key"
  chmod 0400 "$mdir/munge.key"
  # setpriv execs munged in place (no wrapper process), so $! is munged's own PID
  setsid setpriv --reuid=munge --regid=munge --init-groups -- munged --foreground --force \
      --key-file="$mdir/munge.key" --socket="$mdir/munge.socket.2" \
      --pid-file="$mdir/munged.pid" --log-file="$mdir/munged.log" --seed-file="$mdir/munged.seed" \
      </dev/null >>"$DIR/log/munged.out" 2>&1 &
  echo "munged $!" >>"$PIDS"
  for _ in $(seq 50); do
    [ -S "$mdir/munge.socket.2" ] && return 0
    sleep 0.1
  done
  log "munged did not create its socket; see $mdir/munged.log"; return 1
}

start() {
  need_root start
  install_packages
  if running; then
    if cluster_answers; then
      log "already running (config $CONF)"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    log "daemons run but the cluster does not answer; restarting"
    stop
  elif [ -f "$PIDS" ]; then
    stop  # a partial start or a crash left some daemons: stop what is ours, then start clean
  fi
  if [ -e "$DIR" ] && [ ! -f "$CONF" ] && [ -n "$(ls -A "$DIR")" ]; then
    log "$DIR exists and is not a local cluster's directory; set AVSF_SLURM_DIR elsewhere"; return 2
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"/{state,spool,log,run}
  chmod 0755 "$DIR"  # munged (user munge) must reach its own directory
  : >"$PIDS"
  write_config
  start_munge
  export SLURM_CONF="$CONF"
  setsid slurmctld -D -i -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
  echo "slurmctld $!" >>"$PIDS"
  setsid slurmd -D -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
  echo "slurmd $!" >>"$PIDS"
  if [ ! -e "$ETC_LINK" ] || [ "$(readlink "$ETC_LINK" || true)" = "$CONF" ]; then
    mkdir -p "$(dirname "$ETC_LINK")"
    ln -sfn "$CONF" "$ETC_LINK"
  fi
  for _ in $(seq 300); do
    if cluster_answers; then
      log "up: $(SLURM_CONF=$CONF sinfo -h -o '%P %D nodes %c cpus %m MB %T')"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    running || break
    sleep 0.1
  done
  log "the cluster did not come up; logs in $DIR/log:"
  tail -n 20 "$DIR"/log/*.log "$DIR"/log/*.out "$DIR"/munge/munged.log >&2 2>/dev/null || true
  stop
  return 1
}

stop() {
  need_root stop
  if [ ! -f "$PIDS" ]; then
    log "not running (no $PIDS)"
    return 0
  fi
  local name pid left
  # Jobs first: their slurmstepd processes outlive slurmd and would hang on without it.
  if running && cluster_answers; then
    SLURM_CONF="$CONF" scancel --partition="$PARTITION" 2>/dev/null || true
    for _ in $(seq 150); do
      [ -z "$(SLURM_CONF="$CONF" squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  # Slurm daemons next, munged last (they talk to it while shutting down).
  for name in slurmd slurmctld munged; do
    pid="$(awk -v n="$name" '$1 == n {print $2}' "$PIDS")"
    if pid_alive "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do pid_alive "$pid" "$name" || break; sleep 0.1; done
      if pid_alive "$pid" "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  done
  # Job steps that did not end with their job: ours are those started with our SLURM_CONF.
  for pid in $(pgrep -x slurmstepd || true); do
    if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "SLURM_CONF=$CONF"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  left=""
  while read -r name pid; do pid_alive "$pid" "$name" && left="$left $name:$pid"; done <"$PIDS"
  if [ "$(readlink "$ETC_LINK" 2>/dev/null || true)" = "$CONF" ]; then rm -f "$ETC_LINK"; fi
  if [ -n "$left" ]; then log "could not stop:$left"; return 1; fi
  rm -f "$PIDS"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && cluster_answers; then SLURM_CONF="$CONF" sinfo; else log "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status   (state under \$AVSF_SLURM_DIR, default /tmp/avsf-slurm)" >&2; exit 2 ;;
esac
