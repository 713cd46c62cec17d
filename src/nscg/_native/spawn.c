/* The parent's side of a spawn: a small pool of long-lived spawner threads
 * that call clone3, and the clone3 -> clone fallback.
 *
 * Why threads of our own: PR_SET_PDEATHSIG fires when the *thread* that
 * created the child exits, not the process. A sandbox spawned from a
 * short-lived Python thread would be killed with that thread. The spawner
 * threads never exit, so "die with parent" means "die with this process".
 * They block every signal, so Python's signal handling is unaffected, and the
 * child inherits that full mask (it unblocks right before execve).
 */
#include "nscg.h"

#include <pthread.h>
#include <stdio.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static atomic_int clone3_state; /* 0 unknown, 1 works, -1 ENOSYS */

uint32_t nscg_clone_features(void)
{
    uint32_t f = NSCG_HAS_CLONE_PIDFD;
    if (atomic_load(&clone3_state) == 0) {
        /* probe without making a process: a size below the first version's
         * is EINVAL where clone3 exists, ENOSYS where it does not */
        long r = syscall(SYS_clone3, NULL, (size_t)0);
        int expected = 0;
        atomic_compare_exchange_strong(&clone3_state, &expected,
                                       r < 0 && errno == ENOSYS ? -1 : 1);
    }
    if (atomic_load(&clone3_state) >= 0)
        f |= NSCG_HAS_CLONE3 | NSCG_HAS_CLONE_INTO_CGROUP;
    return f;
}

static void set_out_err(struct nscg_spawn_out *out, int err, uint32_t stage, const char *sc)
{
    out->err = err;
    out->stage = stage;
    strncpy(out->syscall, sc, sizeof out->syscall - 1);
    out->syscall[sizeof out->syscall - 1] = 0;
}

/* The children's stacks: they share our memory (CLONE_VM) until they exec or
 * exit, so each gets a region of its own, with a guard page below:
 *   [guard][aux 0][guard][aux 1][guard][first child]
 * aux 0 is for the process started in a pid namespace, aux 1 for the payload
 * started by an init. Released by the caller once every child that used them
 * is past execve or gone (nscg_release_stack). */
#define NSCG_CHILD_STACK (128 * 1024)

static size_t stack_total(void)
{
    return 3 * (NSCG_CHILD_STACK + (size_t)sysconf(_SC_PAGESIZE));
}

/* Released regions are kept for the next spawns (up to a few): a fresh
 * region costs an mmap, three mprotects, page faults in the child and, when
 * released, an munmap whose TLB shootdown interrupts every CPU running one of
 * our threads. */
#define NSCG_STACK_POOL 8
static pthread_mutex_t stack_mu = PTHREAD_MUTEX_INITIALIZER;
static void *stack_pool[NSCG_STACK_POOL];
static int stack_pooled;

static void *stack_alloc(size_t *total)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t slot = NSCG_CHILD_STACK + page;
    void *pooled = NULL;
    *total = stack_total();
    pthread_mutex_lock(&stack_mu);
    if (stack_pooled > 0)
        pooled = stack_pool[--stack_pooled];
    pthread_mutex_unlock(&stack_mu);
    if (pooled)
        return pooled;
    char *p = mmap(NULL, *total, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    for (int i = 0; i < 3; i++) {
        if (mprotect(p + (size_t)i * slot, page, PROT_NONE) < 0) {
            munmap(p, *total);
            return NULL;
        }
    }
    return p;
}

void nscg_release_stack(uint64_t addr, uint64_t size)
{
    void *p = (void *)(uintptr_t)addr;
    if (!p)
        return;
    if (size == stack_total()) {
        pthread_mutex_lock(&stack_mu);
        if (stack_pooled < NSCG_STACK_POOL) {
            stack_pool[stack_pooled++] = p;
            p = NULL;
        }
        pthread_mutex_unlock(&stack_mu);
    }
    if (p)
        munmap(p, (size_t)size);
}

/* NSCG_F_PARENT_MAPS: write the waiting child's id maps, then let it go.
 * On failure the child keeps waiting; the caller kills and reaps it. */
static void write_proc(long pid, const char *file, const char *text, int *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    *err = w < 0 ? errno : (size_t)w != len ? EIO : 0;
    close(fd);
}

