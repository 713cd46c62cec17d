/* The child: everything between clone and execve.
 *
 * Rules (see docs/design.md): only system calls, on memory the parent prepared;
 * no malloc, no stdio, no locks, nothing that glibc caches per thread. A
 * failing step writes one struct nscg_child_error to the error pipe and
 * exits; the parent reads EOF on that pipe when execve succeeded. System
 * calls go through nscg_sys (child.h), never through errno.
 */
#include "child.h"

#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static size_t cstrlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void write_record(int fd, uint32_t stage, int err, int index, const char *sc)
{
    struct nscg_child_error rec;
    memset(&rec, 0, sizeof rec);
    rec.abi = NSCG_ABI_VERSION;
    rec.stage = stage;
    rec.err = err;
    rec.index = index;
    for (size_t i = 0; sc && sc[i] && i < sizeof rec.syscall - 1; i++)
        rec.syscall[i] = sc[i];
    if (fd >= 0) {
        long r;
        do {
            r = SYS3(SYS_write, fd, &rec, sizeof rec);
        } while (r == -EINTR);
    }
}

void nscg_fail(struct child_ctx *c, uint32_t stage, int err, int index, const char *sc)
{
    struct nscg_child_error *m = c->st->err_mem;
    if (c->err_fd < 0 && m) {
        /* vfork-style: the caller is suspended until we _exit, then reads it */
        m->abi = NSCG_ABI_VERSION;
        m->err = err ? err : EIO;
        m->index = index;
        size_t n = 0;
        while (sc && sc[n] && n < sizeof m->syscall - 1) {
            m->syscall[n] = sc[n];
            n++;
        }
        while (n < sizeof m->syscall)
            m->syscall[n++] = 0;
        m->stage = stage;
    } else {
        write_record(c->err_fd, stage, err ? err : EIO, index, sc);
    }
    nscg_exit(NSCG_CHILD_FAILED);
}

static int dup_above(int fd, int floor)
{
    return (int)SYS3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor);
}

static void sort_ints(int32_t *a, int n)
{
    for (int i = 1; i < n; i++) {
        int v = a[i], j = i - 1;
        while (j >= 0 && a[j] > v) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = v;
    }
}

static int close_gap(int lo, int hi_incl)
{
    if (lo > hi_incl)
        return 0;
    return (int)SYS3(SYS_close_range, (unsigned)lo, (unsigned)hi_incl, 0U);
}

/* Give the payload exactly the fds it was promised (fdmap src -> dst) and
 * keep the child's own channels above every destination, close-on-exec. */
