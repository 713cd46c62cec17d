/* nscg internal header: system includes, the shared ABI, and the helpers the
 * C sources share. Never included by cffi's cdef (that reads abi.h alone). */
#ifndef NSCG_H
#define NSCG_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "abi.h"

/* The child's system calls are raw (child.h, nscg_sys) and so is the start of
 * its tasks (trampoline.c): written for these architectures only. Elsewhere
 * the child would have to go through the C library's errno, which it shares
 * with the thread that cloned it: the build fails rather than ship that race. */
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "nscg supports x86_64 and aarch64 only: its child code makes raw system calls"
#endif

#ifndef NSCG_BUILD_HASH
#define NSCG_BUILD_HASH "unknown"
#endif

/* A cffi callback (extern "Python+C", declared in build.py): runs Python's
 * signal handlers from a wait of the spawn that a signal interrupted; nonzero
 * if one raised (the exception is kept for the caller, who raises it once the
 * spawn has been aborted). Called with the GIL released; cffi takes it. */
int nscg_signal_raised(void);

/* util.c: status pages released by nscg_reap are unmapped here (nscg_spawn) */
void nscg_unmap_pending(void);
void nscg_unmap_reset_after_fork(void);

/* Exit status of a child that failed during setup (after reporting). */
#define NSCG_CHILD_FAILED 127

/* child.c: the code between clone and execve. Never returns. */
__attribute__((noreturn)) void nscg_child_main(const struct nscg_plan *plan);

struct nscg_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* trampoline.c: clone3 with args->stack set; the child runs fn(arg) there.
 * Returns the child's pid, or -errno (-ENOSYS where there is no clone3). */
long nscg_clone3_run(struct nscg_clone_args *args, void (*fn)(void *), void *arg);

#endif
