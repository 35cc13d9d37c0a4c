#!/usr/bin/env bash
# make-tenant-disk.sh: a directory (a root file system, or just data) -> an ext4 file
# system image -> an encrypted tvp image (docs/image-format.md) wrapped to the tenant's
# key-management public key. Needs no root and no loop devices (mke2fs -d copies the
# tree into the image file). The plaintext image lives only in a private temporary
# directory beside the output and is removed on exit, also on failure.
#
# Usage: scripts/make-tenant-disk.sh [options] DIR OUT.enc --kms-pub KMS.pub
#   --kms-pub FILE     the tenant's key-management public key (tvpctl image keygen)
#   --size MIB         file system size in MiB (default: the tree's size + 25% + 16 MiB)
#   --label NAME       ext4 volume label (default: tenant)
#   --chunk-size N     plaintext bytes per authenticated chunk (default: tvpctl's, 1 MiB)
#   --owner UID:GID    owner of every file in the image (default: 0:0, as a root file
#                      system needs); --owner keep keeps the tree's own owners
#   --keep-plain FILE  also keep the plaintext ext4 image as FILE (for checking)
# Environment: TVPCTL (default: tvpctl on PATH, else target/{release,debug}/tvpctl).
# Exit codes: 0 done, 2 usage, 1 anything else (the reason is printed).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

src= out= kms_pub= size_mib= label=tenant chunk= owner=0:0 keep_plain=
while (($#)); do
    case $1 in
        --kms-pub) kms_pub=${2:?--kms-pub needs a file}; shift 2 ;;
        --size) size_mib=${2:?--size needs MiB}; shift 2 ;;
        --label) label=${2:?--label needs a name}; shift 2 ;;
        --chunk-size) chunk=${2:?--chunk-size needs bytes}; shift 2 ;;
        --owner) owner=${2:?--owner needs UID:GID or keep}; shift 2 ;;
        --keep-plain) keep_plain=${2:?--keep-plain needs a file}; shift 2 ;;
        -h | --help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) if [ -z "$src" ]; then src=$1; elif [ -z "$out" ]; then out=$1; else usage; fi; shift ;;
    esac
done
[ -n "$src" ] && [ -n "$out" ] && [ -n "$kms_pub" ] || usage
[ -d "$src" ] || die "$src is not a directory"
[ -r "$kms_pub" ] || die "cannot read the key-management public key $kms_pub"
[ -z "$size_mib" ] || [[ $size_mib =~ ^[0-9]+$ ]] || die "--size wants whole MiB, got $size_mib"
[[ $owner == keep || $owner =~ ^[0-9]+:[0-9]+$ ]] || die "--owner wants UID:GID or keep, got $owner"

ensure_packages e2fsprogs
# Debian keeps mke2fs in /sbin, off an ordinary user's PATH.
PATH=$PATH:/usr/sbin:/sbin

if [ -z "${TVPCTL:-}" ]; then
    TVPCTL=$(command -v tvpctl || true)
    for c in "$TVP_ROOT/target/release/tvpctl" "$TVP_ROOT/target/debug/tvpctl"; do
        [ -n "$TVPCTL" ] || { [ -x "$c" ] && TVPCTL=$c; } || true
    done
fi
[ -n "$TVPCTL" ] && [ -x "$TVPCTL" ] || die "tvpctl not found: build it (cargo build --release -p tvpctl) or set TVPCTL"

if [ -z "$size_mib" ]; then
    used_kib=$(du -sk --apparent-size "$src" | cut -f1)
    files=$(find "$src" | wc -l)
    # Data + 25%, plus a 4 KiB block per file for metadata and tails, plus 16 MiB for the
    # journal and the file system's own structures.
    size_mib=$(((used_kib * 5 / 4 + files * 4) / 1024 + 16))
fi

out_dir=$(dirname "$out")
work=$(mktemp -d "$out_dir/.tenant-disk.XXXXXX")
chmod 700 "$work"
trap 'rm -rf "$work"' EXIT
plain=$work/disk.ext4

say "ext4 image of $src: $size_mib MiB, label $label"
opts=()
[ "$owner" = keep ] || opts+=(-E "root_owner=$owner")
mke2fs -q -F -t ext4 -L "$label" -d "$src" "${opts[@]}" "$plain" "${size_mib}M" >/dev/null \
    || die "mke2fs could not build the file system (too small? try --size)"
if [ "$owner" != keep ]; then
    # mke2fs -d keeps the tree's owners (an unprivileged user's uid); a root file system
    # wants them uniform: one debugfs session sets them all.
    uid=${owner%:*} gid=${owner#*:}
    while IFS= read -r -d '' p; do
        case $p in *'"'* | *$'\n'* | *\\*) die "cannot set the owner of a name with quotes, backslashes or newlines: $p" ;; esac
        printf 'sif "/%s" uid %s\nsif "/%s" gid %s\n' "$p" "$uid" "$p" "$gid"
    done < <(find "$src" -mindepth 1 -printf '%P\0') >"$work/owners.cmd"
    [ ! -s "$work/owners.cmd" ] || debugfs -w -f "$work/owners.cmd" "$plain" >"$work/owners.log" 2>&1 \
        || die "debugfs could not set the owners: $(tail -n 3 "$work/owners.log")"
fi
e2fsck -fn "$plain" >/dev/null 2>&1 || die "the new file system does not check clean (e2fsck -fn $plain)"

say "encrypting to $kms_pub"
args=(image encrypt "$plain" "$out" --kms-pub "$kms_pub")
[ -z "$chunk" ] || args+=(--chunk-size "$chunk")
"$TVPCTL" "${args[@]}"
[ -z "$keep_plain" ] || mv "$plain" "$keep_plain"
ok "$out: encrypted ext4 image ($size_mib MiB); tvpctl image inspect $out shows its digest"
