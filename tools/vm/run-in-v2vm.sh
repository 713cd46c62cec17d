#!/bin/bash
# run-in-v2vm.sh - run one command inside a throw-away QEMU VM whose kernel
# has a pure cgroup v2 hierarchy (cpu, memory, pids, io, ... controllers) at
# /sys/fs/cgroup, and hand back its stdout, stderr and exit status.
# nscg's own copy (from the team's shared prototype); see tools/vm/README.md.
#
# Usage: run-in-v2vm.sh [options] [--share DIR]... -- COMMAND [ARG]...
#   e.g. tools/vm/run-in-v2vm.sh --timeout 600 --retry 1 --share "$PWD" -- \
#          python3 -m pytest -m cgroup2 tests/cgroup2
#
# The guest sees the host's whole root filesystem read-only (virtiofs, or
# 9p) with a tmpfs overlay on top: writes succeed but are thrown away at exit.
# Every --share DIR is mounted read-write at the same absolute path, so
# writes there land on the host. COMMAND runs as root, in the caller's
# current directory, with the caller's environment (plus NSCG_V2VM=1) and
# umask, stdin /dev/null, in the root cgroup. All controllers listed in
# /sys/fs/cgroup/cgroup.controllers are switched on in the root's
# cgroup.subtree_control (as systemd does) unless --no-subtree-control is given.
# The guest has loopback networking only, no swap, the host's hostname, a
# 1 GiB null block device /dev/vda (reads zeros, discards writes; a MAJ:MIN
# for io.max / io.weight tests) and the host's /boot/vmlinuz-* as its kernel.
#
# Needs: apt-get install qemu-system-x86 linux-image-amd64 busybox-static
# (plus kmod, cpio, gzip and xz-utils from the base system). virtiofs needs
# root and a virtiofsd (qemu 7.2 ships /usr/lib/qemu/virtiofsd); without
# them the script uses 9p.
#
# Exit status: the command's own exit status, or 125 with one line
# "run-in-v2vm: ..." on stderr when the VM could not be built or started,
# or stopped without reporting back (2 for a usage error).
#
# Options:
#   --share DIR          share DIR read-write at the same path (repeatable)
#   --memory MB          guest RAM in MiB (default 2048; env V2VM_MEMORY)
#   --cpus N             guest vCPUs (default: host CPUs, at most 8; env V2VM_CPUS)
#   --accel auto|tcg|kvm default auto: KVM only if /dev/kvm is usable and the
#                        CPU flags show vmx or svm (falls back to TCG if the KVM
#                        guest does not come up), else TCG (env V2VM_ACCEL)
#   --fs auto|virtiofs|9p  how host files reach the guest (default auto:
#                        virtiofs when possible, falling back to 9p; env V2VM_FS)
#   --kernel VERSION     use /boot/vmlinuz-VERSION and /lib/modules/VERSION
#                        (default: the newest one with 9p modules; env V2VM_KERNEL)
#   --timeout SEC        kill the VM after SEC seconds in all (default 0 = no
#                        limit; env V2VM_TIMEOUT); applies to each attempt
#   --retry N            when the VM fails (boot hang, virtiofs hang, timeout:
#                        what would exit 125), start a new VM up to N more times,
#                        the retries with 9p when --fs is auto. The command may
#                        then run more than once: use it for idempotent commands
#                        such as test suites (default 0; env V2VM_RETRY)
#   --boot-timeout SEC   give up if the guest has not started COMMAND after SEC
#                        seconds (default 120; env V2VM_BOOT_TIMEOUT)
#   --no-env             pass only PATH, HOME=/root, LANG=C.UTF-8, TERM=dumb
#   --no-subtree-control leave /sys/fs/cgroup/cgroup.subtree_control empty
#   --systemd            boot /lib/systemd/systemd as PID 1 (pure cgroup v2, the
#                        system bus, logind) with a lingering user "nscg" whose
#                        user manager runs; COMMAND then runs as root in the
#                        system service v2vm-run.service (not in the root
#                        cgroup), with NSCG_V2VM_SYSTEMD=1, NSCG_V2VM_USER=nscg
#                        and NSCG_V2VM_AS_USER=/run/v2vm/as-user (a command that
#                        runs its arguments as that user, with XDG_RUNTIME_DIR
#                        and DBUS_SESSION_BUS_ADDRESS set); env V2VM_SYSTEMD=1
#   --console            copy the guest kernel console to stderr
#   --keep               keep the per-run directory (console log, qemu log)
#   -v, --verbose        timings, qemu command line and fallbacks on stderr
# Environment only: V2VM_DIR (default $TMPDIR/v2vm: cache and run directories),
# V2VM_APPEND (extra kernel arguments), V2VM_QEMU_OPTS (extra qemu options),
# V2VM_CPU (qemu -cpu model), V2VM_CGROUP2_OPTS (cgroup2 mount options,
# comma-separated, e.g. nsdelegate,memory_recursiveprot).
set -u -o pipefail