static void setup_fds(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    struct nscg_spawn_state *st = c->st;
    int floor = p->fd_floor;
    /* the moved fdmap sources and joins, then the list of fds kept (abi.h) */
    int32_t *scratch = st->scratch, *keep = scratch + p->n_fdmap + p->n_join;
    int nkeep = 0;

    if (st->n_scratch < p->n_fdmap + 2 * p->n_join + st->n_mount_fds + NSCG_SCRATCH_CHANNELS)
        fail(c, NSCG_STAGE_FDS, EOVERFLOW, -1, "fcntl");

    if (c->err_fd >= 0) {
        c->err_fd = dup_above(c->err_fd, floor);
        if (c->err_fd < 0)
            nscg_exit(NSCG_CHILD_FAILED); /* cannot even report */
        keep[nkeep++] = c->err_fd;
    }
    FAULT_POINT(c, NSCG_STAGE_FDS, -1, "fcntl");
    if (c->sync_fd >= 0) {
        STEP(c, NSCG_STAGE_FDS, -1, "fcntl", c->sync_fd = dup_above(c->sync_fd, floor));
        keep[nkeep++] = c->sync_fd;
    }
    if (c->parent_pidfd >= 0) {
        STEP(c, NSCG_STAGE_FDS, -1, "fcntl", c->parent_pidfd = dup_above(c->parent_pidfd, floor));
        keep[nkeep++] = c->parent_pidfd;
    }
    if (c->status_fd >= 0) {
        STEP(c, NSCG_STAGE_FDS, -1, "fcntl", c->status_fd = dup_above(c->status_fd, floor));
        keep[nkeep++] = c->status_fd;
    }
    if (c->init_fd >= 0) {
        STEP(c, NSCG_STAGE_FDS, -1, "fcntl", c->init_fd = dup_above(c->init_fd, floor));
        keep[nkeep++] = c->init_fd;
    }
    if (c->scratch_sock >= 0) {
        STEP(c, NSCG_STAGE_FDS, -1, "fcntl", c->scratch_sock = dup_above(c->scratch_sock, floor));
        keep[nkeep++] = c->scratch_sock;
    }
    for (int i = 0; i < p->n_fdmap; i++)
        STEP(c, NSCG_STAGE_FDS, i, "fcntl", scratch[i] = dup_above(p->fdmap[i].src, floor));
    for (int i = 0; i < p->n_join; i++) {
        int32_t *slot = &scratch[p->n_fdmap + i];
        STEP(c, NSCG_STAGE_FDS, i, "fcntl", *slot = dup_above(p->joins[i].fd, floor));
        keep[nkeep++] = *slot;
    }
    for (int i = 0; i < st->n_mount_fds; i++) {
        if (st->mount_fds[i] < 0)
            continue;
        STEP(c, NSCG_STAGE_FDS, i, "fcntl", st->mount_fds[i] = dup_above(st->mount_fds[i], floor));
        keep[nkeep++] = st->mount_fds[i];
    }
    for (int i = 0; i < p->n_fdmap; i++)
        /* (dup3: scratch[i] is above the floor, never equal to dst) */
        STEP(c, NSCG_STAGE_FDS, i, "dup2", SYS3(SYS_dup3, scratch[i], p->fdmap[i].dst, 0));

    /* close every fd below the floor that is not a destination */
    int lo = 0;
    for (int d = 0; d < floor; d++) {
        int is_dst = 0;
        for (int i = 0; i < p->n_fdmap; i++)
            if (p->fdmap[i].dst == d) {
                is_dst = 1;
                break;
            }
        if (is_dst) {
            STEP(c, NSCG_STAGE_FDS, -1, "close_range", close_gap(lo, d - 1));
            lo = d + 1;
        }
    }
    STEP(c, NSCG_STAGE_FDS, -1, "close_range", close_gap(lo, floor - 1));
    /* above the floor keep only our own channels */
    sort_ints(keep, nkeep);
    lo = floor;
    for (int i = 0; i < nkeep; i++) {
        STEP(c, NSCG_STAGE_FDS, -1, "close_range", close_gap(lo, keep[i] - 1));
        lo = keep[i] + 1;
    }
    STEP(c, NSCG_STAGE_FDS, -1, "close_range", SYS3(SYS_close_range, (unsigned)lo, ~0U, 0U));
}

static void wait_parent(struct child_ctx *c)
{
    char b;
    long r;
    do {
        r = SYS3(SYS_read, c->sync_fd, &b, 1);
    } while (r == -EINTR);
    if (r != 1)
        nscg_exit(NSCG_CHILD_FAILED); /* the parent gave up: nothing to report */
    FAULT_POINT(c, NSCG_STAGE_WAIT_PARENT, -1, "read");
}

