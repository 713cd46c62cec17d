/* Small syscall wrappers used by the parent: waiting with rusage, pidfds. */
#include "nscg.h"

#include <linux/capability.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* abi.h spells the kernel's numbers out (cffi's cdef takes no #include):
 * checked here against the system's headers. */
_Static_assert(NSCG_CLONE_NEWNS == CLONE_NEWNS && NSCG_CLONE_NEWCGROUP == CLONE_NEWCGROUP &&
                   NSCG_CLONE_NEWUTS == CLONE_NEWUTS && NSCG_CLONE_NEWIPC == CLONE_NEWIPC &&
                   NSCG_CLONE_NEWUSER == CLONE_NEWUSER && NSCG_CLONE_NEWPID == CLONE_NEWPID &&
                   NSCG_CLONE_NEWNET == CLONE_NEWNET,
               "abi.h: NSCG_CLONE_NEW* are the kernel's CLONE_NEW*");
#ifdef CLONE_NEWTIME
_Static_assert(NSCG_CLONE_NEWTIME == CLONE_NEWTIME, "abi.h: NSCG_CLONE_NEWTIME");
#endif
/* clone3's struct clone_args, version 2 (with cgroup): CLONE_ARGS_SIZE_VER2 */
_Static_assert(sizeof(struct nscg_clone_args) == 88, "struct nscg_clone_args: the kernel's");

uint32_t nscg_abi_version(void) { return NSCG_ABI_VERSION; }

const char *nscg_build_hash(void) { return NSCG_BUILD_HASH; }

/* Map the status memfd (one page) without keeping an fd open, unlike
 * Python's mmap, which holds a dup of it for the mapping's lifetime. */
struct nscg_shared *nscg_map_shared(int fd)
{
    void *p = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void nscg_unmap_shared(struct nscg_shared *page)
{
    if (page)
        munmap(page, (size_t)sysconf(_SC_PAGESIZE));
}

/* Status pages of reaped sandboxes, unmapped by the next spawn. An munmap
 * of a page we touched interrupts every CPU that runs one of our threads (a
 * TLB shootdown): tens of microseconds, long enough for another Python
 * thread to take the GIL that the reaping call released, and then the reaper
 * waits for the switch interval (5 ms) to get it back. nscg_spawn releases
 * the GIL anyway for as long as the clone takes: the unmaps are done there. */
#define NSCG_UNMAP_LATER 32
static pthread_mutex_t unmap_mu = PTHREAD_MUTEX_INITIALIZER;
static void *unmap_later[NSCG_UNMAP_LATER];
static int n_unmap_later;

static void unmap_later_page(struct nscg_shared *page)
{
    pthread_mutex_lock(&unmap_mu);
    if (n_unmap_later < NSCG_UNMAP_LATER) {
        unmap_later[n_unmap_later++] = page;
        page = NULL;
    }
    pthread_mutex_unlock(&unmap_mu);
    nscg_unmap_shared(page);
}

void nscg_unmap_pending(void)
{
    void *todo[NSCG_UNMAP_LATER];
    int n;
    pthread_mutex_lock(&unmap_mu);
    n = n_unmap_later;
    memcpy(todo, unmap_later, (size_t)n * sizeof todo[0]);
    n_unmap_later = 0;
    pthread_mutex_unlock(&unmap_mu);
    for (int i = 0; i < n; i++)
        nscg_unmap_shared(todo[i]);
}

void nscg_unmap_reset_after_fork(void)
{
    /* (the pages stay mapped in the child: a few pages, as the pooled stacks) */
    n_unmap_later = 0;
    pthread_mutex_init(&unmap_mu, NULL);
}

int nscg_cap_effective(uint64_t *out)
{
    /* capget: the calling thread's sets (no /proc/self/status to parse) */
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    *out = (uint64_t)data[0].effective | ((uint64_t)data[1].effective << 32);
    return 0;
}

/* ---- plain system calls for the parent's Python (abi.h) ---- */
static long sys_result(long r)
{
    return r < 0 ? -errno : r;
}

long nscg_sys_setns(int fd, int nstype)
{
    return sys_result(syscall(SYS_setns, fd, nstype));
}

long nscg_sys_unshare(int flags)
{
    return sys_result(syscall(SYS_unshare, flags));
}

long nscg_sys_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
                    unsigned long arg5)
{
    return sys_result(syscall(SYS_prctl, option, arg2, arg3, arg4, arg5));
}

long nscg_sys_seccomp(unsigned int operation, unsigned int flags, void *args)
{
    return sys_result(syscall(SYS_seccomp, operation, flags, args));
}

long nscg_sys_inotify_init1(int flags)
{
    return sys_result(syscall(SYS_inotify_init1, flags));
}

long nscg_sys_inotify_add_watch(int fd, const char *path, uint32_t mask)
{
    return sys_result(syscall(SYS_inotify_add_watch, fd, path, mask));
}

int nscg_wait(int pidfd, int options, struct nscg_wait_out *out)
{
    siginfo_t info;
    struct rusage ru;
    memset(&info, 0, sizeof info);
    memset(&ru, 0, sizeof ru);
    /* The raw syscall takes a fifth argument that glibc's waitid() hides. */
    long r = syscall(SYS_waitid, P_PIDFD, pidfd, &info, options, &ru);
    if (r < 0)
        return -errno;
    out->pid = info.si_pid;
    out->code = info.si_code;
    out->status = info.si_status;
    out->utime_usec = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
    out->stime_usec = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    out->maxrss_kb = ru.ru_maxrss;
    return 0;
}

/* nscg_wait, and once the process is reaped, the status page's report read
 * and the page released (unmapped by the next spawn: unmap_later_page): one
 * short call (one release of the GIL) for both. */
int nscg_reap(int pidfd, int options, struct nscg_wait_out *out, struct nscg_shared *page)
{
    int r = nscg_wait(pidfd, options, out);
    if (r == 0 && out->pid != 0 && page) {
        out->has_status = (int32_t)__atomic_load_n(&page->has_status, __ATOMIC_ACQUIRE);
        out->payload_status = page->payload_status;
        unmap_later_page(page);
    }
    return r;
}

int nscg_pidfd_open(int pid)
{
    long r = syscall(SYS_pidfd_open, pid, 0);
    return r < 0 ? -errno : (int)r;
}

int nscg_pidfd_send_signal(int pidfd, int sig)
{
    long r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return r < 0 ? -errno : 0;
}