PROG=run-in-v2vm
die() { echo "$PROG: $*" >&2; exit 125; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
vlog() { [[ $VERBOSE = 1 ]] && echo "$PROG: [$(date +%T.%N | cut -c1-12)] $*" >&2; return 0; }

V2VM_DIR=${V2VM_DIR:-${TMPDIR:-/tmp}/v2vm}
MEMORY=${V2VM_MEMORY:-2048}
NCPU=$(nproc 2>/dev/null || echo 1); ((NCPU > 8)) && NCPU=8
CPUS=${V2VM_CPUS:-$NCPU}
ACCEL=${V2VM_ACCEL:-auto}
FS=${V2VM_FS:-auto}
KVER=${V2VM_KERNEL:-}
TIMEOUT=${V2VM_TIMEOUT:-0}
BOOT_TIMEOUT=${V2VM_BOOT_TIMEOUT:-120}
RETRY=${V2VM_RETRY:-0}
PASS_ENV=1 SUBTREE=1 CONSOLE=0 KEEP=0 VERBOSE=0
SYSTEMD=${V2VM_SYSTEMD:-0}
SHARES=()
need_arg() { [[ $1 -ge 2 ]] || { echo "$PROG: $2 needs an argument" >&2; exit 2; }; }
while (($#)); do
  case $1 in
    --share) need_arg $# "$1"; SHARES+=("$2"); shift 2 ;;
    --share=*) SHARES+=("${1#*=}"); shift ;;
    --memory) need_arg $# "$1"; MEMORY=$2; shift 2 ;;
    --cpus) need_arg $# "$1"; CPUS=$2; shift 2 ;;
    --accel) need_arg $# "$1"; ACCEL=$2; shift 2 ;;
    --fs) need_arg $# "$1"; FS=$2; shift 2 ;;
    --kernel) need_arg $# "$1"; KVER=$2; shift 2 ;;
    --timeout) need_arg $# "$1"; TIMEOUT=$2; shift 2 ;;
    --boot-timeout) need_arg $# "$1"; BOOT_TIMEOUT=$2; shift 2 ;;
    --retry) need_arg $# "$1"; RETRY=$2; shift 2 ;;
    --no-env) PASS_ENV=0; shift ;;
    --no-subtree-control) SUBTREE=0; shift ;;
    --systemd) SYSTEMD=1; shift ;;
    --console) CONSOLE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -v|--verbose) VERBOSE=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) echo "$PROG: unknown option '$1' (the command goes after --)" >&2; exit 2 ;;
  esac
done
(($#)) || { echo "$PROG: no command; usage: run-in-v2vm.sh [--share DIR] -- COMMAND..." >&2; exit 2; }
[[ $SYSTEMD = 0 || $SYSTEMD = 1 ]] || { echo "$PROG: V2VM_SYSTEMD takes 0 or 1" >&2; exit 2; }
[[ $MEMORY =~ ^[1-9][0-9]*$ && $CPUS =~ ^[1-9][0-9]*$ && $TIMEOUT =~ ^[0-9]+$ && $BOOT_TIMEOUT =~ ^[0-9]+$ && $RETRY =~ ^[0-9]+$ ]] \
  || { echo "$PROG: --memory, --cpus, --timeout, --boot-timeout and --retry take integers" >&2; exit 2; }
case $ACCEL in auto|tcg|kvm) ;; *) echo "$PROG: --accel takes auto, tcg or kvm" >&2; exit 2 ;; esac
case $FS in auto|virtiofs|9p) ;; *) echo "$PROG: --fs takes auto, virtiofs or 9p" >&2; exit 2 ;; esac

# ------------------------------------------------------------------ host checks
QEMU=$(command -v qemu-system-x86_64) \
  || die "cannot start VM: qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "cannot start VM: $BUSYBOX not found (apt-get install busybox-static)"
elf_has_interp() {  # true if the ELF64 file has a PT_INTERP program header
  local f=$1 phoff phentsize phnum i t
  phoff=$(od -An -t u8 -j 32 -N 8 "$f" | tr -d ' ') || return 1
  phentsize=$(od -An -t u2 -j 54 -N 2 "$f" | tr -d ' ')
  phnum=$(od -An -t u2 -j 56 -N 2 "$f" | tr -d ' ')
  for ((i = 0; i < phnum; i++)); do
    t=$(od -An -t u4 -j $((phoff + i * phentsize)) -N 4 "$f" | tr -d ' ')
    [[ $t = 3 ]] && return 0
  done
  return 1
}
elf_has_interp "$BUSYBOX" && die "cannot start VM: $BUSYBOX is dynamically linked (apt-get install busybox-static)"
for t in modinfo cpio gzip; do
  command -v $t >/dev/null || die "cannot start VM: '$t' not found"
done
if [[ -z $KVER ]]; then   # newest /boot/vmlinuz-* whose module tree has 9p
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
    if [[ -d /lib/modules/$k ]] && modinfo -k "$k" -n 9p >/dev/null 2>&1; then KVER=$k; break; fi
  done
  [[ -n $KVER ]] || die "cannot start VM: no /boot/vmlinuz-* with 9p modules under /lib/modules (apt-get install linux-image-amd64)"
fi
VMLINUZ=/boot/vmlinuz-$KVER
[[ -r $VMLINUZ ]] || die "cannot start VM: kernel $VMLINUZ not readable"
[[ -d /lib/modules/$KVER ]] || die "cannot start VM: /lib/modules/$KVER missing"
if [[ -r /boot/config-$KVER ]] && ! grep -q '^CONFIG_MEMCG=y' "/boot/config-$KVER"; then
  die "cannot start VM: kernel $KVER is built without CONFIG_MEMCG"
