#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for the Slurm tests (tests/slurm.rs).
#
#   bash .ci/slurm.sh start   # install (apt-get, Debian), configure, start, wait for an idle node
#   bash .ci/slurm.sh stop    # cancel every job, wait for the queue to empty, stop the daemons
#   bash .ci/slurm.sh env     # the variables a shell needs to use the cluster (eval it)
#
# Everything lives in one directory of its own, $EVOATTN_SLURM_DIR (default
# /tmp/evoattn-slurm): slurm.conf, state, spool, logs and pid files. Clients and daemons
# find the configuration through SLURM_CONF, so /etc/slurm is left alone. The ports are
# not Slurm's defaults (6817/6818), so a cluster that already runs on the machine is not
# disturbed. Needs root (slurmd runs jobs as their submitter) and Debian's packages.
#
# Settings and traps are those of ../shared/notes/slurm-local.md (Debian 12, Slurm 22.05):
# no cgroups (proctrack/linuxproc, task/none), no accounting (plain `sacct` fails with
# "accounting storage is disabled"; nothing may depend on it), CR_CPU so one task takes one
# CPU (the node's real CPU count: 2 tasks at a time on 2 cores), batch_sched_delay=0 so an
# array starts at once, kill_invalid_depend so a dependent job never stays pending forever.
# PID 1 is not a real init here: a stopped daemon may linger as a zombie, and `kill -0`
# succeeds on a zombie, so waits look at the state in /proc/PID/stat.
set -euo pipefail

DIR="${EVOATTN_SLURM_DIR:-/tmp/evoattn-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${EVOATTN_SLURM_PORT:-6917}"
SLURMD_PORT="$((CTLD_PORT + 1))"

log() { echo "slurm.sh: $*" >&2; }

# Whether process $1 runs (exists and is neither a zombie nor dead).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    case "${stat%% *}" in Z | X | x) return 1 ;; *) return 0 ;; esac
}

# Waits up to $2 tenths of a second for process $1 to stop running.
wait_gone() {
    local i
    for ((i = 0; i < $2; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    return 1
}

# The pid in pid file $1, waiting up to 10 s for the file (slurmd writes it after forking).
pid_of() {
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ -s "$1" ]]; then
            cat "$1"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already runs; using it"
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
    # Nothing creates /run/munge without systemd.
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 755 /run/munge
    runuser -u munge -- munged --origin=127.0.0.1
    local i
    for ((i = 0; i < 100; i++)); do
        if munge_works; then
            pid_of /run/munge/munged.pid >"$DIR/munged.started"
            return 0
        fi
        sleep 0.1
    done
    log "munged did not come up"
    return 1
}

write_conf() {
    # The node line that slurmd -C prints, under the name and address used here.
    local node
    node="$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')"
    [[ -n "${EVOATTN_SLURM_CPUS:-}" ]] && node="$(echo "$node" | sed -e "s/CPUs=[0-9]*/CPUs=$EVOATTN_SLURM_CPUS/")"
    cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: a one-node cluster on localhost for evoattn's tests.
ClusterName=evoattn-ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if [[ -s "$DIR/slurmctld.pid" ]] && alive "$(cat "$DIR/slurmctld.pid")"; then
        log "already running in $DIR; using it (bash .ci/slurm.sh stop stops it)"
        return 0
    fi
    local t0=$SECONDS
    install_packages
    rm -rf "$DIR"
    mkdir -p "$DIR/state" "$DIR/spool"
    export SLURM_CONF="$CONF"
    start_munge
    write_conf
    slurmctld -f "$CONF"
    pid_of "$DIR/slurmctld.pid" >/dev/null
    slurmd -f "$CONF" -N localhost
    pid_of "$DIR/slurmd.pid" >/dev/null
    local i state=""
    for ((i = 0; i < 300; i++)); do
        state="$(sinfo -h -n localhost -o %T 2>/dev/null || true)"
        [[ "$state" == idle ]] && break
        sleep 0.1
    done
    if [[ "$state" != idle ]]; then
        log "the node is not idle after 30 s (state: ${state:-none}); logs in $DIR"
        tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
        return 1
    fi
    log "cluster up in $((SECONDS - t0)) s: $(sinfo -h -o '%P %D node(s) %c CPU(s) %T') (SLURM_CONF=$CONF)"
}

stop() {
    export SLURM_CONF="$CONF"
    [[ -f "$CONF" ]] || { log "no cluster in $DIR"; return 0; }
    local ctld="" slurmd_pid=""
    [[ -s "$DIR/slurmctld.pid" ]] && ctld="$(cat "$DIR/slurmctld.pid")"
    [[ -s "$DIR/slurmd.pid" ]] && slurmd_pid="$(cat "$DIR/slurmd.pid")"
    # Cancel every job and wait for the queue to empty, so no slurmstepd is left behind.
    if [[ -n "$ctld" ]] && alive "$ctld"; then
        local ids i
        ids="$(squeue -h -o %A 2>/dev/null || true)"
        [[ -n "$ids" ]] && scancel $ids 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            [[ -z "$(squeue -h -o %A 2>/dev/null || true)" ]] && break
            sleep 0.1
        done
    fi
    local pid
    for pid in "$slurmd_pid" "$ctld"; do
        if [[ -n "$pid" ]] && alive "$pid"; then
            kill -TERM "$pid"
            wait_gone "$pid" 200 || { log "pid $pid ignores TERM; killing it"; kill -KILL "$pid" || true; }
        fi
    done
    if [[ -s "$DIR/munged.started" ]]; then
        pid="$(cat "$DIR/munged.started")"
        if alive "$pid"; then
            kill -TERM "$pid"
            wait_gone "$pid" 100 || true
        fi
        rm -f "$DIR/munged.started"
    fi
    rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid"
    log "stopped (logs in $DIR)"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: bash .ci/slurm.sh start|stop|env" >&2
    exit 2
    ;;
esac