/* plan->slots: close slot i (if open) and forget it, as nscg_close does */
static void close_slot(const struct nscg_plan *plan, int i)
{
    if (plan->slots && plan->slots[i] >= 0) {
        close(plan->slots[i]);
        plan->slots[i] = -1;
    }
}

static void parent_maps(const struct nscg_plan *plan, long pid, struct nscg_spawn_out *out)
{
    int err = 0;
    write_proc(pid, "uid_map", plan->uid_map_text, &err);
    if (!err && plan->deny_setgroups) {
        out->maps_file = 1;
        write_proc(pid, "setgroups", "deny", &err);
    }
    if (!err) {
        out->maps_file = 2;
        write_proc(pid, "gid_map", plan->gid_map_text, &err);
    }
    if (!err) {
        char go = 1;
        out->maps_file = 3;
        if (write(plan->state->sync_w, &go, 1) != 1)
            err = errno ? errno : EIO;
        else
            close_slot(plan, NSCG_SLOT_SYNC_W); /* nothing more to say to the child */
    }
    out->maps_err = err;
}

/* ------------------------------------------------------ the lifetime rule
 *
 * From the clone on, nothing leaves the spawn until every task of the sandbox
 * that shares our memory (CLONE_VM: the first child, and the process it
 * starts in a pid namespace, with the payload it starts in turn) has exec'd
 * or exited, and every process of a failed or abandoned spawn is killed and
 * reaped. The plan and the children's stacks are released only after that.
 *
 * The waits here give up on nothing: on EINTR they let Python run its signal
 * handlers (nscg_signal_raised, a cffi callback: Ctrl-C must work during a
 * slow mount plan) and, if a handler raised, abort the spawn themselves
 * (spawn_abort: SIGKILL through the pidfds, wait, reap) before returning. So
 * this call never returns to Python with a child running on the caller's
 * plan or stack. nscg_spawn_abort is the same abort for the caller's own
 * failure paths (one guard object in _spawn.py calls it). */

/* fds kept by the caller (pidfds) never take 0-2: the caller may have closed
 * its stdio, and a later spawn would pass them into a sandbox as "stdin" */
static int above_stdio(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved < 0 ? -errno : moved;
}

/* The peak RSS of our memory (VmHWM, KiB) from /proc/self/status, or -1. */
static long self_vmhwm_kb(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *at = strstr(buf, "\nVmHWM:");
    if (!at)
        return -1;
    long kb = 0;
    for (at += 7; *at == ' ' || *at == '\t'; at++)
        ;
    for (; *at >= '0' && *at <= '9'; at++)
        kb = kb * 10 + (*at - '0');
    return kb > 0 ? kb : -1;
}

/* Once our own ru_maxrss has been seen equal to VmHWM, it stays equal (see
 * note_caller_peak): the cheap call is enough from then on. */
static atomic_int rusage_is_hwm;

/* The payload has exec'd: the peak RSS of our memory now is at least the
 * floor its ru_maxrss got at that execve (abi.h, caller_maxrss_kb; the peak
 * only grows). That is VmHWM, the peak of our memory, not simply our own
 * ru_maxrss, which is max(VmHWM, a floor of its own: the peak of whoever
 * started us, e.g. a test runner holding 200 MB) and would hide every payload
 * smaller than that. VmHWM has no system call of its own: /proc/self/status
 * (10-40 us). But once ru_maxrss equals VmHWM, our memory's peak has passed
 * that inherited floor, and ru_maxrss (which only ever takes our memory's
 * peak from then on) is VmHWM: most programs get there at their first spawn.
 * Without /proc, ru_maxrss: never below VmHWM (a floor too high hides a
 * figure, it never makes one up). */
static void note_caller_peak(struct nscg_spawn_out *out)
{
    struct rusage ru;
    long self = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
    if (self > 0 && atomic_load(&rusage_is_hwm)) {
        out->caller_maxrss_kb = self;
        return;
    }
    long hwm = self_vmhwm_kb();
    if (hwm > 0 && self > 0 && hwm >= self)
        atomic_store(&rusage_is_hwm, 1);
    out->caller_maxrss_kb = hwm > 0 ? hwm : self;
}

static void release_stack_of(struct nscg_spawn_out *out)
{
    uint64_t addr = out->stack_addr;
    out->stack_addr = 0;
    nscg_release_stack(addr, out->stack_size);
}