static void loopback_up(struct child_ctx *c)
{
    int s;
    struct ifreq ifr;
    STEP(c, NSCG_STAGE_LOOPBACK, -1, "socket",
         s = (int)SYS3(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    STEP(c, NSCG_STAGE_LOOPBACK, -1, "ioctl", SYS3(SYS_ioctl, s, SIOCGIFFLAGS, &ifr));
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    STEP(c, NSCG_STAGE_LOOPBACK, -1, "ioctl", SYS3(SYS_ioctl, s, SIOCSIFFLAGS, &ifr));
    SYS1(SYS_close, s);
}

static void write_file(struct child_ctx *c, uint32_t stage, const char *path, const char *text)
{
    int fd;
    size_t len = cstrlen(text);
    STEP(c, stage, -1, "open", fd = (int)SYS4(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC, 0));
    long w = SYS3(SYS_write, fd, text, len);
    if (w < 0 || (size_t)w != len)
        fail(c, stage, w < 0 ? (int)-w : EIO, -1, "write");
    SYS1(SYS_close, fd);
}

static void set_pdeathsig(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    if (p->pdeathsig <= 0)
        return;
    STEP(c, NSCG_STAGE_PDEATHSIG, -1, "prctl",
         SYS5(SYS_prctl, PR_SET_PDEATHSIG, p->pdeathsig, 0, 0, 0));
    /* the race: the parent may have died before prctl took effect */
    if (c->parent_pidfd >= 0) {
        struct pollfd pfd = {.fd = c->parent_pidfd, .events = POLLIN};
        struct timespec now = {0, 0};
        if (SYS5(SYS_ppoll, &pfd, 1, &now, NULL, 0) > 0)
            nscg_exit(NSCG_CHILD_FAILED);
    }
}

/* Become root of the new user namespace (its maps are written by now): the
 * caller's own ids may not be mapped there, and files the mount plan creates
 * must belong to a mapped id. The capabilities stay (the new euid is the
 * namespace's root); a credential change clears the parent-death signal. */
static void become_root(struct child_ctx *c)
{
    STEP(c, NSCG_STAGE_SETGID, -1, "setresgid", SYS3(SYS_setresgid, 0, 0, 0));
    STEP(c, NSCG_STAGE_SETUID, -1, "setresuid", SYS3(SYS_setresuid, 0, 0, 0));
    /* the uid change made this process non-dumpable: its /proc files would
     * belong to host root, and it could not write its own timens_offsets
     * (the payload's execve sets dumpability again) */
    STEP(c, NSCG_STAGE_SETUID, -1, "prctl", SYS5(SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0));
    set_pdeathsig(c);
}

/* The extra stacks: the parent mapped them below the first child's own.
 * Stack 0 is for the process forked into the pid namespace, stack 1 for the
 * payload started by the init. */
static void *aux_stack(const struct nscg_spawn_state *st, int i)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (char *)(uintptr_t)st->aux_stacks + page + (size_t)i * (st->aux_stack_size + page);
}

/* How start_on_stack shares memory with the new task. */
enum start_vm {
    START_VFORK,  /* our memory, the caller suspended until it execs or exits */
    START_SHARED, /* our memory, the caller going on (it must keep still) */
    START_COPY,   /* a copy of the memory (a fork), the caller going on */
};

/* Start fn on aux stack i, sharing memory or on a copy of it (see start_vm). */
static long start_on_stack(const struct nscg_spawn_state *st, int i, unsigned long extra,
                           void (*fn)(void *), void *arg, enum start_vm how)
{
    struct nscg_clone_args args;
    unsigned long vm = how == START_COPY     ? 0UL
                       : how == START_SHARED ? (unsigned long)CLONE_VM
                                             : (unsigned long)(CLONE_VM | CLONE_VFORK);
    memset(&args, 0, sizeof args);
    args.flags = vm | extra;
    /* with CLONE_PARENT the child inherits our exit signal; clone3 wants 0 */
    args.exit_signal = (extra & CLONE_PARENT) ? 0 : SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)aux_stack(st, i);
    args.stack_size = st->aux_stack_size;
    if ((extra & CLONE_PARENT) && st->shared) {
        /* the caller's abort path finds the new process (a child of the
         * caller) by this pid: the kernel stores it before the process runs,
         * in this same system call, so once we are gone it is final */
        args.flags |= CLONE_PARENT_SETTID;
        args.parent_tid = (uint64_t)(uintptr_t)&st->shared->init_pid;
    }
    long pid = nscg_clone3_run(&args, fn, arg);
    if (pid == -ENOSYS) {
        /* no clone3 (Linux < 5.3): glibc's clone, whose errno is the one
         * read here (see child.h: only on this fallback) */
        pid = clone((int (*)(void *))(void *)fn, (char *)args.stack + args.stack_size,
                    (int)(args.flags | SIGCHLD), arg,
                    (pid_t *)(uintptr_t)args.parent_tid);
        if (pid < 0)
            pid = -errno;
    }
    return pid;
}

