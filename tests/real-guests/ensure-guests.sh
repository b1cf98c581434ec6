#!/usr/bin/env bash
# Real-guest capture harness: boots small Debian guests under QEMU TCG and caches their
# memory dumps (ELF, kdump, raw) plus everything needed to check them, outside git.
#
#   tests/real-guests/ensure-guests.sh [--force] [--list] [GUEST...]
#
# Idempotent: a guest whose cache dir holds a `complete` stamp is skipped.
# See README.md beside this file for the cache layout and the timings.
# The whole script is one brace group, so bash parses it completely before running it:
# editing or checking out this file while it runs cannot change what runs.
{
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C PYTHONDONTWRITEBYTECODE=1
exec </dev/null

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-/root}
CACHE=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
DEBS=${DUMPCONV_DEB_CACHE:-$HOME/.cache/dumpconv/debs}
BUILD=${DUMPCONV_BUILD_CACHE:-$HOME/.cache/dumpconv/build}
BOOT_TIMEOUT=${DUMPCONV_BOOT_TIMEOUT:-300}     # seconds until the guest prints READY
DUMP_TIMEOUT=${DUMPCONV_DUMP_TIMEOUT:-900}     # seconds per dump-guest-memory / pmemsave
# The highmem guest's files are ~4.5 GiB each: set DUMPCONV_HIGHMEM_LITE=1 to skip its
# paging.elf and lzo/snappy kdumps (README: "disk use").
HIGHMEM_LITE=${DUMPCONV_HIGHMEM_LITE:-0}
# x86_64-crashk: memory reserved for the kdump capture kernel (crashkernel=); README
CRASHKERNEL=${DUMPCONV_CRASHKERNEL:-160M}
# Bump when what a capture contains changes: older captures are then redone.
HARNESS_VERSION=1

# name            arch    flavor   cpu                mem   kaslr  expected paging
# (aarch64 paging: <TCR_EL1.TG1 granule>-va<64 - TCR_EL1.T1SZ>, checked from the
#  system registers QEMU's gdbstub reports)
GUEST_TABLE="
x86_64-4level     x86_64  amd64    qemu64             512   0      4level
x86_64-kaslr      x86_64  amd64    qemu64             512   1      4level
x86_64-la57       x86_64  amd64    qemu64,+la57       512   0      5level
x86_64-highmem    x86_64  amd64    qemu64             4608  0      4level
i386-pae          i386    686-pae  qemu32,+nx         512   0      pae
i386-2level       i386    686      qemu32             512   0      32bit
arm64-4k          aarch64 arm64    cortex-a57         512   1      4k-va48
x86_64-crashk     x86_64  amd64    qemu64             512   0      4level
"
ALL_GUESTS=$(awk 'NF {print $1}' <<<"$GUEST_TABLE")

FORCE=0
WANT=()
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        --list) echo "$ALL_GUESTS"; exit 0 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        -*) echo "unknown option $a" >&2; exit 2 ;;
        *) grep -qx -- "$a" <<<"$ALL_GUESTS" || { echo "unknown guest $a (have: $(echo $ALL_GUESTS))" >&2; exit 2; }
           WANT+=("$a") ;;
    esac