/* SIGKILL, then wait until it has exited (EINTR ignored), reap, close. */
static void kill_reap(int32_t *pidfd)
{
    int fd = *pidfd;
    siginfo_t info;
    if (fd < 0)
        return;
    syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
    while (syscall(SYS_waitid, P_PIDFD, fd, &info, WEXITED, NULL) < 0 && errno == EINTR)
        ;
    close(fd);
    *pidfd = -1;
}

static void spawn_abort(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    /* the first child: once it is gone, init_pid is final (clone3 stores the
     * pid of the process it starts through parent_tid before that process
     * runs, and in the same system call) */
    kill_reap(&out->pidfd);
    if ((plan->flags & NSCG_F_FORK_PIDNS) && out->pidfd2 < 0 && out->shared) {
        int32_t g = __atomic_load_n(&out->shared->init_pid, __ATOMIC_ACQUIRE);
        if (g > 0) {
            /* a child of ours not reaped yet: its pid is not reused */
            long fd = syscall(SYS_pidfd_open, g, 0);
            if (fd >= 0) {
                out->pidfd2 = (int32_t)fd;
            } else {
                siginfo_t info;
                kill(g, SIGKILL);
                while (waitid(P_PID, (id_t)g, &info, WEXITED) < 0 && errno == EINTR)
                    ;
            }
        }
    }
    /* pid 1 of a new pid namespace: its death kills every process in it */
    kill_reap(&out->pidfd2);
    release_stack_of(out);
    if (out->shared) {
        nscg_unmap_shared(out->shared);
        out->shared = NULL;
    }
}

void nscg_spawn_abort(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    spawn_abort(plan, out);
}

/* A wait was interrupted by a signal: 0 to go on waiting, or 1 once the spawn
 * was aborted because a Python handler raised (out->interrupted). */
static int on_eintr(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    if (!nscg_signal_raised())
        return 0;
    spawn_abort(plan, out);
    out->interrupted = 1;
    return 1;
}

/* The wait for the payload's exec (NSCG_F_WAIT_EXEC, or nscg_spawn_wait
 * after the caller's own steps). The first child (and everything it started)
 * is past execve when err_r reads EOF; a failure is one record there. */
static void wait_exec(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    if (plan->flags & NSCG_F_FORK_PIDNS) {
        siginfo_t info;
        long r;
        /* the first child returns once the payload and the init have exec'd
         * (or failed), after the whole mount plan */
        for (;;) {
            memset(&info, 0, sizeof info);
            r = syscall(SYS_waitid, P_PIDFD, out->pidfd, &info, WEXITED, NULL);
            if (r == 0 || errno != EINTR)
                break;
            if (on_eintr(plan, out))
                return;
        }
        if (r < 0)
            out->first_status = -255;
        else
            out->first_status = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
        close(out->pidfd);
        out->pidfd = -1;
        /* The stack is not released here: pid 1 has exec'd (or exited), but
         * the payload it started may still run on our memory, waiting for
         * that exec before its own (child.c, payload_entry). EOF below (the
         * payload holds the pipe until its execve) or the abort releases it. */
        if (out->first_status == 0) {
            int g = __atomic_load_n(&plan->state->shared->init_pid, __ATOMIC_ACQUIRE);
            long fd = syscall(SYS_pidfd_open, g, 0);
            out->pid2 = g;
            out->pidfd2 = fd < 0 ? -errno : above_stdio((int)fd);
        }
    }
    char *buf = (char *)&out->child_err;
    size_t got = 0;
    while (got < sizeof out->child_err) {
        ssize_t n = read(plan->state->err_r, buf + got, sizeof out->child_err - got);
        if (n < 0 && errno == EINTR) {
            if (on_eintr(plan, out))
                return;
            continue;
        }
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    out->rec_len = (uint32_t)got;
    out->exec_waited = 1;
    /* EOF: every copy of the pipe's write end is gone, the first child has
     * exec'd (or exited); after a record it is still on its way out */
    if (got == 0) {
        note_caller_peak(out);
        release_stack_of(out);
        close_slot(plan, NSCG_SLOT_ERR_R);
    }
}

/* The caller's fds for a spawn are made here, into memory the caller keeps
 * (its guard's slots): a signal handler raising right after the call cannot
 * lose them (see _spawn._Fds). */
int nscg_pipe(int32_t *fds)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    fds[0] = p[0];
    fds[1] = p[1];
    return 0;
}

int nscg_open(const char *path, int flags, int32_t *slot)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    *slot = fd;
    return 0;
}

