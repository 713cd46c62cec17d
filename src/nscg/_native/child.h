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
    int forked; /* the payload's parent is the sandbox's init */
    sigset_t oldmask;
};

/* Report {stage, err, index, syscall} on the error pipe and _exit (child.c). */
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

#define STEP(c, stage, index, name, expr)                                               \
    do {                                                                                \
        if (injected((c), (stage), (index)))                                            \
            fail((c), (stage), (c)->p->fail_errno, (index), (name));                    \
        if ((long)(expr) < 0)                                                           \
            fail((c), (stage), errno, (index), (name));                                 \
    } while (0)

/* mount.c: the mount plan and pivot_root, in the new mount namespace. */
void nscg_setup_mounts(struct child_ctx *c);

#endif
