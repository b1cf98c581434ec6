# shellcheck shell=dash
# Sourced by /init (init.sh) of the x86_64-crashk guest once its usual processes run,
# instead of printing READY: load Debian's kdump capture kernel with kexec -p, record
# the facts the tests check (between "crashk-facts-begin/end" markers on the console)
# and crash the kernel. The capture kernel (init-capture.sh) prints READY.
crashk_fail() {
    echo "DUMPCONV: crashk-failed: $*"
    echo o >/proc/sysrq-trigger   # power off: QEMU exits (-no-reboot), the harness fails
    while :; do sleep 3600; done
}
CAPTURE_APPEND="console=ttyS0 panic=-1 rdinit=/init nokaslr irqpoll nr_cpus=1 reset_devices dumpconv.capture=1"
grep -q 'Crash kernel' /proc/iomem || crashk_fail "no 'Crash kernel' range in /proc/iomem: crashkernel= not honoured"
echo "DUMPCONV: crashk reserved $(grep 'Crash kernel' /proc/iomem | tr -s ' ')"
KEXEC_MODE=kexec_load
if ! LD_LIBRARY_PATH=/lib/x86_64-linux-gnu /sbin/kexec -p /kernel --initrd=/capture.img \
        --append="$CAPTURE_APPEND"; then
    echo "DUMPCONV: kexec -p (kexec_load) failed, trying kexec_file_load (-s)"
    KEXEC_MODE=kexec_file_load
    LD_LIBRARY_PATH=/lib/x86_64-linux-gnu /sbin/kexec -p -s /kernel --initrd=/capture.img \
        --append="$CAPTURE_APPEND" || crashk_fail "kexec -p failed"
fi
[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || crashk_fail "/sys/kernel/kexec_crash_loaded is not 1"
# crash on CPU 0, so the capture kernel runs there and CPU 1 stays stopped in the
# crashed kernel (QEMU's CPU notes then hold one CPU of each kernel, CPU 0 the capture's)
taskset -p 1 1 >/dev/null || crashk_fail "taskset -p 1 1"
CRASHK_VERSION=$(cat /proc/version)
CRASHK_CMDLINE=$(cat /proc/cmdline)
CRASHK_VMCI=$(cat /sys/kernel/vmcoreinfo)
CRASHK_AFFINITY=$(taskset -p 1)
# From here on only shell builtins (no fork): the task list printed is the one the
# crashed kernel holds when it panics. Listed until two passes agree (a kernel thread
# can come or go), printed, then listed again: the harness keeps the last block.
crashk_tasks() {
    CRASHK_T=""
    for d in /proc/[0-9]*; do
        read -r c <"$d/comm" 2>/dev/null || continue
        CRASHK_T="$CRASHK_T
task ${d#/proc/} $c"
    done
}
n=0
while :; do
    crashk_tasks; prev=""
    while [ "$CRASHK_T" != "$prev" ]; do prev=$CRASHK_T; crashk_tasks; done
    echo "DUMPCONV: crashk-facts-begin"
    echo "version $CRASHK_VERSION"
    echo "cmdline $CRASHK_CMDLINE"
    echo "vmcoreinfo $CRASHK_VMCI"
    echo "kexec $KEXEC_MODE"
    echo "capture-append $CAPTURE_APPEND"
    echo "pid1-affinity $CRASHK_AFFINITY"
    echo "crash-cpu 0"
    echo "tasks-begin$CRASHK_T"
    echo "tasks-end"
    echo "DUMPCONV: crashk-facts-end"
    crashk_tasks
    n=$((n + 1))
    [ "$CRASHK_T" = "$prev" ] || [ "$n" -ge 5 ] && break
done
echo c >/proc/sysrq-trigger
crashk_fail "still alive after echo c > /proc/sysrq-trigger"