void nscg_close(int32_t *slot)
{
    int fd = *slot;
    *slot = -1;
    if (fd >= 0)
        close(fd);
}

int nscg_spawn_wait(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    if (out->pid <= 0 || out->exec_waited || out->interrupted)
        return -1;
    wait_exec(plan, out);
    return out->interrupted ? -1 : 0;
}

static void cloned(const struct nscg_plan *plan, struct nscg_spawn_out *out, long pid, int pidfd,
                   unsigned long vforked)
{
    out->pid = (int32_t)pid;
    out->pidfd = above_stdio(pidfd);
    if (vforked) {
        /* the clone returned once the child had exec'd or exited */
        note_caller_peak(out);
        release_stack_of(out);
        return;
    }
    if (plan->flags & NSCG_F_PARENT_MAPS)
        parent_maps(plan, pid, out);
}

static void child_entry(void *plan) { nscg_child_main(plan); }

static int child_entry_int(void *plan)
{
    nscg_child_main(plan);
    return NSCG_CHILD_FAILED;
}

/* Runs in a spawner thread (or the caller's thread). Fills out.
 *
 * The child is created with CLONE_VM: no copy of the (large) Python address
 * space, as vfork does for subprocess. It runs on its own stack, reads only
 * the plan, and either execs, or exits after forking the process that will
 * live on (pid 1 of a new pid namespace, with a private copy of memory). */
static void do_clone(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    uint64_t ns = (plan->flags & NSCG_F_UNSHARE_LATE) ? 0 : plan->ns_new;
    /* a new pid namespace is unshared by the child and entered by a fork;
     * a new time namespace is unshared by the child (offsets come first) */
    ns &= ~(uint64_t)(NSCG_CLONE_NEWTIME | NSCG_CLONE_NEWPID);
    int pidfd = -1;
    long pid = -1;
    size_t size = 0;

    out->pid = -1;
    out->pidfd = -1;
    out->err = 0;
    unsigned long vforked = 0;
    if (plan->flags & NSCG_F_VFORK) {
        /* only for a child that execs the payload itself and waits for nobody */
        if (plan->flags & (NSCG_F_WAIT_PARENT | NSCG_F_FORK_PIDNS) || plan->state->err_fd >= 0) {
            set_out_err(out, EINVAL, NSCG_STAGE_CLONE, "clone3");
            return;
        }
        vforked = CLONE_VFORK;
    }
    if (plan->fault.stage == NSCG_STAGE_CLONE) { /* a fault point (tests only: child.h) */
        set_out_err(out, plan->fault.err, NSCG_STAGE_CLONE, "clone3");
        return;
    }
    void *region = stack_alloc(&size);
    if (!region) {
        set_out_err(out, errno, NSCG_STAGE_CLONE, "mmap");
        return;
    }
    out->stack_addr = (uint64_t)(uintptr_t)region;
    out->stack_size = size;
    {
        /* (the spawn's own state: the plan itself is never written) */
        struct nscg_spawn_state *st = plan->state;
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        st->aux_stacks = (uint64_t)(uintptr_t)region;
        st->aux_stack_size = NSCG_CHILD_STACK;
        st->err_mem = vforked ? &out->child_err : NULL;
        /* the first child's stack: the last slot */
        region = (char *)region + 2 * (NSCG_CHILD_STACK + page) + page;
        size = NSCG_CHILD_STACK;
    }
    void *stack = region;

    if (!(plan->flags & NSCG_F_FORCE_CLONE_FALLBACK) && atomic_load(&clone3_state) >= 0) {
        struct nscg_clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = ns | CLONE_PIDFD | CLONE_VM | vforked;
        args.pidfd = (uint64_t)(uintptr_t)&pidfd;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)stack;
        args.stack_size = size;
        if (plan->cgroup_fd >= 0) {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = (uint64_t)plan->cgroup_fd;
        }
        pid = nscg_clone3_run(&args, child_entry, (void *)plan);
        if (pid > 0) {
            atomic_store(&clone3_state, 1);
            cloned(plan, out, pid, pidfd, vforked);
            return;
        }
        if (pid != -ENOSYS) {
            set_out_err(out, (int)-pid, NSCG_STAGE_CLONE, "clone3");
            return;
        }
        atomic_store(&clone3_state, -1);
    }
    if (plan->cgroup_fd >= 0 && !(plan->flags & NSCG_F_WAIT_PARENT)) {
        /* without clone3 the caller places the child through cgroup.procs,
         * which needs the child to wait for it */
        set_out_err(out, EINVAL, NSCG_STAGE_CLONE, "clone");
        return;
    }
    /* glibc's clone(): the legacy call, stores the pidfd through parent_tid */
    pid = clone(child_entry_int, (char *)stack + size,
                (int)(ns | CLONE_PIDFD | CLONE_VM | vforked | SIGCHLD),
                (void *)plan, &pidfd, NULL, NULL);
    if (pid < 0) {
        set_out_err(out, errno, NSCG_STAGE_CLONE, "clone");
        return;
    }
    cloned(plan, out, pid, pidfd, vforked);
}