done
[ ${#WANT[@]} -gt 0 ] || read -r -a WANT <<<"$(echo $ALL_GUESTS)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# timed LABEL CMD...: run CMD and log its duration (sub-steps of a guest)
timed() {
    local label=$1 t0; shift
    t0=$(date +%s.%N)
    "$@"
    log "  $label: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s"
}
die() { log "ERROR: $*"; exit 1; }
TIMINGS=()
# step NAME CMD...: run CMD, print and remember how long it took.
step() {
    local name=$1; shift
    local t0 t1 dt
    t0=$(date +%s.%N)
    log "== $name"
    "$@"
    t1=$(date +%s.%N)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
    log "== $name: ${dt}s"
    TIMINGS+=("$(printf '%-40s %8ss' "$name" "$dt")")
}
T_START=$(date +%s.%N)

[ "$(id -u)" = 0 ] || die "run as root (apt-get install, mknod for the initramfs)"
mkdir -p "$CACHE" "$DEBS" "$BUILD"
# one run at a time per cache (parallel test jobs may all call this script)
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "another ensure-guests.sh holds $CACHE/.lock"

guest_field() { awk -v g="$1" -v c="$2" '$1 == g {print $c}' <<<"$GUEST_TABLE"; }
guest_done() { [ "$FORCE" = 0 ] && grep -qx "harness-version $HARNESS_VERSION" "$CACHE/$1/complete" 2>/dev/null; }

TODO=()
for g in "${WANT[@]}"; do
    if guest_done "$g"; then log "$g: cached ($CACHE/$g), skipping"; else TODO+=("$g"); fi
done
if [ ${#TODO[@]} -eq 0 ]; then
    log "all requested guests are cached in $CACHE"
    exit 0
fi
NEED_AMD64=0; NEED_I386=0; NEED_ARM64=0; NEED_FLAVORS=()
for g in "${TODO[@]}"; do
    case "$(guest_field "$g" 2)" in x86_64) NEED_AMD64=1 ;; i386) NEED_I386=1 ;; aarch64) NEED_ARM64=1 ;; esac
    f=$(guest_field "$g" 3)
    [[ " ${NEED_FLAVORS[*]-} " == *" $f "* ]] || NEED_FLAVORS+=("$f")
done

# ---------------------------------------------------------------------------------------
# 1. host tools (apt). QEMU itself is not installed: the Debian 12 qemu-system-x86 package
#    conflicts with the qemu-utils 10.x this machine kind ships, so it is unpacked with
#    dpkg -x into $BUILD and only its shared-library dependencies are installed.
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    local i
    for i in 1 2 3; do
        if apt-get update -q -o DPkg::Lock::Timeout=900 >"$BUILD/apt-update.log" 2>&1; then APT_UPDATED=1; return 0; fi
        log "apt-get update failed (try $i): $(tail -2 "$BUILD/apt-update.log" | tr '\n' ' ')"
        sleep 3
    done
    APT_UPDATED=1   # partial index failures (a mirror in sync) are not fatal: go on
}
apt_install() {   # apt_install PKG...: install what is missing
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qE "^install ok (installed|triggers-pending|triggers-awaited)$" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    apt_update
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >"$BUILD/apt-install.log" 2>&1 \
        || { tail -20 "$BUILD/apt-install.log" >&2; die "apt-get install failed"; }
}
# apt_download DIR PKG...: fetch .debs into DIR unless already there (amd64 / all)
apt_download() {
    local dir=$1; shift
    local p need=()
    mkdir -p "$dir"
    for p in "$@"; do
        compgen -G "$dir/${p}_*_amd64.deb" >/dev/null || compgen -G "$dir/${p}_*_all.deb" >/dev/null \
            || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    apt_update
    # download into a scratch dir first: an interrupted download never looks cached
    rm -rf "$dir/.partial"; mkdir -p "$dir/.partial"
    (cd "$dir/.partial" && apt-get -o APT::Sandbox::User=root download -q "${need[@]}" >"$BUILD/apt-download.log" 2>&1) \
        || { tail -20 "$BUILD/apt-download.log" >&2; die "apt-get download ${need[*]} failed"; }
    mv "$dir/.partial/"*.deb "$dir/"; rmdir "$dir/.partial"
}