fi

if [[ $SYSTEMD = 1 ]]; then
  [[ -x /lib/systemd/systemd ]] || die "cannot start VM: --systemd but /lib/systemd/systemd is missing (apt-get install systemd)"
  [[ -e /lib/systemd/system/dbus.service ]] || die "cannot start VM: --systemd but dbus is missing (apt-get install dbus)"
  command -v setpriv >/dev/null || die "cannot start VM: --systemd needs setpriv (util-linux)"
fi

VIRTIOFSD=
if [[ $FS != 9p ]]; then
  for c in "${V2VM_VIRTIOFSD:-}" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd "$(command -v virtiofsd 2>/dev/null)"; do
    [[ -n $c && -x $c ]] && { VIRTIOFSD=$c; break; }
  done
  if [[ $FS = virtiofs ]]; then
    [[ -n $VIRTIOFSD ]] || die "cannot start VM: --fs virtiofs but no virtiofsd found"
    ((EUID == 0)) || die "cannot start VM: --fs virtiofs needs root"
  fi
fi
case $FS in
  auto) if [[ -n $VIRTIOFSD ]] && ((EUID == 0)); then FSS="virtiofs 9p"; else FSS=9p; fi ;;
  *) FSS=$FS ;;
esac
kvm_usable() { [[ -r /dev/kvm && -w /dev/kvm ]] && grep -q -w -E 'vmx|svm' /proc/cpuinfo; }
case $ACCEL in
  auto) if kvm_usable; then ACCELS="kvm tcg"; else ACCELS=tcg; fi ;;
  *) ACCELS=$ACCEL ;;
esac

SAFE_PATH='^/[A-Za-z0-9._/+@:=,-]*$'   # paths that go on the kernel command line or into qemu options
SHARE_PATHS=()
for d in "${SHARES[@]}"; do
  [[ -d $d ]] || die "--share $d: not a directory"
  p=$(realpath -e -- "$d") || die "--share $d: cannot resolve"
  [[ $p != / ]] || die "--share /: sharing the whole root read-write is not supported"
  [[ $p =~ $SAFE_PATH ]] || die "--share $p: the path has characters this script does not pass to the guest"
  SHARE_PATHS+=("$p")
done
[[ $V2VM_DIR =~ $SAFE_PATH ]] || die "V2VM_DIR=$V2VM_DIR: unsupported characters in the path"
mkdir -p "$V2VM_DIR/cache" || die "cannot create $V2VM_DIR/cache"

# ------------------------------------------------------------ guest init code
write_init() {  # stage 1: PID 1 in the initramfs (busybox sh)
cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "v2vm-init: $*" > /dev/console; }
fail() { log "FATAL: $*"; reboot -f; sleep 5; exit 1; }
DEBUG=; grep -q 'v2vm.debug=1' /proc/cmdline && DEBUG=1
dbg() { [ -n "$DEBUG" ] && log "$(cut -d' ' -f1 /proc/uptime) $*"; }
dbg "stage1"
for m in $(cat /lib/mod/order); do
  insmod /lib/mod/$m.ko 2>/dev/console || log "insmod $m failed"
done
dbg "modules loaded"
FS=9p
for a in $(cat /proc/cmdline); do case $a in v2vm.fs=*) FS=${a#*=} ;; esac; done
mkdir -p /host /newroot
if [ "$FS" = virtiofs ]; then
  mount -t virtiofs -o ro v2vmroot /host || fail "cannot mount the host root (virtiofs)"
else
  mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose v2vmroot /host \
    || fail "cannot mount the host root (9p)"
fi
mount -t tmpfs -o mode=755 v2vmupper /newroot || fail "cannot mount tmpfs"
mkdir -p /newroot/upper /newroot/work /newroot/root
R=/newroot/root
mount -t overlay -o lowerdir=/host,upperdir=/newroot/upper,workdir=/newroot/work v2vmroot $R \
  || fail "cannot mount the overlay root"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs $R/run || fail "cannot mount /run"
mkdir -p $R/run/v2vm
cp /bin/busybox /stage2 /systemd-setup /systemd-run $R/run/v2vm/ || fail "cannot copy stage2"
dbg "switch_root"
mount --move /dev $R/dev
umount /sys /proc
exec switch_root $R /run/v2vm/busybox sh /run/v2vm/stage2
fail "switch_root failed"
EOF
}