/* ------------------------------------------------------------ spawner pool */

#define NSCG_MAX_SPAWNERS 16

struct spawner {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const struct nscg_plan *plan;
    struct nscg_spawn_out *out;
    int state; /* 0 idle, 1 request posted, 2 done */
    int busy;
};

static struct spawner spawners[NSCG_MAX_SPAWNERS];
static int n_spawners;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void *spawner_main(void *arg)
{
    struct spawner *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->state != 1)
            pthread_cond_wait(&s->cv, &s->mu);
        do_clone(s->plan, s->out);
        s->state = 2;
        pthread_cond_broadcast(&s->cv);
    }
    return NULL;
}

/* After os.fork() in the Python process the spawner threads are gone; the
 * pooled stacks are left mapped (a lock may have been held at the fork). */
static void reset_after_fork(void)
{
    stack_pooled = 0;
    pthread_mutex_init(&stack_mu, NULL);
    n_spawners = 0;
    memset(spawners, 0, sizeof spawners);
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_cv, NULL);
    nscg_unmap_reset_after_fork();
    atomic_store(&rusage_is_hwm, 0); /* (a new process: its own ru_maxrss) */
}

static void install_atfork(void) { pthread_atfork(NULL, NULL, reset_after_fork); }

static struct spawner *acquire_spawner(int *err)
{
    struct spawner *s = NULL;
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        for (int i = 0; i < n_spawners; i++) {
            if (!spawners[i].busy) {
                s = &spawners[i];
                break;
            }
        }
        if (s)
            break;
        if (n_spawners < NSCG_MAX_SPAWNERS) {
            struct spawner *n = &spawners[n_spawners];
            pthread_attr_t attr;
            sigset_t all, old;
            memset(n, 0, sizeof *n);
            pthread_mutex_init(&n->mu, NULL);
            pthread_cond_init(&n->cv, NULL);
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_attr_setstacksize(&attr, 256 * 1024);
            /* the new thread inherits this mask: every signal blocked */
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            int r = pthread_create(&n->thread, &attr, spawner_main, n);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            pthread_attr_destroy(&attr);
            if (r != 0) {
                if (n_spawners == 0) {
                    pthread_mutex_unlock(&pool_mu);
                    *err = r;
                    return NULL;
                }
            } else {
                s = n;
                n_spawners++;
                break;
            }
        }
        pthread_cond_wait(&pool_cv, &pool_mu);
    }
    s->busy = 1;
    pthread_mutex_unlock(&pool_mu);
    return s;
}

