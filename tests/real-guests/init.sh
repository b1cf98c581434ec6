#!/bin/busybox sh
# shellcheck shell=dash
# /init of the capture guests' initramfs (busybox, static). Runs as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mount -t tmpfs tmpfs /tmp
echo "DUMPCONV: init started, $(uname -r) $(uname -m)"

# qemu_fw_cfg (and whatever it needs): with -device vmcoreinfo it tells QEMU where the
# kernel's VMCOREINFO note is, so QEMU's dumps carry it.
if [ -f /lib/modules/order ]; then
    for m in $(cat /lib/modules/order); do
        insmod "/lib/modules/$m" && echo "DUMPCONV: loaded $m" || echo "DUMPCONV: insmod $m failed"
    done
fi
if [ -d /sys/firmware/qemu_fw_cfg ]; then echo "DUMPCONV: fw_cfg present"; fi
if [ -r /sys/kernel/vmcoreinfo ]; then echo "DUMPCONV: vmcoreinfo-note $(cat /sys/kernel/vmcoreinfo)"; fi

# A few sleeping user processes, so user page tables, mm structs and stacks exist.
# No busy loops: under TCG they would eat the host's cores.
sleep 1000001 &
sleep 1000002 &
mkfifo /tmp/fifo
cat /tmp/fifo >/dev/null &                 # blocks in open()
sh -c 'DUMPCONV_USER_MARKER=user-marker-1234; exec sleep 1000003' &
dd if=/dev/urandom of=/tmp/random.bin bs=4096 count=256 2>/dev/null   # 1 MiB of tmpfs pages
(echo "dumpconv tmpfs page marker"; cat /tmp/random.bin) >/tmp/marker.bin
sync

echo "DUMPCONV: processes:"
ps
echo "DUMPCONV: iomem-begin"
cat /proc/iomem
echo "DUMPCONV: iomem-end"
echo "DUMPCONV: cmdline $(cat /proc/cmdline)"
if [ "$(uname -m)" = aarch64 ]; then
    # where the kernel really is (KASLR), as the guest sees it (arm64's kallsyms has no
    # _text and, without KALLSYMS_ALL, no data symbols; _stext is there)
    grep -E ' (_text|_stext|linux_banner)$' /proc/kallsyms | sed 's/^/DUMPCONV: kallsyms /'
    sed 's/^/DUMPCONV: module /' /proc/modules
    # vmalloc areas backed by RAM pages (no ioremap: reading device memory through the
    # debugger could have side effects): the harness samples a few through QEMU's gdbstub
    # %pK prints hashed values unless kptr_restrict is 1 (then root sees the addresses)
    echo 1 >/proc/sys/kernel/kptr_restrict
    echo "DUMPCONV: vmallocinfo-begin"
    grep 'pages=' /proc/vmallocinfo | grep -v ioremap | head -n 80
    echo "DUMPCONV: vmallocinfo-end"
    # user mappings of every process: the harness reads some through each CPU's TTBR0_EL1
    echo "DUMPCONV: maps-begin"
    for d in /proc/[0-9]*; do
        sed "s|^|${d#/proc/} |" "$d/maps" 2>/dev/null
    done
    echo "DUMPCONV: maps-end"
fi
# x86_64-crashk: load a kdump capture kernel and crash (never returns; the capture
# kernel's init prints READY)
if [ -f /crashk.sh ]; then . /crashk.sh; fi
echo "DUMPCONV-GUEST-READY"

# PID 1 must not exit.
while :; do sleep 3600; done
