# Shared helpers for tvp's scripts. Source it; do not run it.
# shellcheck shell=bash

TVP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TVP_ROOT

# Debian packages every tvp script needs: the TPM stack (tpm2-tss for tss-esapi, swtpm
# and its setup tool for development TPMs, tpm2-tools as the independent peer) and the
# usual clients.
TVP_PACKAGES=(libtss2-dev pkg-config swtpm swtpm-tools tpm2-tools openssl curl iproute2 util-linux gcc binutils
    bc qemu-system-x86 busybox-static cpio)

if [ -t 2 ]; then _b=$'\033[1m'; _g=$'\033[32m'; _r=$'\033[31m'; _n=$'\033[0m'; else _b= _g= _r= _n=; fi

# say MESSAGE: a step, for people.
say() { printf '%s==> %s%s\n' "$_b" "$*" "$_n" >&2; }
# ok MESSAGE / fail MESSAGE: results.
ok() { printf '%s  ok%s %s\n' "$_g" "$_n" "$*" >&2; }
fail() { printf '%sFAIL%s %s\n' "$_r" "$_n" "$*" >&2; }
die() { fail "$*"; exit 1; }

# ensure_packages PKG...: install what is missing (idempotent; apt-get update first).
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root or install them"
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# ensure_schemathesis: schemathesis (pinned) in a virtual environment under target/,
# made once from the Python package registry; sets TVP_PYTHON (Debian's python3) and
# TVP_SCHEMATHESIS (its `st` command).
TVP_SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    ensure_packages python3 python3-venv
    TVP_PYTHON=/usr/bin/python3
    local venv=$TVP_ROOT/target/schemathesis-$TVP_SCHEMATHESIS_VERSION
    TVP_SCHEMATHESIS=$venv/bin/st
    if [ ! -x "$TVP_SCHEMATHESIS" ]; then
        say "installing schemathesis $TVP_SCHEMATHESIS_VERSION into $venv"
        "$TVP_PYTHON" -m venv "$venv" || die "python3 -m venv failed"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$TVP_SCHEMATHESIS_VERSION" || { rm -rf "$venv"; die "pip install schemathesis failed"; }
    fi
    export TVP_PYTHON TVP_SCHEMATHESIS
}

ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
}

# Cleanup: functions and pids registered here run/are killed on exit, also on failure.
_TVP_PIDS=()
_TVP_DIRS=()
_TVP_HOOKS=()
tvp_cleanup() {
    local rc=$? i
    for ((i = ${#_TVP_HOOKS[@]} - 1; i >= 0; i--)); do eval "${_TVP_HOOKS[$i]}" || true; done
    for ((i = ${#_TVP_PIDS[@]} - 1; i >= 0; i--)); do
        # (under set -e a failing last command of an && list would end the trap here
        # with the child's 143 in place of the script's own status)
        kill "${_TVP_PIDS[$i]}" 2>/dev/null && { wait "${_TVP_PIDS[$i]}" 2>/dev/null || true; }
    done
    for i in "${_TVP_DIRS[@]}"; do rm -rf "$i"; done
    return $rc
}
trap tvp_cleanup EXIT
trap 'exit 130' INT TERM
on_exit() { _TVP_HOOKS+=("$*"); }
track_pid() { _TVP_PIDS+=("$1"); }
# make_tmpdir VAR: a private temp dir removed on exit.
make_tmpdir() {
    local d
    d=$(mktemp -d /tmp/tvp.XXXXXX)
    _TVP_DIRS+=("$d")
    printf -v "$1" '%s' "$d"
}

# port_free PORT: nobody listens on TCP PORT on loopback.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_swtpm DIR [ek-cert]: a private swtpm in DIR on free ports; sets SWTPM_PORT,
# SWTPM_PID and SWTPM_TCTI. With "ek-cert", swtpm_setup first creates an EK and its
# certificate signed by swtpm's local CA, as a TPM manufacturer would.
start_swtpm() {
    local dir=$1 mode=${2:-} p tries
    mkdir -p "$dir/state"
    if [ "$mode" = ek-cert ]; then
        swtpm_setup --tpm2 --tpmstate "$dir/state" --createek --create-ek-cert \
            --create-platform-cert --lock-nvram --pcr-banks sha256 --overwrite \
            >"$dir/swtpm_setup.log" 2>&1 || { cat "$dir/swtpm_setup.log" >&2; die "swtpm_setup failed"; }
    fi
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        p=$((20000 + RANDOM % 40000))
        port_free "$p" && port_free $((p + 1)) || continue
        swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
            --server "type=tcp,port=$p,bindaddr=127.0.0.1" \
            --ctrl "type=tcp,port=$((p + 1)),bindaddr=127.0.0.1" \
            --flags not-need-init,startup-clear >"$dir/swtpm.log" 2>&1 &
        SWTPM_PID=$!
        local i
        for i in $(seq 100); do
            port_free "$p" || break
            kill -0 "$SWTPM_PID" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$SWTPM_PID" 2>/dev/null && ! port_free "$p"; then
            track_pid "$SWTPM_PID"
            SWTPM_PORT=$p
            SWTPM_TCTI="swtpm:host=127.0.0.1,port=$p"
            export SWTPM_PORT SWTPM_PID SWTPM_TCTI
            return 0
        fi
        kill "$SWTPM_PID" 2>/dev/null || true
    done
    die "could not start swtpm (see $dir/swtpm.log)"
}

# wait_socket PATH PID: wait until a Unix socket accepts connections (or PID dies).
wait_socket() {
    local sock=$1 pid=$2 i
    for i in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -s -o /dev/null --max-time 1 --unix-socket "$sock" http://tvp/v1/host && return 0
        sleep 0.1
    done
    return 1
}
