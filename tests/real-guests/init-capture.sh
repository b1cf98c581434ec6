#!/bin/busybox sh
# shellcheck shell=dash
# /init of the x86_64-crashk guest's capture initramfs: runs as PID 1 of the kdump
# capture kernel that the crashed kernel loaded with `kexec -p` (crashk.sh). Records the
# capture kernel's own facts (between "capture-facts-begin/end"), prints READY and sleeps;
# the harness then dumps the whole guest with QEMU.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
echo "DUMPCONV: capture kernel init started, $(uname -r) $(uname -m)"
# qemu_fw_cfg, as a distribution's capture initramfs loads it (udev, ACPI id QEMU0002).
# In a kdump kernel the driver does not tell QEMU's vmcoreinfo device about this kernel's
# note (observed on 6.1): QEMU's dumps keep carrying the crashed kernel's VMCOREINFO.
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m" && echo "DUMPCONV: loaded $m" || echo "DUMPCONV: insmod $m failed"
done
sleep 2000001 &
CAP_VERSION=$(cat /proc/version)
CAP_UNAME=$(uname -r)
CAP_CMDLINE=$(cat /proc/cmdline)
CAP_VMCI=$(cat /sys/kernel/vmcoreinfo)
CAP_VMCORE=$(stat -c %s /proc/vmcore 2>/dev/null || echo missing)
echo "DUMPCONV: iomem-begin"
cat /proc/iomem
echo "DUMPCONV: iomem-end"
mkfifo /watch   # never written: `read -t` on it is a sleep without a process
exec 3<>/watch
# only builtins from here (see crashk.sh)
cap_tasks() {
    CAP_T=""
    for d in /proc/[0-9]*; do
        read -r c <"$d/comm" 2>/dev/null || continue
        CAP_T="$CAP_T
task ${d#/proc/} $c"
    done
}
cap_facts() {
    echo "DUMPCONV: capture-facts-begin"
    echo "version $CAP_VERSION"
    echo "uname-r $CAP_UNAME"
    echo "cmdline $CAP_CMDLINE"
    echo "vmcoreinfo $CAP_VMCI"
    echo "vmcore-size $CAP_VMCORE"
    echo "tasks-begin$CAP_T"
    echo "tasks-end"
    echo "DUMPCONV: capture-facts-end"
}
cap_tasks; prev=""
while [ "$CAP_T" != "$prev" ]; do prev=$CAP_T; cap_tasks; done
cap_facts
echo "DUMPCONV-GUEST-READY"
# Until the harness stops the guest: list the tasks again every 0.3 s and print the
# facts again whenever they changed (a kernel thread can come or go), so the last block
# on the console is the task list the dump holds.
while :; do
    read -r -t 0.3 _ <&3
    prev=$CAP_T
    cap_tasks
    [ "$CAP_T" = "$prev" ] || cap_facts
done