write_stage2() {  # stage 2: PID 1 on the overlay root
cat <<'EOF'
B=/run/v2vm/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "v2vm-init: $*" > /dev/console; }
fail() { log "FATAL: $*"; [ -n "$ST" ] && echo "fail $*" > $ST; $B sync; $B reboot -f; }
ST=
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
DEBUG=; $B grep -q 'v2vm.debug=1' /proc/cmdline && DEBUG=1
dbg() { [ -n "$DEBUG" ] && log "$($B cut -d' ' -f1 /proc/uptime) $*"; }
dbg "stage2"
for p in /sys/class/virtio-ports/*; do
  case "$($B cat $p/name 2>/dev/null)" in
    v2vm.out) OUT=/dev/${p##*/} ;; v2vm.err) ERR=/dev/${p##*/} ;; v2vm.status) ST=/dev/${p##*/} ;;
  esac
done
[ -n "$ST" ] && [ -n "$OUT" ] && [ -n "$ERR" ] || fail "virtio serial ports not found"
RUN=; SUBTREE=1; CGOPTS=; FS=9p; HN=v2vm
for a in $($B cat /proc/cmdline); do
  case $a in
    v2vm.run=*) RUN=${a#*=} ;; v2vm.subtree=*) SUBTREE=${a#*=} ;;
    v2vm.cgopts=*) CGOPTS=${a#*=} ;; v2vm.fs=*) FS=${a#*=} ;; v2vm.hostname=*) HN=${a#*=} ;;
  esac
done
[ -n "$RUN" ] && [ -r "$RUN/cmd.sh" ] || fail "run directory '$RUN' not visible in the guest"
mount_shares() {
  while read -r tag path; do
    [ -n "$tag" ] || continue
    if [ "$FS" = virtiofs ]; then set -- -t virtiofs
    else set -- -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap; fi
    $B mkdir -p "$path" && $B mount "$@" "$tag" "$path" || fail "cannot mount the share $path"
  done < "$RUN/shares"
}
if $B grep -q 'v2vm.systemd=1' /proc/cmdline; then   # --systemd: systemd becomes PID 1
  mount_shares
  printf 'OUT=%s\nERR=%s\nST=%s\nRUN=%s\nHN=%s\n' "$OUT" "$ERR" "$ST" "$RUN" "$HN" > /run/v2vm/env
  dbg "exec systemd-setup"
  exec $B sh /run/v2vm/systemd-setup
  fail "cannot run systemd-setup"
fi
$B mount -t cgroup2 ${CGOPTS:+-o $CGOPTS} cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
if [ "$SUBTREE" = 1 ]; then
  for c in $($B cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || log "cannot enable controller $c"
  done
fi
$B mkdir -p /dev/pts /dev/shm /dev/mqueue
$B mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$B ln -sf pts/ptmx /dev/ptmx
$B mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
$B mount -t mqueue mqueue /dev/mqueue 2>/dev/null
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
$B mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount_shares
$B hostname "$HN"
$B ip link set lo up 2>/dev/null
dbg "starting the command"
echo "started $($B cut -d' ' -f1 /proc/uptime)" > $ST
cd /
$B env -i /bin/bash "$RUN/cmd.sh" < /dev/null > $OUT 2> $ERR
echo "rc=$? $($B cut -d' ' -f1 /proc/uptime)" > $ST
$B sync
$B reboot -f
EOF
}

write_systemd_setup() {  # --systemd, stage 3: prepare the overlay's /etc, exec systemd as PID 1
cat <<'EOF'
B=/run/v2vm/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /run/v2vm/env
log() { echo "v2vm-init: $*" > /dev/console; }
fail() { log "FATAL: $*"; echo "fail $*" > $ST; $B sync; $B reboot -f; }
[ -x /lib/systemd/systemd ] || fail "--systemd: /lib/systemd/systemd not found (apt-get install systemd)"
[ -e /lib/systemd/system/dbus.service ] || fail "--systemd: no dbus.service (apt-get install dbus)"
echo "$HN" > /etc/hostname
# systemd must not take the guest for a container: it would ignore the kernel command line
$B rm -f /.dockerenv /run/.containerenv /run/systemd/container
# what systemd-tmpfiles-setup would make (it is masked: its boot-time cleaning of /tmp
# takes ~30 s under TCG and would remove the run directory from the overlay)
$B mkdir -p /run/user /run/lock /var/lib/dbus /var/lib/systemd && $B chmod 1777 /run/lock
# The unprivileged user, lingering: logind starts its user manager at boot.
U=nscg
if ! $B grep -q "^$U:" /etc/passwd; then
  N=$($B cat /etc/passwd /etc/group | $B awk -F: 'BEGIN { m = 1000 } $3 >= m && $3 < 60000 { m = $3 + 1 } END { print m }')
  echo "$U:x:$N:$N:nscg test user:/home/$U:/bin/sh" >> /etc/passwd
  echo "$U:x:$N:" >> /etc/group
  [ -e /etc/shadow ] && echo "$U:!:20000::::::" >> /etc/shadow
fi
N=$($B awk -F: -v u=$U '$1 == u { print $3 }' /etc/passwd)
G=$($B awk -F: -v u=$U '$1 == u { print $4 }' /etc/passwd)
H=$($B awk -F: -v u=$U '$1 == u { print $6 }' /etc/passwd)
[ -n "$N" ] || fail "cannot create the user $U"
$B mkdir -p "$H" /var/lib/systemd/linger && $B chown "$N:$G" "$H" && $B chmod 700 "$H"
: > /var/lib/systemd/linger/$U
printf 'U=%s\nN=%s\nG=%s\nH=%s\n' "$U" "$N" "$G" "$H" >> /run/v2vm/env
# user@.service's PAM service (Debian's, minus SELinux and loginuid)
[ -e /etc/pam.d/systemd-user ] || printf '%s\n' 'account include common-account' \
  'session required pam_limits.so' 'session include common-session-noninteractive' \
  'session optional pam_systemd.so' > /etc/pam.d/systemd-user
# a helper for the command: run something as the user, with its session bus
cat > /run/v2vm/as-user <<EOT
#!/bin/sh
# usage: as-user COMMAND [ARG]...: run COMMAND as $U (uid $N) with its user manager's environment
exec /usr/bin/setpriv --reuid=$N --regid=$G --init-groups /usr/bin/env HOME=$H USER=$U LOGNAME=$U \
  XDG_RUNTIME_DIR=/run/user/$N DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$N/bus "\$@"
EOT
$B chmod 755 /run/v2vm/as-user
S=/etc/systemd/system
$B mkdir -p $S /etc/systemd/system-generators /etc/systemd/user
cat > $S/v2vm.target <<EOT
[Unit]
Description=v2vm: boot for one command
Requires=basic.target
Wants=v2vm-run.service
After=basic.target
AllowIsolate=yes
EOT
cat > $S/v2vm-run.service <<EOT
[Unit]
Description=v2vm: run the command
Wants=dbus.service systemd-logind.service systemd-user-sessions.service user@$N.service
After=basic.target dbus.service systemd-logind.service systemd-user-sessions.service user@$N.service
[Service]
Type=simple
ExecStart=/run/v2vm/busybox sh /run/v2vm/systemd-run
StandardInput=null
StandardOutput=journal+console
StandardError=journal+console
EOT
# Units that only cost boot time under TCG (or touch hardware the guest lacks)
for u in systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
    systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-hwdb-update.service \
    ldconfig.service systemd-journal-catalog-update.service systemd-update-done.service \
    systemd-firstboot.service systemd-sysusers.service systemd-machine-id-commit.service \
    systemd-random-seed.service systemd-pstore.service systemd-timesyncd.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-modules-load.service \
    kmod-static-nodes.service systemd-repart.service systemd-pcrphase.service \
    systemd-pcrphase-sysinit.service systemd-remount-fs.service systemd-fsck-root.service \
    systemd-journal-flush.service systemd-tmpfiles-setup.service dev-hugepages.mount sys-fs-fuse-connections.mount \
    sys-kernel-config.mount sys-kernel-tracing.mount systemd-ask-password-console.path \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    fstrim.timer man-db.timer getty@tty1.service serial-getty@ttyS0.service \
    postgresql.service e2scrub_reap.service systemd-tmpfiles-clean.timer \
    systemd-update-utmp.service systemd-update-utmp-runlevel.service \
    modprobe@drm.service modprobe@configfs.service modprobe@fuse.service \
    modprobe@dm_mod.service modprobe@loop.service modprobe@efi_pstore.service; do
  $B ln -sf /dev/null $S/$u
done
for g in /lib/systemd/system-generators/*; do   # only the debug generator is kept
  case ${g##*/} in systemd-debug-generator) ;; *) $B ln -sf /dev/null /etc/systemd/system-generators/${g##*/} ;; esac
done
exec /lib/systemd/systemd --log-target=console
fail "cannot exec /lib/systemd/systemd"
EOF
}

