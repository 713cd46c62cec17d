/* nscg internal: what the child's sources (child.c, mount.c) share.
 *
 * Everything here runs between clone and execve: system calls only, on memory
 * the parent prepared (see child.c). The C hygiene rules of these sources are
 * in docs/design.md ("C hygiene"). */
#ifndef NSCG_CHILD_H
#define NSCG_CHILD_H

/* No fortified C library calls in the child, whatever the distribution's
 * compiler adds (Ubuntu's gcc defines _FORTIFY_SOURCE=3 at -O1 and up, Fedora's
 * flags pass it too): with it, memcpy into a fixed buffer becomes a call to
 * __memcpy_chk, whose failure path is the C library's abort (stderr, locks,
 * raise) in a process that shares the caller's memory and thread-local
 * storage. The child checks its own bounds instead (NSCG_MAX_DEST). So this
 * header comes first in each child source, before any system header reads the
 * macro; the check below fails the build otherwise. */
#ifdef NSCG_H
#error "child.h must be the first include of a child source (see _FORTIFY_SOURCE above)"
#endif
#undef _FORTIFY_SOURCE

#include "nscg.h"

#if defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
#error "the child sources must be built without _FORTIFY_SOURCE (see above)"
#endif

/* File descriptors the child still needs once the fd table is rearranged. */
struct child_ctx {
    const struct nscg_plan *p;   /* read only */
    struct nscg_spawn_state *st; /* p->state: what the spawn writes */
    int err_fd;
    int sync_fd;
    int parent_pidfd;
    int status_fd;
    int init_fd;
    int scratch_sock; /* mount.c sends the scratch tmpfs here (-1: nowhere) */
    int forked; /* the payload's parent is the sandbox's init */
    int init_gate[2]; /* pid 1's close-on-exec pipe: EOF once it has left our memory */
};

/* Report {stage, err, index, syscall} on the error pipe (or in memory) and exit (child.c). */
__attribute__((noreturn)) void nscg_fail(struct child_ctx *c, uint32_t stage, int err, int index,
                                         const char *sc);

__attribute__((noreturn)) static inline void fail(struct child_ctx *c, uint32_t stage, int err,
                                                  int index, const char *sc)
{
    nscg_fail(c, stage, err, index, sc);
}

/* ---- fault injection (tests only) ----
 *
 * The parent can ask a stage (one op of it, or any) to fail with an errno
 * (plan->fault, set by the tests through _spawn's _fault). A FAULT_POINT is
 * where such a failure is reported, as if the next step had failed: it is not
 * a step, makes no system call, and does nothing unless asked. Every STEP has
 * one; a FAULT_POINT alone marks a stage or an op whose work is not a STEP
 * (or that a test must be able to stop before its side effects). */
static inline int fault_wanted(const struct child_ctx *c, uint32_t stage, int index)
{
    const struct nscg_fault *f = &c->p->fault;
    return f->stage == (int32_t)stage && (f->index < 0 || f->index == index);
}

#define FAULT_POINT(c, stage, index, name)                                              \
    do {                                                                                \
        if (fault_wanted((c), (stage), (index)))                                        \
            fail((c), (stage), (c)->p->fault.err, (index), (name));                     \
    } while (0)

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
/* Other architectures would need glibc's syscall(), and with it the errno
 * race described above: the build fails instead (nscg.h says so first). */
#error "nscg: no raw system call path (nscg_sys) for this architecture"
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
        FAULT_POINT((c), (stage), (index), (name));                                     \
        long step_r_ = (long)(expr);                                                    \
        if (step_r_ < 0)                                                                \
            fail((c), (stage), (int)-step_r_, (index), (name));                         \
    } while (0)

/* mount.c: the mount plan and pivot_root, in the new mount namespace. */
void nscg_setup_mounts(struct child_ctx *c);
/* Clone the trees of the plan's binds now, with the caller's ids (mount.c). */
void nscg_open_bind_sources(struct child_ctx *c);

#endif