static void release_spawner(struct spawner *s)
{
    pthread_mutex_lock(&pool_mu);
    s->busy = 0;
    pthread_cond_signal(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
}

static void drop_status_fd(const struct nscg_plan *plan, struct nscg_spawn_out *out);

static void finish(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    drop_status_fd(plan, out);
    if (out->err)
        release_stack_of(out); /* no child */
    /* the child's ends: it has its own copies (or there is no child); our
     * copy of the error pipe's write end first of all: EOF needs every copy gone */
    close_slot(plan, NSCG_SLOT_SYNC_R);
    if (plan->make & NSCG_MAKE_ERR_PIPE) {
        close_slot(plan, NSCG_SLOT_ERR_W);
        out->err_closed = 1;
    }
    if ((plan->flags & NSCG_F_WAIT_EXEC) && !out->err && !out->maps_err && out->pid > 0)
        wait_exec(plan, out);
}

/* plan->make: the pipes, into the caller's slots (an abort closes them) */
static int make_pipes(const struct nscg_plan *plan)
{
    struct nscg_spawn_state *st = plan->state;
    int r;
    if (plan->make && !plan->slots)
        return EINVAL;
    if (plan->make & NSCG_MAKE_ERR_PIPE) {
        if ((r = nscg_pipe(plan->slots + NSCG_SLOT_ERR_R)) < 0)
            return -r;
        st->err_r = plan->slots[NSCG_SLOT_ERR_R];
        st->err_fd = plan->slots[NSCG_SLOT_ERR_W];
    }
    if (plan->make & NSCG_MAKE_SYNC_PIPE) {
        if ((r = nscg_pipe(plan->slots + NSCG_SLOT_SYNC_R)) < 0)
            return -r;
        st->sync_fd = plan->slots[NSCG_SLOT_SYNC_R];
        st->sync_w = plan->slots[NSCG_SLOT_SYNC_W];
    }
    return 0;
}

/* NSCG_F_MAKE_STATUS: the page the first child writes the new pid to and
 * nscg-init the payload's wait status (through its own fd, after execve). */
static int make_status(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    struct nscg_spawn_state *st = plan->state;
    int fd = (int)syscall(SYS_memfd_create, "nscg-status", MFD_CLOEXEC);
    if (fd < 0)
        return errno;
    if (ftruncate(fd, sysconf(_SC_PAGESIZE)) < 0) {
        int e = errno;
        close(fd);
        return e;
    }
    struct nscg_shared *page = nscg_map_shared(fd);
    if (!page) {
        int e = errno;
        close(fd);
        return e;
    }
    page->abi = NSCG_ABI_VERSION;
    st->shared = page;
    st->status_fd = fd;
    out->shared = page;
    return 0;
}

/* After the clone (or its failure): the caller's copy of the memfd goes. The
 * state's status_fd is left as it is: the child, sharing our memory, may not
 * have read it yet (the fd number stays valid in its own copy of the fd table). */
static void drop_status_fd(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    if (!(plan->flags & NSCG_F_MAKE_STATUS) || plan->state->status_fd < 0)
        return;
    close(plan->state->status_fd);
    if (out->err && out->shared) {
        nscg_unmap_shared(out->shared);
        out->shared = NULL;
    }
}

/* ------------------------------------------------------------- the modes
 *
 * Three ways a spawn runs after its clone (nscg/_spawn.py, Mode):
 *   vfork-style  NSCG_F_VFORK: the payload is the first child; nothing waits
 *                for the parent, no pid namespace, no error pipe;
 *   in C         NSCG_F_WAIT_EXEC: this call does everything up to the
 *                payload's exec (the maps with NSCG_F_PARENT_MAPS);
 *   Python steps neither: the caller acts while the first child waits for
 *                the go-ahead (NSCG_F_WAIT_PARENT), then nscg_spawn_wait.
 * Combinations no path serves are refused here. */
int nscg_check_flags(uint32_t flags)
{
    uint32_t vfork_never = NSCG_F_WAIT_PARENT | NSCG_F_FORK_PIDNS | NSCG_F_WAIT_EXEC |
                           NSCG_F_PARENT_MAPS | NSCG_F_MAKE_STATUS | NSCG_F_INIT;
    if ((flags & NSCG_F_VFORK) && (flags & vfork_never))
        return EINVAL;
    if ((flags & NSCG_F_PARENT_MAPS) && !(flags & NSCG_F_WAIT_EXEC && flags & NSCG_F_WAIT_PARENT))
        return EINVAL; /* the maps written in C belong to the in-C mode */
    if ((flags & NSCG_F_WAIT_EXEC) && (flags & NSCG_F_WAIT_PARENT) && !(flags & NSCG_F_PARENT_MAPS))
        return EINVAL; /* a go-ahead nobody would write */
    if ((flags & NSCG_F_WAIT_EXEC) && (flags & NSCG_F_UNSHARE_LATE))
        return EINVAL; /* the late unshare's "ready" is read by Python */
    if (!(flags & NSCG_F_FORK_PIDNS) != !(flags & NSCG_F_MAKE_STATUS))
        return EINVAL; /* the status page is where pid 1's pid is found */
    if ((flags & NSCG_F_INIT) && !(flags & NSCG_F_FORK_PIDNS))
        return EINVAL;
    return 0;
}

/* ---------------------------------------------- the prepared plan's checks
 *
 * A prepared plan (nscg/_spawn.py, _Prepared) holds for one caller: its
 * effective capabilities, and (for a root that hides the host's sockets) the
 * path sockets /proc/net/unix listed when the masks were computed. Both are
 * checked here, in the call that clones, so that the checks cost no release
 * of the GIL of their own: with another Python thread busy, each release
 * costs up to the switch interval (5 ms). */
static int caps_changed(const struct nscg_plan *plan)
{
    uint64_t eff = 0;
    return nscg_cap_effective(&eff) != 0 || eff != plan->key_cap_eff;
}

/* Whether the path sockets listed now differ from plan->unix_paths: the same
 * extraction as nscg.rootfs.host_socket_listing (every line after the header;
 * from its first " /" on, the path; each followed by '\n'). */
static int sockets_changed(const struct nscg_plan *plan)
{
    int fd = open("/proc/net/unix", O_RDONLY | O_CLOEXEC);
    const char *want = plan->unix_paths ? plan->unix_paths : "";
    if (fd < 0)
        return errno == ENOENT ? want[0] != 0 : 1;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int changed = 1;
    while (buf) {
        if (len == cap) {
            char *more = realloc(buf, cap * 2);
            if (!more)
                break;
            buf = more;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        if (n == 0) {
            changed = 0;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (!buf || changed) {
        free(buf);
        return 1;
    }
    size_t at = 0;
    char *line = memchr(buf, '\n', len);
    char *end = buf + len;
    line = line ? line + 1 : end;
    while (line < end && !changed) {
        char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        for (char *q = line; q + 1 < eol; q++) {
            if (q[0] == ' ' && q[1] == '/') {
                /* (stops at the first difference: never past want's NUL) */
                size_t plen = (size_t)(eol - q - 1), k = 0;
                while (k < plen && want[at + k] == q[1 + k])
                    k++;
                if (k < plen || want[at + k] != '\n')
                    changed = 1;
                at += plen + 1;
                break;
            }
        }
        line = eol + 1;
    }
    free(buf);
    return changed || want[at] != 0;
}

static uint32_t plan_stale(const struct nscg_plan *plan)
{
    uint32_t stale = 0;
    if ((plan->checks & NSCG_CHECK_CAPS) && caps_changed(plan))
        stale |= NSCG_CHECK_CAPS;
    if ((plan->checks & NSCG_CHECK_SOCKETS) && sockets_changed(plan))
        stale |= NSCG_CHECK_SOCKETS;
    return stale;
}

int nscg_spawn(const struct nscg_plan *plan, struct nscg_spawn_out *out)
{
    memset(out, 0, sizeof *out);
    out->stack_addr = 0;
    out->pid = -1;
    out->pidfd = -1;
    out->pidfd2 = -1;
    if (plan->abi != NSCG_ABI_VERSION || !plan->state) {
        set_out_err(out, EINVAL, NSCG_STAGE_CLONE, "abi");
        return -1;
    }
    if (nscg_check_flags(plan->flags)) {
        set_out_err(out, EINVAL, NSCG_STAGE_CLONE, "flags");
        return -1;
    }
    pthread_once(&atfork_once, install_atfork);
    nscg_unmap_pending();
    out->stale = plan_stale(plan);
    if (out->stale) {
        set_out_err(out, ESTALE, NSCG_STAGE_CLONE, "recheck");
        return -1;
    }
    int perr = make_pipes(plan);
    if (perr) {
        set_out_err(out, perr, NSCG_STAGE_CLONE, "pipe2");
        return -1;
    }
    if (plan->flags & NSCG_F_MAKE_STATUS) {
        int e = make_status(plan, out);
        if (e) {
            set_out_err(out, e, NSCG_STAGE_CLONE, "memfd_create");
            return -1;
        }
    }
    if (plan->flags & NSCG_F_NO_SPAWNER_THREAD) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        do_clone(plan, out);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        finish(plan, out);
        return out->err ? -1 : 0;
    }
    int err = 0;
    struct spawner *s;
    s = acquire_spawner(&err);
    if (!s) {
        set_out_err(out, err, NSCG_STAGE_CLONE, "pthread_create");
        drop_status_fd(plan, out);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    s->plan = plan;
    s->out = out;
    s->state = 1;
    pthread_cond_broadcast(&s->cv);
    while (s->state != 2)
        pthread_cond_wait(&s->cv, &s->mu);
    s->state = 0;
    pthread_mutex_unlock(&s->mu);
    release_spawner(s);
    finish(plan, out); /* in the caller's thread: the spawner is free again */
    return out->err ? -1 : 0;
}