write_systemd_run() {  # --systemd: v2vm-run.service runs the command, reports, powers off
cat <<'EOF'
B=/run/v2vm/busybox
. /run/v2vm/env
echo "started $($B cut -d' ' -f1 /proc/uptime)" > $ST
cd /
$B env -i NSCG_V2VM_SYSTEMD=1 NSCG_V2VM_USER=$U NSCG_V2VM_AS_USER=/run/v2vm/as-user \
  /bin/bash "$RUN/cmd.sh" < /dev/null > $OUT 2> $ERR
echo "rc=$? $($B cut -d' ' -f1 /proc/uptime)" > $ST
$B sync
$B reboot -f
EOF
}

# ---------------------------------------------- cache: initramfs and vmlinux
SELF_SUM=$(cksum < "${BASH_SOURCE[0]}" | cut -d' ' -f1)
# "nscg-" keeps this copy's cache apart from the shared prototype's (each removes
# only its own stale versions)
CACHE=$V2VM_DIR/cache/nscg-$KVER-$SELF_SUM
INITRD=$CACHE/initrd.cpio.gz
VMLINUX=$CACHE/vmlinux

build_cache() {
  local tmp w m off order=()
  declare -A seen=()
  tmp=$(mktemp -d "$V2VM_DIR/cache/build.XXXXXX") || return 1
  w=$tmp/root
  mkdir -p "$w"/{bin,dev,proc,sys,lib/mod} && cp "$BUSYBOX" "$w/bin/busybox" || return 1
  add_mod() {   # copy module $1 and its dependencies, dependencies first
    local m=$1 d f
    [[ -n ${seen[$m]:-} ]] && return 0
    seen[$m]=1
    for d in $(modinfo -k "$KVER" -F depends "$m" 2>/dev/null | tr ',' ' '); do add_mod "$d" || return 1; done
    f=$(modinfo -k "$KVER" -n "$m" 2>/dev/null) || { echo "module $m not found for $KVER" >&2; return 1; }
    case $f in
      ""|*builtin*) return 0 ;;
      *.ko) cp "$f" "$w/lib/mod/$m.ko" ;;
      *.ko.xz) xz -dc "$f" > "$w/lib/mod/$m.ko" ;;
      *.ko.zst) zstd -q -dc "$f" > "$w/lib/mod/$m.ko" ;;
      *.ko.gz) gzip -dc "$f" > "$w/lib/mod/$m.ko" ;;
      *) echo "unknown module file $f" >&2; return 1 ;;
    esac || return 1
    order+=("$m")
  }
  for m in virtio_pci virtio_console 9pnet_virtio 9p virtiofs overlay virtio_rng virtio_blk; do
    add_mod "$m" || { rm -rf "$tmp"; return 1; }
  done
  printf '%s\n' "${order[@]}" > "$w/lib/mod/order"
  write_init > "$w/init" && chmod 755 "$w/init" && write_stage2 > "$w/stage2" || return 1
  write_systemd_setup > "$w/systemd-setup" && write_systemd_run > "$w/systemd-run" || return 1
  (cd "$w" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$tmp/initrd.cpio.gz" \
    || { rm -rf "$tmp"; return 1; }
  rm -rf "$w"
  # An uncompressed vmlinux with a PVH entry point boots about 3 s faster
  # under TCG than the bzImage (no real-mode setup, no decompression).
  if grep -q '^CONFIG_PVH=y' "/boot/config-$KVER" 2>/dev/null; then
    is_elf() { [[ $(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ') = 177ELF ]]; }
    if command -v xz >/dev/null; then
      for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | cut -d: -f1 | head -3); do
        tail -c +$((off + 1)) "$VMLINUZ" | xz -dc --single-stream > "$tmp/vmlinux" 2>/dev/null
        is_elf "$tmp/vmlinux" && break
        rm -f "$tmp/vmlinux"
      done
    fi
    if [[ ! -s $tmp/vmlinux ]] && command -v zstd >/dev/null; then
      for off in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$VMLINUZ" | cut -d: -f1 | head -3); do
        tail -c +$((off + 1)) "$VMLINUZ" | zstd -q -dc > "$tmp/vmlinux" 2>/dev/null
        is_elf "$tmp/vmlinux" && break
        rm -f "$tmp/vmlinux"
      done
    fi
  fi
  rm -rf "$CACHE" "$V2VM_DIR/cache/nscg-$KVER"-*
  mv "$tmp" "$CACHE"
}

T0=$(date +%s.%N)
# children die with this script even if it is SIGKILLed (util-linux setpriv)
REAP=()
setpriv --help 2>/dev/null | grep -q pdeathsig && REAP=(setpriv --pdeathsig KILL --)
HOST_NAME=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)
if [[ ! -s $INITRD || $INITRD -ot $VMLINUZ ]]; then
  exec 9> "$V2VM_DIR/cache/.lock" && flock 9 || die "cannot lock $V2VM_DIR/cache/.lock"
  if [[ ! -s $INITRD || $INITRD -ot $VMLINUZ ]]; then
    vlog "building the initramfs for $KVER in $CACHE"
    build_cache || die "cannot start VM: building the initramfs for kernel $KVER failed"
  fi
  exec 9>&-
fi
KERNEL_IMG=$VMLINUZ
[[ -s $VMLINUX ]] && KERNEL_IMG=$VMLINUX

# --------------------------------------------------------------- per-run files
RUN=$(mktemp -d "$V2VM_DIR/run.XXXXXX") || die "cannot create a run directory under $V2VM_DIR"
QPID= WATCH_PID= CONS_PID= OUT_PID= ERR_PID=
VFS_PIDS=()
stop_virtiofsd() {
  local p
  for p in "${VFS_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  VFS_PIDS=()
}
cleanup() {
  [[ -n $QPID ]] && kill "$QPID" 2>/dev/null
  [[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null
  [[ -n $CONS_PID ]] && kill "$CONS_PID" 2>/dev/null
  stop_virtiofsd
  [[ $KEEP = 1 ]] || rm -rf "$RUN"
}
trap cleanup EXIT
trap 'echo "$PROG: interrupted" >&2; exit 130' INT TERM HUP

{
  echo '# generated by run-in-v2vm.sh'
  if [[ $PASS_ENV = 1 ]]; then
    while IFS= read -r -d '' kv; do
      n=${kv%%=*} v=${kv#*=}
      [[ $n =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
      case $n in
        _|SHLVL|PWD|OLDPWD|HOSTNAME|SSH_*|DISPLAY|WAYLAND_DISPLAY|DBUS_SESSION_BUS_ADDRESS|XDG_RUNTIME_DIR|\
        INVOCATION_ID|JOURNAL_STREAM|NOTIFY_SOCKET|LISTEN_*|TMUX|TMUX_PANE|STY|WINDOWID|V2VM_*|NSCG_V2VM*) continue ;;
      esac
      printf 'export %s=%q\n' "$n" "$v"
    done < <(env -0)
  else
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb'
  fi
  echo "umask $(umask)"
  echo 'export NSCG_V2VM=1'
  printf 'cd -- %q 2>/dev/null || cd /\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$RUN/cmd.sh"
: > "$RUN/shares"
for i in "${!SHARE_PATHS[@]}"; do echo "v2vmshare$i ${SHARE_PATHS[$i]}" >> "$RUN/shares"; done
mkfifo "$RUN/out" "$RUN/err" || die "mkfifo failed in $RUN"

# ------------------------------------------------------------------- the VM
start_virtiofsd() {  # tag dir cache-mode [extra -o options]
  local sock=$RUN/$1.sock n
  rm -f "$sock"
  "${REAP[@]}" "$VIRTIOFSD" --socket-path="$sock" -o source="$2" -o cache="$3" -o sandbox=chroot \
    -o log_level=err "${@:4}" < /dev/null >> "$RUN/virtiofsd.log" 2>&1 &
  VFS_PIDS+=($!)
  for ((n = 0; n < 200; n++)); do
    [[ -S $sock ]] && return 0
    kill -0 "${VFS_PIDS[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "virtiofsd for $2 did not start: $(head -1 "$RUN/virtiofsd.log")" > "$RUN/killed"
  return 1
}

run_qemu() {  # $1 = kvm|tcg, $2 = virtiofs|9p; sets QRC and STATUS
  local accel=$1 fs=$2 cpu machine=q35 bt=$BOOT_TIMEOUT i fd devs=()
  QRC=1 STATUS=
  rm -f "$RUN/killed"; : > "$RUN/status"; : > "$RUN/console.log"
  if [[ $accel = kvm ]]; then
    cpu=${V2VM_CPU:-host}
    [[ $ACCEL = auto ]] && ((bt == 0 || bt > 60)) && bt=60
  else
    cpu=${V2VM_CPU:-max}
  fi
  local append="console=ttyS0 panic=-1 oops=panic quiet rdinit=/init v2vm.run=$RUN v2vm.subtree=$SUBTREE v2vm.fs=$fs"
  [[ $HOST_NAME =~ ^[A-Za-z0-9.-]+$ ]] && append+=" v2vm.hostname=$HOST_NAME"
  if [[ $fs = virtiofs ]]; then
    start_virtiofsd v2vmroot / always -o no_xattr || { stop_virtiofsd; return 1; }
    devs+=(-chardev "socket,id=v2vmroot,path=$RUN/v2vmroot.sock" -device "vhost-user-fs-pci,chardev=v2vmroot,tag=v2vmroot")
    for i in "${!SHARE_PATHS[@]}"; do
      start_virtiofsd "v2vmshare$i" "${SHARE_PATHS[$i]}" auto -o xattr || { stop_virtiofsd; return 1; }
      devs+=(-chardev "socket,id=v2vmshare$i,path=$RUN/v2vmshare$i.sock"
             -device "vhost-user-fs-pci,chardev=v2vmshare$i,tag=v2vmshare$i")
    done
    devs+=(-object "memory-backend-memfd,id=v2vmmem,size=${MEMORY}M,share=on")
    machine+=",memory-backend=v2vmmem"
    # virtiofsd writes guest RAM behind TCG's back; zeroing every new page
    # in the guest (the Debian default) keeps stale translated code away.
    append+=" init_on_alloc=1"
  else
    devs+=(-fsdev "local,id=v2vmroot,path=/,security_model=none,readonly=on,multidevs=remap"
           -device "virtio-9p-pci,fsdev=v2vmroot,mount_tag=v2vmroot")
    local model=passthrough; ((EUID == 0)) || model=none
    for i in "${!SHARE_PATHS[@]}"; do
      devs+=(-fsdev "local,id=v2vmshare$i,path=${SHARE_PATHS[$i]},security_model=$model,multidevs=remap"
             -device "virtio-9p-pci,fsdev=v2vmshare$i,mount_tag=v2vmshare$i")
    done
  fi
  devs+=(
    -device virtio-serial-pci,id=v2vmser
    -chardev "file,id=v2vmout,path=$RUN/out" -device "virtserialport,bus=v2vmser.0,chardev=v2vmout,name=v2vm.out"
    -chardev "file,id=v2vmerr,path=$RUN/err" -device "virtserialport,bus=v2vmser.0,chardev=v2vmerr,name=v2vm.err"
    -chardev "file,id=v2vmst,path=$RUN/status" -device "virtserialport,bus=v2vmser.0,chardev=v2vmst,name=v2vm.status"
    -device virtio-rng-pci
    -blockdev driver=null-co,node-name=v2vmnull,size=1073741824,read-zeroes=on
    -device virtio-blk-pci,drive=v2vmnull,serial=v2vm-null
  )
  [[ -n ${V2VM_CGROUP2_OPTS:-} ]] && append+=" v2vm.cgopts=$V2VM_CGROUP2_OPTS"
  [[ $SYSTEMD = 1 ]] && append+=" v2vm.systemd=1 systemd.unified_cgroup_hierarchy=1 systemd.unit=v2vm.target fstab=no systemd.show_status=false systemd.log_level=warning"
  [[ -n ${V2VM_APPEND:-} ]] && append+=" $V2VM_APPEND"
  local cmd=("$QEMU" -name v2vm -nodefaults -no-user-config -no-reboot -display none
    -monitor "unix:$RUN/monitor.sock,server=on,wait=off"
    -machine "$machine" -cpu "$cpu" -smp "$CPUS" -m "$MEMORY" -serial "file:$RUN/console.log"
    -kernel "$KERNEL_IMG" -initrd "$INITRD" -append "$append" "${devs[@]}")
  if [[ $accel = tcg ]]; then cmd+=(-accel tcg,thread=multi); else cmd+=(-accel kvm); fi
  [[ -n ${V2VM_QEMU_OPTS:-} ]] && cmd+=($V2VM_QEMU_OPTS)
  vlog "qemu ($accel, $fs): ${cmd[*]}"
  # Readers for the guest's stdout/stderr. If our stdout goes away (| head),
  # keep draining the FIFO so that the guest's writes never block.
  { cat || cat > /dev/null; } < "$RUN/out" & OUT_PID=$!
  { cat >&2 || cat > /dev/null; } < "$RUN/err" & ERR_PID=$!
  "${REAP[@]}" "${cmd[@]}" < /dev/null > "$RUN/qemu.log" 2>&1 &
  QPID=$!
  if [[ $CONSOLE = 1 ]]; then tail -n +1 -f --pid="$QPID" "$RUN/console.log" >&2 & CONS_PID=$!; fi
  (   # watchdog: boot timeout and overall timeout
    s=0
    while kill -0 "$QPID" 2>/dev/null; do
      sleep 1; s=$((s + 1))
      if ((bt > 0 && s >= bt)) && ! grep -q started "$RUN/status"; then
        echo boot-timeout > "$RUN/killed"; kill "$QPID"; exit 0
      fi
      if ((TIMEOUT > 0 && s >= TIMEOUT)); then echo timeout > "$RUN/killed"; kill "$QPID"; exit 0; fi
    done
  ) & WATCH_PID=$!
  wait "$QPID" 2>/dev/null; QRC=$?; QPID=
  kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=
  stop_virtiofsd
  # a reader still blocked in open() (qemu died before opening) needs a writer
  exec {fd}<> "$RUN/out"; exec {fd}>&-
  exec {fd}<> "$RUN/err"; exec {fd}>&-
  wait "$OUT_PID" "$ERR_PID" 2>/dev/null; OUT_PID= ERR_PID=
  [[ -n $CONS_PID ]] && { wait "$CONS_PID" 2>/dev/null; CONS_PID=; }
  STATUS=$(tr '\n' ' ' < "$RUN/status" 2>/dev/null)
  vlog "qemu ($accel, $fs) exited with $QRC, $(echo "$(date +%s.%N) - $T0" | bc 2>/dev/null)s after start; guest status: $STATUS"
  return 0
}

reason() {  # one line: why no exit status came back; $1 = accel, $2 = fs
  local k r
  k=$(cat "$RUN/killed" 2>/dev/null)
  r=$(grep -a -m1 -E 'v2vm-init: FATAL|Kernel panic|Out of memory: Killed process 1 ' "$RUN/console.log" 2>/dev/null \
      | tr -d '\r' | sed 's/^\[[^]]*\] *//')
  if [[ $STATUS == *fail* ]]; then echo "guest init failed ($1, $2): ${STATUS#*fail }"
  elif [[ -n $r ]]; then echo "guest failed ($1, $2): $r"
  elif [[ $k = boot-timeout ]]; then echo "guest did not start the command within ${bt_used}s ($1, $2)"
  elif [[ $k = timeout ]]; then echo "timed out after ${TIMEOUT}s ($1, $2)"
  elif [[ -n $k ]]; then echo "$k"
  elif ((QRC != 0)); then echo "qemu ($1, $2) exited with $QRC: $(grep -a -v '^\s*$' "$RUN/qemu.log" | head -1)"
  else echo "VM ($1, $2) stopped without reporting an exit status"; fi
}

attempt() {  # one round over accelerators and filesystems; sets msg, exits on a status
  local accel fs
  msg="no attempt made"
  for accel in $ACCELS; do
    for fs in $FSS; do
      bt_used=$BOOT_TIMEOUT
      [[ $accel = kvm && $ACCEL = auto ]] && ((bt_used == 0 || bt_used > 60)) && bt_used=60
      run_qemu "$accel" "$fs"
      if [[ $STATUS =~ rc=([0-9]+) ]]; then exit "${BASH_REMATCH[1]}"; fi
      msg=$(reason "$accel" "$fs")
      if [[ $STATUS == *started* ]]; then   # the command ran: never run it twice here
        STARTED=1
        return 1
      fi
      vlog "attempt failed: $msg"
      # a failure to mount or to start virtiofsd: try the next filesystem;
      # anything else (qemu error, boot timeout, panic): try the next accelerator
      [[ $STATUS == *fail*mount* || $msg == virtiofsd* || $msg == *"cannot mount"* ]] || break
    done
  done
  msg="cannot start VM: $msg"
  return 1
}

for ((try = 0; ; try++)); do
  STARTED=0
  attempt
  if ((try >= RETRY)); then break; fi
  echo "$PROG: $msg; retrying ($((try + 1))/$RETRY)" >&2
  [[ $FS = auto && $STARTED = 1 ]] && FSS=9p   # 9p never hung in the measurements
done
[[ $KEEP = 1 ]] && msg+="; logs in $RUN"
die "$msg"