static void payload_steps(struct child_ctx *c) __attribute__((noreturn));

/* The payload under an init. It runs on the caller's memory, like pid 1,
 * which goes on to exec nscg-init meanwhile. Until pid 1 has exec'd, its
 * /proc/1/{exe,mem,...} are the caller's interpreter and the caller's memory,
 * open to a payload that holds every capability pid 1 holds (same uid, a
 * dumpable mm: a Capabilities.all() payload chmod'ed the host's python through
 * /proc/1/exe, and could have written /proc/1/mem). So the payload waits for
 * EOF on pid 1's close-on-exec pipe, before anything of its own: EOF means
 * pid 1 exec'd (or died; then the payload is killed). pid 1's stack, where
 * ctx lies, is still the caller's memory and no longer written then. */
static void payload_entry(void *arg)
{
    const struct child_ctx *parent = arg;
    char byte;
    SYS1(SYS_close, parent->init_gate[1]);
    while (SYS3(SYS_read, parent->init_gate[0], &byte, 1) == -EINTR)
        ;
    SYS1(SYS_close, parent->init_gate[0]);
    struct child_ctx ctx = *parent, *c = &ctx;
    c->forked = 1;
    STEP(c, NSCG_STAGE_PDEATHSIG, -1, "prctl", SYS5(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    payload_steps(c);
}

static char *utoa(char *end, unsigned long v)
{
    *--end = 0;
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* Become nscg-init (pid 1): the payload is already running. */
static void exec_init(struct child_ctx *c, pid_t payload)
{
    char pidbuf[24], fdbuf[24];
    int sfd = -1;
    if (c->status_fd >= 0) /* the init keeps it: not close-on-exec */
        STEP(c, NSCG_STAGE_FORK, -1, "fcntl", sfd = (int)SYS3(SYS_fcntl, c->status_fd, F_DUPFD, 3));
    char *argv[] = {"nscg-init", utoa(pidbuf + sizeof pidbuf, (unsigned long)payload),
                    sfd >= 0 ? utoa(fdbuf + sizeof fdbuf, (unsigned long)sfd) : "-1", NULL};
    char *envp[] = {NULL};
    /* (a fault point of its own: the payload is killed before the report) */
    long r = fault_wanted(c, NSCG_STAGE_FORK, 1)
                 ? -(long)c->p->fault.err
                 : SYS5(SYS_execveat, c->init_fd, "", argv, envp, AT_EMPTY_PATH);
    SYS2(SYS_kill, payload, SIGKILL);
    fail(c, NSCG_STAGE_FORK, (int)-r, 1, "execveat");
}

/* Namespace-wide setup, done once, by the process that becomes pid 1 (or the
 * payload itself when there is no new pid namespace). */
static void setup_namespaces(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    if (p->hostname)
        STEP(c, NSCG_STAGE_HOSTNAME, -1, "sethostname",
             SYS2(SYS_sethostname, p->hostname, cstrlen(p->hostname)));
    if (p->domainname)
        STEP(c, NSCG_STAGE_DOMAINNAME, -1, "setdomainname",
             SYS2(SYS_setdomainname, p->domainname, cstrlen(p->domainname)));
    if (p->flags & NSCG_F_LOOPBACK)
        loopback_up(c);
    if (p->flags & NSCG_F_NEWTIME) {
        STEP(c, NSCG_STAGE_TIMENS, -1, "unshare", SYS1(SYS_unshare, CLONE_NEWTIME));
        if (p->timens_offsets)
            write_file(c, NSCG_STAGE_TIMENS, "/proc/self/timens_offsets", p->timens_offsets);
    }
    if (p->mount_flags & NSCG_MOUNTS_ACTIVE)
        nscg_setup_mounts(c);
}

/* After setup: start the payload, then become the init if there is one. A
 * new time namespace is entered by the payload's creation, or by execve. */
__attribute__((noreturn)) static void finish(struct child_ctx *c)
{
    setup_namespaces(c);
    if (c->p->flags & NSCG_F_INIT) {
        long payload;
        FAULT_POINT(c, NSCG_STAGE_FORK, 0, "clone3");
        STEP(c, NSCG_STAGE_FORK, 0, "pipe2", SYS2(SYS_pipe2, c->init_gate, O_CLOEXEC));
        payload = start_on_stack(c->st, 1, 0, payload_entry, c, START_SHARED);
        if (payload < 0)
            fail(c, NSCG_STAGE_FORK, (int)-payload, 0, "clone3");
        SYS1(SYS_close, c->init_gate[0]); /* the write end closes with the exec */
        exec_init(c, (pid_t)payload);
    }
    payload_steps(c);
}

/* The process forked into the pid namespace: a child of the caller. */
static void pidns_entry(void *arg)
{
    struct child_ctx ctx = *(struct child_ctx *)arg, *c = &ctx;
    /* In a joined pid namespace (Container.entering: "docker exec") this
     * process is visible to the payload already there, which runs as the same
     * uid, and its /proc/PID/exe is the caller's interpreter on the host:
     * a handle to chmod or, once idle, rewrite (runc CVE-2019-5736,
     * CVE-2016-9962). Not dumpable, /proc/PID/{exe,mem,fd,root,...} need
     * CAP_SYS_PTRACE over the host; execve makes the payload dumpable again.
     * Dumpability belongs to the memory: so this process runs on a copy of
     * it (see start_on_stack's caller), never on the caller's. */
    if (c->p->n_join > 0)
        STEP(c, NSCG_STAGE_FORK, -1, "prctl", SYS5(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0));
    set_pdeathsig(c);
    finish(c);
}

void nscg_child_main(const struct nscg_plan *p)
{
    struct child_ctx ctx, *c = &ctx;
    c->p = p;
    c->st = p->state;
    c->err_fd = c->st->err_fd;
    c->sync_fd = c->st->sync_fd;
    c->parent_pidfd = p->parent_pidfd;
    c->status_fd = c->st->status_fd;
    c->init_fd = p->init_fd;
    c->scratch_sock = p->scratch_sock;
    c->forked = 0;

    /* signals: every handler back to default; the mask stays full (the
     * spawner blocked everything) until right before execve */
    {
        /* the kernel's struct sigaction, all zero: SIG_DFL, no flags, no mask
         * (handler and flags lead on every architecture) */
        unsigned long sa[4] = {0, 0, 0, 0};
        for (int s = 1; s < NSIG; s++) {
            if (s == SIGKILL || s == SIGSTOP)
                continue;
            SYS4(SYS_rt_sigaction, s, sa, NULL, 8);
        }
        FAULT_POINT(c, NSCG_STAGE_SIGNALS, -1, "sigaction");
    }
    set_pdeathsig(c);
    setup_fds(c);

    if ((p->flags & NSCG_F_WAIT_PARENT) && !(p->flags & NSCG_F_UNSHARE_LATE))
        wait_parent(c);

    /* join existing namespaces (user first: the parent ordered them) */
    for (int i = 0; i < p->n_join; i++) {
        int fd = c->st->scratch[p->n_fdmap + i];
        if (p->joins[i].nstype == 0) {
            /* not a namespace: the target's root directory, entered after its
             * mount namespace (setns puts us at that namespace's root mount,
             * not at the root the sandbox pivoted into) */
            STEP(c, NSCG_STAGE_SETNS, i, "fchdir", SYS1(SYS_fchdir, fd));
            STEP(c, NSCG_STAGE_SETNS, i, "chroot", SYS1(SYS_chroot, "."));
            STEP(c, NSCG_STAGE_SETNS, i, "chdir", SYS1(SYS_chdir, "/"));
        } else {
            STEP(c, NSCG_STAGE_SETNS, i, "setns", SYS2(SYS_setns, fd, p->joins[i].nstype));
        }
    }
    for (int i = 0; i < p->n_join; i++)
        SYS1(SYS_close, c->st->scratch[p->n_fdmap + i]);
    if (p->flags & NSCG_F_UNSHARE_LATE) {
        uint64_t ns = p->ns_new & ~(uint64_t)(NSCG_CLONE_NEWTIME | NSCG_CLONE_NEWPID);
        if (ns)
            STEP(c, NSCG_STAGE_UNSHARE, -1, "unshare", SYS1(SYS_unshare, ns));
        if (p->flags & NSCG_F_WAIT_PARENT) {
            write_record(c->err_fd, NSCG_STAGE_READY, 0, -1, "");
            wait_parent(c);
        }
    }
    if (c->sync_fd >= 0) {
        SYS1(SYS_close, c->sync_fd);
        c->sync_fd = -1;
    }
    if (p->flags & NSCG_F_ROOT_EARLY) {
        nscg_open_bind_sources(c);
        become_root(c);
    }

    /* A pid namespace (new or joined) applies to children only: start the
     * process that lives on there, as a child of the caller (CLONE_PARENT),
     * then leave. This first child shares the caller's memory (CLONE_VM)
     * and runs on a stack of its own; so does the new one, until it execs. */
    if (p->flags & NSCG_F_FORK_PIDNS) {
        long g;
        if (p->ns_new & NSCG_CLONE_NEWPID)
            STEP(c, NSCG_STAGE_UNSHARE, -1, "unshare", SYS1(SYS_unshare, CLONE_NEWPID));
        FAULT_POINT(c, NSCG_STAGE_FORK, -1, "clone3");
        g = start_on_stack(c->st, 0, CLONE_PARENT, pidns_entry, c, p->n_join > 0 ? START_COPY : START_VFORK);
        if (g < 0)
            fail(c, NSCG_STAGE_FORK, (int)-g, -1, "clone3");
        __atomic_store_n(&c->st->shared->init_pid, (int32_t)g, __ATOMIC_RELEASE);
        nscg_exit(0);
    }
    finish(c);
}

/* Capabilities, in the order man 7 capabilities requires (see
 * nscg/capabilities.py): the bounding set first (needs CAP_SETPCAP, which
 * the uid change and capset take away), keep-caps across the uid change,
 * then capset, then the ambient set. */
static void drop_bounding(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    for (int cap = 0; cap <= p->cap_last && cap < 64; cap++) {
        if (p->cap_bounding & (1ULL << cap))
            continue;
        long r = SYS5(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (r < 0 && r != -EINVAL)
            fail(c, NSCG_STAGE_CAPS, (int)-r, cap, "prctl");
    }
    FAULT_POINT(c, NSCG_STAGE_CAPS, 0, "prctl");
}

static void set_caps(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(p->cap_effective >> (32 * i));
        data[i].permitted = (uint32_t)(p->cap_permitted >> (32 * i));
        data[i].inheritable = (uint32_t)(p->cap_inheritable >> (32 * i));
    }
    STEP(c, NSCG_STAGE_CAPS, 1, "capset", SYS2(SYS_capset, &hdr, data));
    long r = SYS5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (r < 0 && r != -EINVAL)
        fail(c, NSCG_STAGE_CAPS, (int)-r, 2, "prctl");
    for (int cap = 0; cap <= p->cap_last && cap < 64; cap++) {
        if (p->cap_ambient & (1ULL << cap))
            STEP(c, NSCG_STAGE_CAPS, 2, "prctl",
                 SYS5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0));
    }
}

/* The last step before execve: from here on the filter judges every call. */
static void load_seccomp(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    struct sock_fprog prog = {.len = (unsigned short)p->seccomp_len,
                              .filter = (struct sock_filter *)(uintptr_t)p->seccomp_filter};
    STEP(c, NSCG_STAGE_SECCOMP, -1, "seccomp",
         SYS3(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
}

/* The payload's own process attributes, then execve. */
static void payload_steps(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    if (p->flags & NSCG_F_SETSID)
        STEP(c, NSCG_STAGE_SETSID, -1, "setsid", SYS0(SYS_setsid));
    for (int i = 0; i < p->n_rlimits; i++) {
        uint64_t rl[2] = {p->rlimits[i].cur, p->rlimits[i].max}; /* struct rlimit64 */
        STEP(c, NSCG_STAGE_RLIMITS, i, "setrlimit",
             SYS4(SYS_prlimit64, 0, p->rlimits[i].resource, rl, NULL));
    }
    if (p->cwd)
        STEP(c, NSCG_STAGE_CHDIR, -1, "chdir", SYS1(SYS_chdir, p->cwd));
    if (p->flags & NSCG_F_CAPS_BOUNDING)
        drop_bounding(c);
    if ((p->flags & NSCG_F_CAPS) && (p->flags & NSCG_F_SETID) && p->uid != 0)
        STEP(c, NSCG_STAGE_CAPS, 3, "prctl", SYS5(SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0));
    if (p->flags & NSCG_F_SETGROUPS)
        STEP(c, NSCG_STAGE_SETGROUPS, -1, "setgroups",
             SYS2(SYS_setgroups, (size_t)p->n_groups, p->groups));
    if (p->flags & NSCG_F_SETID) {
        /* raw syscalls: glibc's setresuid broadcasts to all threads (setxid),
         * which is meaningless and unsafe here */
        STEP(c, NSCG_STAGE_SETGID, -1, "setresgid",
             SYS3(SYS_setresgid, p->gid, p->gid, p->gid));
        STEP(c, NSCG_STAGE_SETUID, -1, "setresuid",
             SYS3(SYS_setresuid, p->uid, p->uid, p->uid));
        /* a credential change clears the parent-death signal: set it again */
        if (c->forked)
            STEP(c, NSCG_STAGE_PDEATHSIG, -1, "prctl",
                 SYS5(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
        else
            set_pdeathsig(c);
    }
    if (c->parent_pidfd >= 0) {
        SYS1(SYS_close, c->parent_pidfd);
        c->parent_pidfd = -1;
    }
    if (p->flags & NSCG_F_CAPS) {
        if ((p->flags & NSCG_F_SETID) && p->uid != 0)
            STEP(c, NSCG_STAGE_CAPS, 3, "prctl", SYS5(SYS_prctl, PR_SET_KEEPCAPS, 0, 0, 0, 0));
        set_caps(c);
    }
    if (p->flags & NSCG_F_NO_NEW_PRIVS)
        STEP(c, NSCG_STAGE_NO_NEW_PRIVS, -1, "prctl", SYS5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));

    /* 6. execve, with the signal mask the payload should start with */
    {
        uint64_t empty = 0; /* the kernel's sigset: 64 bits */
        SYS4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, 8);
    }
    if (p->flags & NSCG_F_SECCOMP)
        load_seccomp(c);
    FAULT_POINT(c, NSCG_STAGE_EXEC, -1, "execve");
    long r = SYS3(SYS_execve, p->path, p->argv, p->envp);
    fail(c, NSCG_STAGE_EXEC, (int)-r, -1, "execve");
}