# A private apt state per foreign architecture (i386, arm64) in the build cache, so the
# host's dpkg architectures stay as they are (no `dpkg --add-architecture`).
FAPT=()
fapt_opts() {   # fapt_opts ARCH: FAPT=(apt options for ARCH's private state)
    local d=$BUILD/apt-$1
    FAPT=(-o APT::Architecture="$1" -o APT::Architectures::="$1" -o APT::Sandbox::User=root
          -o Dir::State::Lists="$d/lists" -o Dir::State::status="$d/status"
          -o Dir::Cache="$d/cache")
}
fapt_update() {   # fapt_update ARCH PROBE-PACKAGE
    local arch=$1 probe=$2 d=$BUILD/apt-$1 i
    fapt_opts "$arch"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    touch "$d/status"
    if [ -f "$d/updated" ] && [ -n "$(find "$d/updated" -mmin -720)" ]; then return 0; fi
    for i in 1 2 3; do
        apt-get "${FAPT[@]}" update -q >"$d/update.log" 2>&1 && break
        sleep 3
    done
    # a security index that fails its size check ("Mirror sync in progress?") leaves the
    # main suite usable; give up only when nothing resolves
    grep -E '^E:' "$d/update.log" | sed "s/^/  $arch apt-get update: /" >&2 || true
    apt-cache "${FAPT[@]}" show "$probe" >/dev/null 2>&1 || die "$arch package lists unusable"
    touch "$d/updated"
}
fapt_probe() { case "$1" in i386) echo linux-image-686-pae ;; *) echo "linux-image-$1" ;; esac; }
fapt_download() {   # fapt_download ARCH DIR PKG...: fetch ARCH .debs into DIR unless there
    local arch=$1 dir=$2; shift 2
    local p need=()
    mkdir -p "$dir"
    for p in "$@"; do compgen -G "$dir/${p}_*_$arch.deb" >/dev/null || need+=("$p"); done
    [ ${#need[@]} -eq 0 ] && return 0
    fapt_update "$arch" "$(fapt_probe "$arch")"
    rm -rf "$dir/.partial"; mkdir -p "$dir/.partial"
    (cd "$dir/.partial" && apt-get "${FAPT[@]}" download -q "${need[@]}" >"$BUILD/apt-$arch/download.log" 2>&1) \
        || { tail -20 "$BUILD/apt-$arch/download.log" >&2; die "$arch download ${need[*]} failed"; }
    mv "$dir/.partial/"*.deb "$dir/"; rmdir "$dir/.partial"
}

host_tools() {
    apt_install gdb crash makedumpfile cpio gzip xz-utils zstd binutils util-linux python3 kmod
    # the arm64 guest's virtual-address reference is read through QEMU's gdbstub
    [ "$NEED_ARM64" = 0 ] || apt_install gdb-multiarch
}

QEMU_DIR=""
qemu_setup() {
    apt_download "$DEBS" qemu-system-x86 qemu-system-common qemu-system-data seabios
    local deb ver
    deb=$(ls "$DEBS"/qemu-system-x86_*_amd64.deb | sort -V | tail -1)
    ver=$(dpkg-deb -f "$deb" Version | tr ':~+' '___')
    QEMU_DIR=$BUILD/qemu-$ver
    # shared libraries the binary needs (its Depends minus the qemu-* / firmware packages)
    # shellcheck disable=SC2046
    apt_install $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' \
                  | grep -v -E '^(qemu-.*|ipxe-qemu|seabios|)$')
    if [ ! -f "$QEMU_DIR/ok" ]; then
        rm -rf "$QEMU_DIR"; mkdir -p "$QEMU_DIR"
        dpkg -x "$deb" "$QEMU_DIR"
        dpkg -x "$(ls "$DEBS"/qemu-system-data_*.deb | sort -V | tail -1)" "$QEMU_DIR"
        dpkg -x "$(ls "$DEBS"/seabios_*.deb | sort -V | tail -1)" "$QEMU_DIR"
        # TCG itself is a loadable module (accel-tcg-*.so) in qemu-system-common; take only
        # those, found through QEMU_MODULE_DIR
        dpkg-deb --fsys-tarfile "$(ls "$DEBS"/qemu-system-common_*_amd64.deb | sort -V | tail -1)" \
            | tar -x -C "$QEMU_DIR" --wildcards './usr/lib/*/qemu/accel-tcg-*.so'
        touch "$QEMU_DIR/ok"
    fi
    QEMU_MODULE_DIR=$(dirname "$(ls "$QEMU_DIR"/usr/lib/*/qemu/accel-tcg-x86_64.so)")
    export QEMU_MODULE_DIR
    "$QEMU_DIR/usr/bin/qemu-system-x86_64" --version | head -1 >&2
    "$QEMU_DIR/usr/libexec/qemu-system-i386" --version >/dev/null
}

# qemu-system-aarch64 7.2 comes in qemu-system-arm (an amd64 .deb, same shared libraries
# as qemu-system-x86); unpacked the same way. TCG is built into it (no accel module), and
# `-M virt` boots the arm64 Image given with -kernel directly: no firmware is needed.
QEMU_ARM_DIR=""
qemu_arm_setup() {
    apt_download "$DEBS" qemu-system-arm
    local deb ver
    deb=$(ls "$DEBS"/qemu-system-arm_*_amd64.deb | sort -V | tail -1)
    ver=$(dpkg-deb -f "$deb" Version | tr ':~+' '___')
    QEMU_ARM_DIR=$BUILD/qemu-arm-$ver
    # shellcheck disable=SC2046
    apt_install $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' \
                  | grep -v -E '^(qemu-.*|ipxe-qemu|seabios|)$')
    if [ ! -f "$QEMU_ARM_DIR/ok" ]; then
        rm -rf "$QEMU_ARM_DIR"; mkdir -p "$QEMU_ARM_DIR"
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$QEMU_ARM_DIR" ./usr/bin/qemu-system-aarch64
        touch "$QEMU_ARM_DIR/ok"
    fi
    "$QEMU_ARM_DIR/usr/bin/qemu-system-aarch64" --version | head -1 >&2
}

# ---------------------------------------------------------------------------------------
# 2. kernels: image .deb (vmlinuz, config, modules) + -dbg .deb (System.map, vmlinux)
declare -A KDIR   # flavor -> $BUILD/kernel-<release>
flavor_arch() { case "$1" in amd64) echo amd64 ;; arm64) echo arm64 ;; *) echo i386 ;; esac; }
kernel_pkg() {    # kernel_pkg FLAVOR -> linux-image-<abi>-<flavor>
    local meta=linux-image-$1 dep arch
    arch=$(flavor_arch "$1")
    if [ "$arch" = amd64 ]; then
        apt_update
        dep=$(apt-cache show "$meta" 2>/dev/null | awk '/^Depends:/ {print $2; exit}')
    else
        fapt_update "$arch" "$(fapt_probe "$arch")"
        dep=$(apt-cache "${FAPT[@]}" show "$meta" 2>/dev/null | awk '/^Depends:/ {print $2; exit}')
    fi
    [ -n "$dep" ] || die "cannot resolve $meta"
    echo "$dep"
}
kernel_setup() {
    local flavor=$1 pkg rel dir deb dbg arch
    arch=$(flavor_arch "$flavor")
    # reuse an extracted kernel when one exists (re-runs need no apt look-up at all)
    dir=$(ls -d "$BUILD"/kernel-*-"$flavor" 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$dir" ] && [ -f "$dir/ok" ] && [ "${DUMPCONV_REFRESH_KERNELS:-0}" = 0 ]; then
        KDIR[$flavor]=$dir; log "kernel $flavor: $(basename "$dir") (cached)"; return 0
    fi
    pkg=$(kernel_pkg "$flavor")
    rel=${pkg#linux-image-}
    dir=$BUILD/kernel-$rel
    KDIR[$flavor]=$dir
    [ -f "$dir/ok" ] && return 0
    if [ "$flavor" = amd64 ]; then
        apt_download "$DEBS" "$pkg" "$pkg-dbg"
        deb=$(ls "$DEBS/${pkg}_"*_amd64.deb | sort -V | tail -1)
        dbg=$(ls "$DEBS/${pkg}-dbg_"*_amd64.deb | sort -V | tail -1)
    else
        fapt_download "$arch" "$DEBS" "$pkg" "$pkg-dbg"
        deb=$(ls "$DEBS/${pkg}_"*_"$arch".deb | sort -V | tail -1)
        dbg=$(ls "$DEBS/${pkg}-dbg_"*_"$arch".deb | sort -V | tail -1)
    fi
    rm -rf "$dir"; mkdir -p "$dir/x"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir/x" --wildcards \
        "./boot/vmlinuz-$rel" "./boot/config-$rel" "./lib/modules/$rel/kernel/drivers/firmware/qemu_fw_cfg.ko*"
    # qemu_fw_cfg's dependencies (none on Debian 6.1, but follow them if a kernel has any)
    local m want dep i
    for i in 1 2 3 4; do
        want=()
        while IFS= read -r m; do
            for dep in $(modinfo -F depends "$m" | tr ',' ' '); do
                [ -n "$(find "$dir/x/lib/modules" -name "$dep.ko*" -o -name "${dep//_/-}.ko*")" ] || want+=("*/$dep.ko*")
            done
        done < <(find "$dir/x/lib/modules" -name '*.ko*')
        [ ${#want[@]} -eq 0 ] && break
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir/x" --wildcards "${want[@]}"
    done
    # System.map (the image .deb carries a one-line stub) and the debug vmlinux live at the
    # start of the -dbg archive: stop reading once both are out (--occurrence), which
    # makes dpkg-deb die of SIGPIPE, so check the files rather than the pipe status.
    local members=("./usr/lib/debug/boot/System.map-$rel")
    [ "$arch" = i386 ] || members+=("./usr/lib/debug/boot/vmlinux-$rel")
    dpkg-deb --fsys-tarfile "$dbg" 2>/dev/null | tar -x -C "$dir/x" --occurrence=1 "${members[@]}" || true
    mv "$dir/x/boot/vmlinuz-$rel" "$dir/vmlinuz"
    mv "$dir/x/boot/config-$rel" "$dir/config"
    mv "$dir/x/usr/lib/debug/boot/System.map-$rel" "$dir/System.map" || die "no System.map in $dbg"
    if [ "$arch" != i386 ]; then
        mv "$dir/x/usr/lib/debug/boot/vmlinux-$rel" "$dir/vmlinux" || die "no vmlinux in $dbg"
        readelf -h "$dir/vmlinux" >/dev/null || die "truncated vmlinux from $dbg"
    fi
    [ "$(wc -l <"$dir/System.map")" -gt 1000 ] || die "System.map from $dbg looks like a stub"
    # modules, decompressed on the host (busybox insmod cannot read .ko.xz/.ko.zst)
    mkdir -p "$dir/modules"
    while IFS= read -r m; do
        case "$m" in
            *.ko.xz) xz -dc "$m" ;; *.ko.zst) zstd -qdc "$m" ;; *.ko.gz) gzip -dc "$m" ;; *) cat "$m" ;;
        esac >"$dir/modules/$(basename "${m%.ko*}").ko"
    done < <(find "$dir/x/lib/modules" -name '*.ko*')
    # load order: dependencies first
    python3 - "$dir/modules" >"$dir/modules/order" <<'EOF'
import os, subprocess, sys
d = sys.argv[1]
mods = {f[:-3]: f for f in os.listdir(d) if f.endswith(".ko")}
deps = {}
for m, f in mods.items():
    out = subprocess.run(["modinfo", "-F", "depends", os.path.join(d, f)], capture_output=True, text=True).stdout
    deps[m] = [x.replace("-", "_") for x in out.strip().split(",") if x]
done = []
def visit(m):
    if m in done or m not in mods: return
    for x in deps[m]: visit(x)
    done.append(m)
for m in sorted(mods): visit(m)
print("\n".join(mods[m] for m in done))
EOF
    echo "$rel" >"$dir/release"
    echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >"$dir/package"
    rm -rf "$dir/x"
    touch "$dir/ok"
    log "kernel $flavor: $rel ($(du -sh "$dir" | cut -f1))"
}

# ---------------------------------------------------------------------------------------
# 3. busybox + initramfs (one per kernel flavor: the modules belong to the kernel)
declare -A BUSYBOX
busybox_setup() {   # busybox_setup ARCH(amd64|i386|arm64)
    local arch=$1 out=$BUILD/busybox-$1 deb
    BUSYBOX[$arch]=$out/busybox
    [ -x "$out/busybox" ] && return 0
    if [ "$arch" = amd64 ]; then
        apt_download "$DEBS" busybox-static
        deb=$(ls "$DEBS"/busybox-static_*_amd64.deb | sort -V | tail -1)
    else
        fapt_download "$arch" "$DEBS" busybox-static
        deb=$(ls "$DEBS"/busybox-static_*_"$arch".deb | sort -V | tail -1)
    fi
    rm -rf "$out"; mkdir -p "$out/x"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$out/x" ./bin/busybox
    mv "$out/x/bin/busybox" "$out/busybox"; rm -rf "$out/x"
    file_arch=$(readelf -h "$out/busybox" | awk '/Machine:/ {print $2}')
    log "busybox $arch: $file_arch"
}

initramfs_tree() {   # initramfs_tree DIR ARCH KERNEL-DIR INIT: busybox, modules, /init
    local st=$1 arch=$2 dir=$3 init=$4
    rm -rf "$st"; mkdir -p "$st"/{bin,dev,proc,sys,tmp,run,lib/modules,etc}
    cp "${BUSYBOX[$arch]}" "$st/bin/busybox"
    ln -s busybox "$st/bin/sh"
    cp "$dir"/modules/*.ko "$dir/modules/order" "$st/lib/modules/"
    cp "$init" "$st/init"; chmod 755 "$st/init"
    mknod -m 600 "$st/dev/console" c 5 1
    mknod -m 666 "$st/dev/null" c 1 3
}
initramfs_pack() {   # initramfs_pack DIR OUT: newc cpio, gzip
    (cd "$1" && find . | sort | cpio -o -H newc -R 0:0 --quiet | gzip -6 >"$2.tmp")
    mv "$2.tmp" "$2"
    rm -rf "$1"
}
initramfs_setup() {   # initramfs_setup FLAVOR -> $KDIR/initramfs.cpio.gz
    local flavor=$1 dir=${KDIR[$1]} arch
    arch=$(flavor_arch "$flavor")
    local out=$dir/initramfs.cpio.gz
    if [ -f "$out" ] && [ "$out" -nt "$HERE/init.sh" ]; then return 0; fi
    initramfs_tree "$dir/initramfs" "$arch" "$dir" "$HERE/init.sh"
    initramfs_pack "$dir/initramfs" "$out"
}

# x86_64-crashk: Debian 12's kexec-tools (the `kexec` binary and the shared libraries it
# loads, from the .debs of kexec-tools and its lib* dependencies, unpacked with dpkg -x
# like QEMU: nothing is installed on the host), a capture initramfs (busybox,
# qemu_fw_cfg, init-capture.sh as /init) and the crashed kernel's initramfs: the usual
# one plus kexec, /kernel (the same vmlinuz), /capture.img and /crashk.sh.
KEXEC_ROOT=""
kexec_setup() {
    KEXEC_ROOT=$BUILD/kexec-tools
    [ -f "$KEXEC_ROOT/ok" ] && return 0
    local pkgs=() want=(kexec-tools) new p deb f i
    for i in 1 2 3 4 5 6 7 8; do
        new=()
        for p in "${want[@]}"; do
            [[ " ${pkgs[*]-} " == *" $p "* ]] && continue
            pkgs+=("$p")
            apt_download "$DEBS" "$p"
            deb=$( (compgen -G "$DEBS/${p}_*_amd64.deb"; compgen -G "$DEBS/${p}_*_all.deb" || true) | sort -V | tail -1)
            for f in Pre-Depends Depends; do
                # first alternative of each dependency; only libraries (lib*, zlib1g)
                # shellcheck disable=SC2207
                new+=($(dpkg-deb -f "$deb" "$f" | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' \
                        | grep -E '^(lib|zlib)' || true))
            done
        done
        want=()
        for p in "${new[@]}"; do [[ " ${pkgs[*]} " == *" $p "* ]] || want+=("$p"); done
        [ ${#want[@]} -eq 0 ] && break
    done
    rm -rf "$KEXEC_ROOT"; mkdir -p "$KEXEC_ROOT/x" "$KEXEC_ROOT/root"
    : >"$KEXEC_ROOT/packages"
    for p in "${pkgs[@]}"; do
        deb=$( (compgen -G "$DEBS/${p}_*_amd64.deb"; compgen -G "$DEBS/${p}_*_all.deb" || true) | sort -V | tail -1)
        dpkg -x "$deb" "$KEXEC_ROOT/x"
        echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$KEXEC_ROOT/packages"
    done
    # /sbin/kexec, its ELF interpreter and every library it needs (DT_NEEDED, transitively)
    python3 - "$KEXEC_ROOT/x" "$KEXEC_ROOT/root" <<'PYEOF' || die "kexec's shared libraries are not all in the .debs"
import os, re, shutil, subprocess, sys
x, root = sys.argv[1], sys.argv[2]
DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]
def real(path):
    for _ in range(40):
        if not os.path.islink(path):
            return path
        t = os.readlink(path)
        path = os.path.join(x, t.lstrip("/")) if t.startswith("/") else os.path.join(os.path.dirname(path), t)
    raise SystemExit(f"symlink loop at {path}")
def find(soname):
    for d in DIRS:
        p = os.path.join(x, d, soname)
        if os.path.lexists(p):
            return real(p)
    raise SystemExit(f"{soname} is in none of the unpacked packages")
def deps(path):
    out = subprocess.run(["readelf", "-dlW", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out), \
        re.findall(r"Requesting program interpreter: ([^\]]+)\]", out)
os.makedirs(os.path.join(root, "sbin"))
os.makedirs(os.path.join(root, "lib/x86_64-linux-gnu"))
os.makedirs(os.path.join(root, "lib64"))
shutil.copy(os.path.join(x, "sbin/kexec"), os.path.join(root, "sbin/kexec"))
todo, done = [os.path.join(x, "sbin/kexec")], set()
needed, interp = deps(todo[0])
for i in interp:
    shutil.copy(real(os.path.join(x, i.lstrip("/"))), os.path.join(root, i.lstrip("/")))
while todo:
    n, _ = deps(todo.pop())
    for so in n:
        if so in done:
            continue
        done.add(so)
        src = find(so)
        shutil.copy(src, os.path.join(root, "lib/x86_64-linux-gnu", so))
        todo.append(src)
print("kexec needs " + " ".join(sorted(done)) + "; interpreter " + " ".join(interp), file=sys.stderr)
PYEOF
    rm -rf "$KEXEC_ROOT/x"
    touch "$KEXEC_ROOT/ok"
    log "kexec-tools: $(head -1 "$KEXEC_ROOT/packages") + $(($(wc -l <"$KEXEC_ROOT/packages") - 1)) library packages, $(du -sh "$KEXEC_ROOT/root" | cut -f1)"
}
CRASHK_INITRD=""
crashk_initramfs_setup() {
    local dir=${KDIR[amd64]} s fresh=1
    CRASHK_INITRD=$dir/initramfs-crashk.cpio.gz
    for s in "$HERE/init.sh" "$HERE/crashk.sh" "$HERE/init-capture.sh" "$KEXEC_ROOT/ok"; do
        [ "$CRASHK_INITRD" -nt "$s" ] || fresh=0
    done
    [ "$fresh" = 1 ] && return 0
    initramfs_tree "$dir/initramfs-capture" amd64 "$dir" "$HERE/init-capture.sh"
    initramfs_pack "$dir/initramfs-capture" "$dir/capture.img"
    initramfs_tree "$dir/initramfs-crashk" amd64 "$dir" "$HERE/init.sh"
    cp -a "$KEXEC_ROOT/root/." "$dir/initramfs-crashk/"
    cp "$HERE/crashk.sh" "$dir/initramfs-crashk/crashk.sh"
    cp "$dir/vmlinuz" "$dir/initramfs-crashk/kernel"
    mv "$dir/capture.img" "$dir/initramfs-crashk/capture.img"
    initramfs_pack "$dir/initramfs-crashk" "$CRASHK_INITRD"
    log "crashk initramfs: $(du -h "$CRASHK_INITRD" | cut -f1)"
}

# ---------------------------------------------------------------------------------------
# 4. one guest: boot, capture, crash reference, meta.json, stamp
capture_guest() {
    local g=$1 arch flavor cpu mem kaslr paging dir kd qemu append
    arch=$(guest_field "$g" 2); flavor=$(guest_field "$g" 3); cpu=$(guest_field "$g" 4)
    mem=$(guest_field "$g" 5); kaslr=$(guest_field "$g" 6); paging=$(guest_field "$g" 7)
    kd=${KDIR[$flavor]}
    dir=$CACHE/$g
    local initrd=$kd/initramfs.cpio.gz
    rm -rf "$dir"; mkdir -p "$dir"
    local extra=() console=ttyS0
    case "$arch" in
        x86_64) qemu=$QEMU_DIR/usr/bin/qemu-system-x86_64 ;;
        i386) qemu=$QEMU_DIR/usr/libexec/qemu-system-i386 ;;
        aarch64)
            qemu=$QEMU_ARM_DIR/usr/bin/qemu-system-aarch64; console=ttyAMA0
            # QEMU 7.2 accepts paging=true for arm but has no arm page-table walker for
            # dumps: it writes the physical dump again with vaddr == paddr. HMP `info
            # mem` / `info tlb` do not exist for arm. The virtual-address reference is
            # gdbstub-samples.txt instead (capture.py).
            extra+=(--skip paging.elf --skip info-mem.txt --skip info-tlb.txt) ;;
    esac
    [ "$arch" = aarch64 ] || extra+=(--datadir "$QEMU_DIR/usr/share/qemu" --datadir "$QEMU_DIR/usr/share/seabios")
    append="console=$console panic=-1 rdinit=/init"
    [ "$kaslr" = 1 ] || append+=" nokaslr"
    if [ "$g" = x86_64-highmem ] && [ "$HIGHMEM_LITE" = 1 ]; then extra+=(--skip paging.elf --skip kdump-lzo --skip kdump-snappy); fi
    [ "$paging" = 5level ] && extra+=(--skip info-mem.txt)
    local crashk=0
    if [ "$g" = x86_64-crashk ]; then
        # boots, loads the capture kernel, crashes; the dumps are taken while the
        # capture kernel runs (crashk.sh, init-capture.sh)
        crashk=1; initrd=$CRASHK_INITRD; append+=" crashkernel=$CRASHKERNEL"
    fi
    cp "$kd/System.map" "$dir/System.map"
    cp "$kd/config" "$dir/config"
    python3 "$HERE/capture.py" capture \
        --guest "$g" --arch "$arch" --qemu "$qemu" \
        --kernel "$kd/vmlinuz" --initrd "$initrd" --append "$append" \
        --cpu "$cpu" --mem "$mem" --smp 2 --out "$dir" \
        --boot-timeout "$BOOT_TIMEOUT" --dump-timeout "$DUMP_TIMEOUT" "${extra[@]}"
    if [ "$arch" != i386 ]; then
        ln "$kd/vmlinux" "$dir/vmlinux" 2>/dev/null || cp "$kd/vmlinux" "$dir/vmlinux"
    fi
    # QEMU's kdump formats are flattened only; makedumpfile -R rearranges one into the
    # seekable kdump-compressed layout (same pages, same zlib blocks)
    timed "makedumpfile -R" rearrange "$dir"
    # QEMU creates its dumps 0400; the raw and ELF images are mostly zero pages: punch
    # holes (the bytes read back the same)
    chmod 0644 "$dir"/*
    timed "fallocate --dig-holes" dig_holes "$dir"
    if [ "$arch" = x86_64 ]; then timed "crash reference" crash_ref "$dir"; fi
    timed "meta.json + checks" python3 "$HERE/capture.py" meta --guest "$g" --arch "$arch" --out "$dir" \
        --paging "$paging" --kaslr "$kaslr" --release "$(cat "$kd/release")" \
        --kernel-package "$(cat "$kd/package")" --qemu "$qemu" --crashk "$crashk"
    printf 'harness-version %s\ncaptured %s\n' "$HARNESS_VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$dir/complete"
    log "$g: done, $(du -sh "$dir" | cut -f1) on disk ($(du -sh --apparent-size "$dir" | cut -f1) apparent)"
}

rearrange() {
    local dir=$1 f
    for f in "$dir"/kdump-*.flat; do
        [ -f "$f" ] || continue
        makedumpfile -R "${f%.flat}.rearranged.kdump" <"$f" >"$dir/makedumpfile-R.log" 2>&1 || {
            log "WARNING: makedumpfile -R $f failed: $(tail -3 "$dir/makedumpfile-R.log")"
            rm -f "${f%.flat}.rearranged.kdump"
        }
    done
}
dig_holes() {
    local f
    for f in "$1"/*.elf "$1"/*.raw; do
        [ -f "$f" ] && { fallocate --dig-holes "$f" 2>/dev/null || true; }   # not every fs can
    done
    return 0
}

# crash's view of QEMU's own phys.elf, as a reference for dumpconv's outputs
crash_ref() {
    local dir=$1 rc=0
    # crash 8.0.2's `ps` walks the pid xarray and finds only the idle tasks on these 6.1
    # kernels, so the task list is also printed from init_task.tasks
    printf '%s\n' sys "bt -a" ps log "kmem -i" \
        "list task_struct.tasks -h init_task -s task_struct.pid,comm" quit >"$dir/crash-ref.cmd"
    (cd "$dir" && timeout 300 crash -s vmlinux phys.elf -i crash-ref.cmd) \
        >"$dir/crash-ref.txt" 2>&1 </dev/null || rc=$?
    if [ "$rc" != 0 ] || ! grep -q "RELEASE" "$dir/crash-ref.txt"; then
        log "WARNING: crash failed on $dir/phys.elf (rc=$rc): $(head -5 "$dir/crash-ref.txt" | tr '\n' ' ')"
        echo "crash rc=$rc" >"$dir/crash-ref.failed"
    fi
    rm -f "$dir/crash-ref.cmd"
}

# ---------------------------------------------------------------------------------------
step "host tools (apt)" host_tools
[ "$NEED_AMD64$NEED_I386" = 00 ] || step "qemu (unpack 7.2 .debs)" qemu_setup
[ "$NEED_ARM64" = 0 ] || step "qemu-system-aarch64 (unpack 7.2 .deb)" qemu_arm_setup
for f in "${NEED_FLAVORS[@]}"; do
    step "kernel $f (download + extract)" kernel_setup "$f"
done
[ "$NEED_AMD64" = 1 ] && step "busybox amd64" busybox_setup amd64
[ "$NEED_I386" = 1 ] && step "busybox i386" busybox_setup i386
[ "$NEED_ARM64" = 1 ] && step "busybox arm64" busybox_setup arm64
for f in "${NEED_FLAVORS[@]}"; do
    step "initramfs $f" initramfs_setup "$f"
done
if [[ " ${TODO[*]} " == *" x86_64-crashk "* ]]; then
    step "kexec-tools (unpack .debs)" kexec_setup
    step "initramfs crashk (kexec, capture kernel + initramfs)" crashk_initramfs_setup
fi
for g in "${TODO[@]}"; do
    step "guest $g" capture_guest "$g"
done

T_END=$(date +%s.%N)
TIMINGS+=("$(printf '%-40s %8ss' total "$(awk -v a="$T_START" -v b="$T_END" 'BEGIN {printf "%.1f", b - a}')")")
{
    echo "# ensure-guests.sh run at $(date -u +%Y-%m-%dT%H:%M:%SZ) for: ${TODO[*]}"
    printf '%s\n' "${TIMINGS[@]}"
} | tee -a "$CACHE/timings.log" >&2
log "cache: $CACHE ($(du -sh "$CACHE" | cut -f1) on disk)"
exit 0
}
