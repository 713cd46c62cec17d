/* nscg internal: what the child's sources (child.c, mount.c) share.
 *
 * Everything here runs between clone and execve: system calls only, on memory
 * the parent prepared (see child.c). */
#ifndef NSCG_CHILD_H
#define NSCG_CHILD_H

#include "nscg.h"

/* File descriptors the child still needs once the fd table is rearranged. */
struct child_ctx {
    const struct nscg_plan *p;
    int err_fd;
    int sync_fd;
    int parent_pidfd;
    int status_fd;
    int init_fd;
    int scratch_sock; /* mount.c sends the scratch tmpfs here (-1: nowhere) */
    int forked; /* the payload's parent is the sandbox's init */
    int init_gate[2]; /* pid 1's close-on-exec pipe: EOF once it has left our memory */
    sigset_t oldmask;
};

/* Report {stage, err, index, syscall} on the error pipe (or in memory) and exit (child.c). */
__attribute__((noreturn)) void nscg_fail(struct child_ctx *c, uint32_t stage, int err, int index,
                                         const char *sc);

__attribute__((noreturn)) static inline void fail(struct child_ctx *c, uint32_t stage, int err,
                                                  int index, const char *sc)
{
    nscg_fail(c, stage, err, index, sc);
}

/* A test-only fault hook: the parent can ask stage S (op I) to fail with E. */
static inline int injected(struct child_ctx *c, uint32_t stage, int index)
{
    const struct nscg_plan *p = c->p;
    return p->fail_stage == (int32_t)stage && (p->fail_index < 0 || p->fail_index == index);
}

/* ---- system calls that never touch errno ----
 *
 * The child shares the caller's memory and its thread-local storage (CLONE_VM
 * without CLONE_SETTLS): glibc's wrappers store a failure in errno, a variable
 * of the thread that cloned, which that thread (running Python meanwhile) and
 * the other children it started may write at the same moment. A child that
 * read errno could act on another's error: skip a mask or a bounding-set drop
 * that really failed. So every system call of the child goes through nscg_sys,
 * which returns -errno as the kernel does; errno is never read. */
#if defined(__x86_64__)
static inline long nscg_sys(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
static inline long nscg_sys(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory", "cc");
    return x0;
}
#else
/* other architectures: glibc's syscall(), errno read right away (the race
 * described above remains there) */
static inline long nscg_sys(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r < 0 ? -(long)errno : r;
}
#endif

#define SYS0(n) nscg_sys((n), 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) nscg_sys((n), (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) nscg_sys((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) nscg_sys((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) nscg_sys((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS5(n, a, b, c, d, e) \
    nscg_sys((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* exit_group; never returns */
__attribute__((noreturn)) static inline void nscg_exit(int code)
{
    for (;;)
        SYS1(SYS_exit_group, code);
}

/* Run one step: expr is a system call's result (negative: -errno). */
#define STEP(c, stage, index, name, expr)                                               \
    do {                                                                                \
        if (injected((c), (stage), (index)))                                            \
            fail((c), (stage), (c)->p->fail_errno, (index), (name));                    \
        long step_r_ = (long)(expr);                                                    \
        if (step_r_ < 0)                                                                \
            fail((c), (stage), (int)-step_r_, (index), (name));                         \
    } while (0)

/* mount.c: the mount plan and pivot_root, in the new mount namespace. */
void nscg_setup_mounts(struct child_ctx *c);
/* Clone the trees of the plan's binds now, with the caller's ids (mount.c). */
void nscg_open_bind_sources(struct child_ctx *c);

#endif
