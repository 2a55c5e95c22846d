# Shared by slurm/up.sh and slurm/down.sh (sourced, not run).
# shellcheck shell=bash

# True if $1 is a live process whose command name is $2.
alive_pid() {
  local pid=$1 name=$2 stat tasks
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
  stat=${stat##*) }
  [[ "${stat:0:1}" != Z ]] && return 0
  # A zombie is dead, unless only its main thread exited and other threads still run.
  tasks=("/proc/$pid/task/"*)
  (( ${#tasks[@]} > 1 ))
}
