/* The mount plan: build the sandbox's root and pivot_root into it.
 *
 * Runs in the child, in its new mount namespace, after the pid namespace is
 * entered (so a new /proc shows the sandbox's pids) and before the payload
 * starts. Same rules as child.c: system calls only, no allocation.
 *
 * How (kernel >= 5.12: the "new" mount API and mount_setattr):
 *
 *  1. "/" becomes MS_REC|MS_PRIVATE (or MS_SLAVE): nothing propagates back.
 *  2. The new root is a fresh tmpfs made with fsopen/fsmount and attached on
 *     top of "/" itself. No staging directory is needed (no /tmp, no /mnt that
 *     may be missing, a symlink, or shared): the process's root still refers
 *     to the mount underneath, so host paths (bind sources, /dev/null) keep
 *     resolving in the old tree while every destination is resolved from an
 *     fd of the new root. When the plan's first op mounts the root itself
 *     (a bind of "/" or of a directory, a tmpfs), that mount is the new root
 *     instead, with nothing under it to unmount later.
 *  3. Each op is executed in order. Destinations are opened with
 *     openat2(root_fd, dest, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a
 *     symlink in the new root is resolved as if the new root were "/", so it
 *     can never lead outside (runc's CVE-2021-30465). Mounts are attached to
 *     that fd with move_mount(MOVE_MOUNT_T_EMPTY_PATH): no path is looked up
 *     twice. Missing mount points are created one component at a time with
 *     mkdirat/openat(O_EXCL|O_NOFOLLOW) relative to in-root fds.
 *  4. Read-only binds: open_tree(OPEN_TREE_CLONE [|AT_RECURSIVE]) +
 *     mount_setattr(MOUNT_ATTR_RDONLY [|AT_RECURSIVE]) on the detached copy.
 *     mount_setattr only *adds* flags, so the flags a user namespace locks on
 *     the source (nosuid, nodev, ...) are kept and the call cannot fail with
 *     EPERM as an MS_REMOUNT that forgot them would; recursion covers every
 *     submount (an MS_REMOUNT loop would need /proc/self/mountinfo).
 *  5. fchdir(new root); pivot_root(".", "."); fchdir(old root);
 *     umount2(".", MNT_DETACH): the old root is stacked on the new one by
 *     pivot_root and detached at once, by an fd opened before step 2.
 *
 * Scratch memory (SCRATCH ... SDONE, then SLOT ops): what a sandbox writes
 * outside its own mounts (an ephemeral overlay upper and work directory, the
 * split root's top level, the /etc files nscg writes) lives in one tmpfs made
 * here with fsopen/fsmount, with a size limit, that never has a host path:
 *
 *  - It is made detached, filled through its fd (mkdirat/openat), and its fd
 *    is sent to the parent over plan->scratch_sock (SCM_RIGHTS): the parent
 *    reads the change report through it once the sandbox is gone, and when
 *    the parent dies the fd dies with it. Nothing to clean up on the host.
 *  - Overlayfs (before Linux 6.15) takes its upper only from a mount of the
 *    caller's namespace, and open_tree(OPEN_TREE_CLONE) only clones from one:
 *    the scratch is attached for the time it takes to make those mounts, with
 *    the scratch as working directory (upperdir=u0 is a relative path, so no
 *    /proc is needed). The mounts are kept as detached fds in slots, and the
 *    SLOT ops attach them where the plan says, in order.
 *  - Where it is attached: dest "" stacks it on "/" (under the new root,
 *    before any op made one) and SDONE detaches it again, before anything
 *    could copy it (a recursive bind of "/"); a host directory as dest (the
 *    /etc files' own directory, when the scratch comes last) leaves it there,
 *    in the old tree, which is detached with the old root in one unmount.
 *  - Overlayfs keeps what it uses: its upper is a private clone of the
 *    scratch mount, so the tmpfs lives as long as the overlay and the
 *    parent's fd, and no longer.
 */
#include "child.h"

#include <linux/limits.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif
#define NSCG_STATX_MNT_ID 0x00001000U /* STATX_MNT_ID, Linux 5.8 */
#define NSCG_STATX_ATTR_MOUNT_ROOT 0x00002000U /* STATX_ATTR_MOUNT_ROOT, Linux 5.8 */
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* Linux 6.6; the same number on every architecture */
#endif

#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif
#define NSCG_FSCONFIG_SET_FLAG 0
#define NSCG_FSCONFIG_SET_STRING 1
#define NSCG_FSCONFIG_CMD_CREATE 6
#define NSCG_ATTR_RDONLY 0x00000001
#define NSCG_ATTR_NOSUID 0x00000002
#define NSCG_ATTR_NODEV 0x00000004
#define NSCG_ATTR_NOEXEC 0x00000008
#define NSCG_ATTR_IDMAP 0x00100000
#define NSCG_RESOLVE_NO_MAGICLINKS 0x02
#define NSCG_RESOLVE_IN_ROOT 0x10

struct nscg_open_how {
    uint64_t flags, mode, resolve;
};

struct nscg_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
/* the kernel's OPEN_HOW_SIZE_VER0 and MOUNT_ATTR_SIZE_VER0 */
_Static_assert(sizeof(struct nscg_open_how) == 24, "struct open_how");
_Static_assert(sizeof(struct nscg_mount_attr) == 32, "struct mount_attr");

/* A destination and its parent are copied into buffers of NSCG_MAX_DEST
 * bytes (abi.h), plus the NUL and the byte split() moves the name by: a
 * longer dest is refused (ENAMETOOLONG) before any copy. */
#define PATH_BUF (NSCG_MAX_DEST + 2)
_Static_assert(NSCG_MAX_DEST + 1 == PATH_MAX, "NSCG_MAX_DEST: the kernel's PATH_MAX less the NUL");

struct mctx {
    struct child_ctx *c;
    int root;     /* the topmost mount at the new root */
    int mask_dir; /* the first directory mask, once attached: cloned for the others */
    int scratch;  /* the scratch tmpfs (between SCRATCH and SDONE), else -1 */
    int stacked;  /* the scratch is stacked on "/" (detached again by SDONE) */
    int slots[NSCG_MAX_SLOTS]; /* detached mounts made from the scratch */
};

static size_t slen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int open_in_root(int root, const char *rel, int oflags)
{
    struct nscg_open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(O_PATH | O_CLOEXEC | oflags);
    how.resolve = NSCG_RESOLVE_IN_ROOT | NSCG_RESOLVE_NO_MAGICLINKS;
    return (int)SYS4(SYS_openat2, root, rel[0] ? rel : ".", &how, sizeof how);
}

static long sys_open_tree(int dfd, const char *path, unsigned flags)
{
    return SYS3(SYS_open_tree, dfd, path, flags);
}

static long sys_move_to(int from, int to)
{
    return SYS5(SYS_move_mount, from, "", to, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

static long sys_setattr(int fd, unsigned at_flags, uint64_t set)
{
    struct nscg_mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = set;
    return SYS5(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | at_flags, &a, sizeof a);
}

static uint64_t attrs_of(uint32_t f)
{
    uint64_t a = 0;
    if (f & NSCG_MNT_RDONLY)
        a |= NSCG_ATTR_RDONLY;
    if (f & NSCG_MNT_NOSUID)
        a |= NSCG_ATTR_NOSUID;
    if (f & NSCG_MNT_NODEV)
        a |= NSCG_ATTR_NODEV;
    if (f & NSCG_MNT_NOEXEC)
        a |= NSCG_ATTR_NOEXEC;
    return a;
}

/* Copy rel into buf (PATH_BUF bytes); split it at its last '/': *name is the
 * last component, buf the parent ("" for the root). 0, or -ENAMETOOLONG. */
static int split(char *buf, const char *rel, const char **name)
{
    size_t n = slen(rel), cut = n;
    if (n > NSCG_MAX_DEST)
        return -ENAMETOOLONG;
    memcpy(buf, rel, n + 1);
    while (cut > 0 && buf[cut - 1] != '/')
        cut--;
    *name = buf + cut;
    if (cut > 0) {
        buf[cut - 1] = 0;
    } else {
        /* no parent component: move the name out of the way */
        memmove(buf + 1, buf, n + 1);
        buf[0] = 0;
        *name = buf + 1;
    }
    return 0;
}

/* Open the directory that will hold rel, creating missing directories on the
 * way, each one inside the new root. Returns an O_PATH fd or -errno. */
static int ensure_dir(int root, const char *rel)
{
    char buf[PATH_BUF];
    int fd = open_in_root(root, rel, O_DIRECTORY);
    if (fd != -ENOENT)
        return fd;
    size_t n = slen(rel);
    if (n > NSCG_MAX_DEST)
        return -ENAMETOOLONG;
    memcpy(buf, rel, n + 1);
    for (size_t end = 0;; end++) {
        if (buf[end] != '/' && buf[end] != 0)
            continue;
        char save = buf[end];
        buf[end] = 0;
        /* the parent of this component is open; create the component */
        size_t start = end;
        while (start > 0 && buf[start - 1] != '/')
            start--;
        int pfd;
        if (start == 0) {
            pfd = root;
        } else {
            buf[start - 1] = 0;
            pfd = open_in_root(root, buf, O_DIRECTORY);
            buf[start - 1] = '/';
            if (pfd < 0)
                return pfd;
        }
        long r = SYS3(SYS_mkdirat, pfd, buf + start, 0755);
        if (pfd != root)
            SYS1(SYS_close, pfd);
        if (r < 0 && r != -EEXIST)
            return (int)r;
        buf[end] = save;
        if (!save)
            break;
    }
    return open_in_root(root, rel, O_DIRECTORY);
}

/* Open the destination of an op, creating it (a directory or an empty file)
 * if the op says so. Returns an O_PATH fd or -errno. */
static int open_dest(int root, const char *rel, uint32_t flags)
{
    int fd = open_in_root(root, rel, 0);
    if (fd != -ENOENT)
        return fd;
    if (flags & NSCG_MNT_CREATE_DIR)
        return ensure_dir(root, rel);
    if (flags & NSCG_MNT_CREATE_FILE) {
        char buf[PATH_BUF];
        const char *name;
        int pfd = split(buf, rel, &name);
        if (pfd < 0)
            return pfd;
        pfd = ensure_dir(root, buf);
        if (pfd < 0)
            return pfd;
        long f = SYS4(SYS_openat, pfd, name, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC,
                      0644);
        SYS1(SYS_close, pfd);
        if (f < 0 && f != -EEXIST)
            return (int)f;
        if (f >= 0)
            SYS1(SYS_close, f);
        return open_in_root(root, rel, 0);
    }
    return fd;
}

/* Whether fd is a directory (statx: the same struct on every architecture). */
static int is_dir(struct child_ctx *c, int i, int fd)
{
    struct statx st;
    STEP(c, NSCG_STAGE_MOUNTS, i, "fstat", SYS5(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE, &st));
    return S_ISDIR(st.stx_mode);
}

/* Attach the detached mount mnt at op->dest (created as flags say); the fd is
 * consumed. */
static void attach(struct mctx *m, int i, const struct nscg_mount_op *op, uint32_t flags, int mnt)
{
    struct child_ctx *c = m->c;
    int dst;
    if (op->dest[0] == 0 && m->root < 0) {
        /* the plan's first op makes the root itself: it is the new root,
         * stacked on "/" like the staging tmpfs would be (see the top) */
        STEP(c, NSCG_STAGE_MOUNTS, i, "move_mount",
             SYS5(SYS_move_mount, mnt, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH));
        m->root = mnt;
        return;
    }
    STEP(c, NSCG_STAGE_MOUNTS, i, "openat2", dst = open_dest(m->root, op->dest, flags));
    STEP(c, NSCG_STAGE_MOUNTS, i, "move_mount", sys_move_to(mnt, dst));
    SYS1(SYS_close, dst);
    if (op->dest[0] == 0) {
        /* stacked on the root: lookups from the old root fd would not see it */
        SYS1(SYS_close, m->root);
        m->root = mnt;
    } else {
        SYS1(SYS_close, mnt);
    }
}

static void op_bind(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    struct nscg_spawn_state *st = c->st;
    unsigned rec = (op->flags & NSCG_MNT_RECURSIVE) ? AT_RECURSIVE : 0;
    int tree;
    int slot = (op->fd_index >= 0 && op->fd_index < st->n_mount_fds) ? st->mount_fds[op->fd_index]
                                                                       : NSCG_FD_NOT_OPENED;
    if (slot != NSCG_FD_NOT_OPENED) {
        /* cloned already, with its attributes set: by the parent (an
         * idmapped tree, NSCG_MNT_FROM_FD: mount_setattr with
         * MOUNT_ATTR_IDMAP needs CAP_SYS_ADMIN in the user namespace owning
         * the filesystem, which this process does not have) or by
         * nscg_open_bind_sources; moving it into place is all that is left */
        tree = slot;
        st->mount_fds[op->fd_index] = -1; /* consumed (attach closes it) */
        if (tree < 0 && (op->flags & NSCG_MNT_OPTIONAL))
            return; /* no source */
        if (tree < 0)
            fail(c, NSCG_STAGE_MOUNTS, EBADF, i, "move_mount");
        FAULT_POINT(c, NSCG_STAGE_MOUNTS, i, "move_mount");
    } else {
        FAULT_POINT(c, NSCG_STAGE_MOUNTS, i, "open_tree");
        tree = (int)sys_open_tree(AT_FDCWD, op->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
        if (tree < 0) {
            if (tree == -ENOENT && (op->flags & NSCG_MNT_OPTIONAL))
                return;
            fail(c, NSCG_STAGE_MOUNTS, -tree, i, "open_tree");
        }
        uint64_t a = attrs_of(op->flags);
        if (a)
            STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr", sys_setattr(tree, rec, a));
    }
    uint32_t flags = op->flags;
    if ((flags & NSCG_MNT_CREATE_DIR) && (flags & NSCG_MNT_CREATE_FILE)) {
        /* a missing mount point is made like the source: what the source is
         * now, not what it was when the plan was made */
        flags &= is_dir(c, i, tree) ? ~(uint32_t)NSCG_MNT_CREATE_FILE
                                    : ~(uint32_t)NSCG_MNT_CREATE_DIR;
    }
    attach(m, i, op, flags, tree);
}

static void op_fs(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    int fs, mnt;
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsopen", fs = (int)SYS2(SYS_fsopen, op->fstype, FSOPEN_CLOEXEC));
    for (int k = 0; op->options && op->options[k]; k += 2) {
        const char *key = op->options[k], *val = op->options[k + 1];
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, val ? NSCG_FSCONFIG_SET_STRING : NSCG_FSCONFIG_SET_FLAG, key,
                  val, 0));
    }
    if (op->source)
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_SET_STRING, "source", op->source, 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
         SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsmount",
         mnt = (int)SYS3(SYS_fsmount, fs, FSMOUNT_CLOEXEC, (unsigned)attrs_of(op->flags)));
    SYS1(SYS_close, fs);
    attach(m, i, op, op->flags, mnt);
}

static void op_mkdir(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    char buf[PATH_BUF];
    const char *name;
    int pfd;
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", split(buf, op->dest, &name));
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", pfd = ensure_dir(m->root, buf));
    long r = SYS3(SYS_mkdirat, pfd, name, op->mode);
    if (r < 0 && r != -EEXIST)
        fail(c, NSCG_STAGE_MOUNTS, (int)-r, i, "mkdirat");
    SYS1(SYS_close, pfd);
}

static void op_symlink(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    char buf[PATH_BUF];
    const char *name;
    int pfd;
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", split(buf, op->dest, &name));
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", pfd = ensure_dir(m->root, buf));
    STEP(c, NSCG_STAGE_MOUNTS, i, "symlinkat", SYS3(SYS_symlinkat, op->source, pfd, name));
    SYS1(SYS_close, pfd);
}

static void op_file(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    char buf[PATH_BUF];
    const char *name;
    int pfd, fd;
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", split(buf, op->dest, &name));
    STEP(c, NSCG_STAGE_MOUNTS, i, "mkdirat", pfd = ensure_dir(m->root, buf));
    STEP(c, NSCG_STAGE_MOUNTS, i, "openat",
         fd = (int)SYS4(SYS_openat, pfd, name, O_CREAT | O_TRUNC | O_NOFOLLOW | O_WRONLY | O_CLOEXEC,
                        op->mode));
    SYS1(SYS_close, pfd);
    uint64_t off = 0;
    while (off < op->size) {
        long w = SYS3(SYS_write, fd, op->source + off, (size_t)(op->size - off));
        if (w == -EINTR)
            continue;
        if (w <= 0)
            fail(c, NSCG_STAGE_MOUNTS, w < 0 ? (int)-w : EIO, i, "write");
        off += (uint64_t)w;
    }
    STEP(c, NSCG_STAGE_MOUNTS, i, "fchmod", SYS2(SYS_fchmod, fd, op->mode));
    SYS1(SYS_close, fd);
}

/* Make op->dest read-only: the root mount directly; any other path, with
 * NSCG_MNT_RECURSIVE, by a recursive bind onto itself made read-only (dest
 * need not be a mount point); without it, the mount at dest itself, which
 * must be a mount point (EINVAL otherwise, as bwrap's --remount-ro): its
 * submounts are left as they are. */
static void op_readonly(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    unsigned rec = (op->flags & NSCG_MNT_RECURSIVE) ? AT_RECURSIVE : 0;
    if (op->dest[0] == 0) {
        STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr",
             sys_setattr(m->root, rec, NSCG_ATTR_RDONLY | attrs_of(op->flags)));
        return;
    }
    FAULT_POINT(c, NSCG_STAGE_MOUNTS, i, "openat2");
    int fd = open_in_root(m->root, op->dest, 0);
    if (fd < 0) {
        if (fd == -ENOENT && (op->flags & NSCG_MNT_OPTIONAL))
            return;
        fail(c, NSCG_STAGE_MOUNTS, -fd, i, "openat2");
    }
    if (!rec) {
        struct statx st;
        STEP(c, NSCG_STAGE_MOUNTS, i, "statx",
             SYS5(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_TYPE, &st));
        if (!(st.stx_attributes_mask & NSCG_STATX_ATTR_MOUNT_ROOT) ||
            !(st.stx_attributes & NSCG_STATX_ATTR_MOUNT_ROOT))
            fail(c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount_setattr");
        STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr",
             sys_setattr(fd, 0, NSCG_ATTR_RDONLY | attrs_of(op->flags)));
        SYS1(SYS_close, fd);
        return;
    }
    int tree;
    STEP(c, NSCG_STAGE_MOUNTS, i, "open_tree",
         tree = (int)sys_open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | rec));
    STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr",
         sys_setattr(tree, rec, NSCG_ATTR_RDONLY | attrs_of(op->flags)));
    STEP(c, NSCG_STAGE_MOUNTS, i, "move_mount", sys_move_to(tree, fd));
    SYS1(SYS_close, tree);
    SYS1(SYS_close, fd);
}

/* CHMOD: set the mode of op->dest (bwrap's --chmod). Resolved inside the new
 * root (a symlink is followed there, never out of it) to an O_PATH fd, which
 * fchmodat2 (Linux 6.6) changes with AT_EMPTY_PATH; before 6.6, the path is
 * opened for reading (non-blocking: a FIFO) and fchmod'ed. */
static void op_chmod(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    int fd;
    STEP(c, NSCG_STAGE_MOUNTS, i, "openat2", fd = open_in_root(m->root, op->dest, 0));
    long r = SYS4(SYS_fchmodat2, fd, "", op->mode, AT_EMPTY_PATH);
    SYS1(SYS_close, fd);
    if (r == -ENOSYS) {
        struct nscg_open_how how;
        memset(&how, 0, sizeof how);
        how.flags = (uint64_t)(O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        how.resolve = NSCG_RESOLVE_IN_ROOT | NSCG_RESOLVE_NO_MAGICLINKS;
        STEP(c, NSCG_STAGE_MOUNTS, i, "openat2",
             fd = (int)SYS4(SYS_openat2, m->root, op->dest, &how, sizeof how));
        r = SYS2(SYS_fchmod, fd, op->mode);
        SYS1(SYS_close, fd);
    }
    if (r < 0)
        fail(c, NSCG_STAGE_MOUNTS, (int)-r, i, "fchmodat2");
}

/* Hide op->dest: /dev/null over a file, an empty read-only tmpfs over a
 * directory; a path that does not exist, or is removed before the mount is
 * attached (move_mount: ENOENT), is skipped. Every directory mask is
 * the same tmpfs: the first one is made (or, NSCG_MNT_FROM_SLOT, is a
 * directory of the scratch tmpfs), the others are binds of it (one
 * superblock per sandbox instead of one per masked directory). */
static int slot_index(struct mctx *m, int i, const struct nscg_mount_op *op);

static void op_mask(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    FAULT_POINT(c, NSCG_STAGE_MOUNTS, i, "openat2");
    int fd = open_in_root(m->root, op->dest, 0);
    if (fd < 0) {
        /* a path the sandbox's root cannot reach (below a 0700 directory of
         * host root, when root inside is not host root) the payload cannot
         * reach either: nothing to hide */
        if (fd == -ENOENT || fd == -EACCES)
            return;
        fail(c, NSCG_STAGE_MOUNTS, -fd, i, "openat2");
    }
    int dir = is_dir(c, i, fd);
    int mnt, keep = 0;
    if (dir && m->mask_dir >= 0) {
        STEP(c, NSCG_STAGE_MOUNTS, i, "open_tree",
             mnt = (int)sys_open_tree(m->mask_dir, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    } else if (dir && (op->flags & NSCG_MNT_FROM_SLOT) && m->slots[slot_index(m, i, op)] >= 0) {
        /* the scratch's empty read-only directory (one superblock less) */
        mnt = m->slots[op->slot];
        m->slots[op->slot] = -1;
        keep = 1;
    } else if (dir) {
        int fs;
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsopen", fs = (int)SYS2(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC));
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_SET_STRING, "size", "4k", 0));
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_CMD_CREATE, NULL, NULL, 0));
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsmount",
             mnt = (int)SYS3(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                             NSCG_ATTR_RDONLY | NSCG_ATTR_NOSUID | NSCG_ATTR_NODEV |
                                 NSCG_ATTR_NOEXEC));
        SYS1(SYS_close, fs);
        keep = 1;
    } else {
        STEP(c, NSCG_STAGE_MOUNTS, i, "open_tree",
             mnt = (int)sys_open_tree(AT_FDCWD, "/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    }
    long moved = sys_move_to(mnt, fd);
    if (moved == -ENOENT) {
        /* unlinked since openat2 (a host socket going away): nothing left to
         * hide there, as when openat2 finds nothing */
        SYS1(SYS_close, mnt);
        SYS1(SYS_close, fd);
        return;
    }
    if (moved < 0)
        fail(c, NSCG_STAGE_MOUNTS, (int)-moved, i, "move_mount");
    if (keep)
        m->mask_dir = mnt; /* attached now: open_tree can clone it */
    else
        SYS1(SYS_close, mnt);
    SYS1(SYS_close, fd);
}

/* The mount id of what fd (or path, from dfd) refers to. */
static long mnt_id_of(int dfd, const char *path, uint64_t *id)
{
    struct statx st;
    long r = SYS5(SYS_statx, dfd, path, AT_EMPTY_PATH, NSCG_STATX_MNT_ID, &st);
    if (r == 0 && !(st.stx_mask & NSCG_STATX_MNT_ID))
        return -ENOSYS;
    *id = st.stx_mnt_id;
    return r;
}

/* After pivot_root: leave nothing stacked on the new root.
 *
 * pivot_root(".", ".") stacks the old root (the host's "/", read-write) on the
 * new one, and a recursive bind of "/" also copies the staging tmpfs that was
 * stacked on the old root. The payload's root is the new root and does not
 * see them, but setns(CLONE_NEWNS) takes whatever is on top of the stack:
 * a process joining the sandbox (Container.entering, nsenter) would land in
 * the host's tree, and the payload could follow its /proc/PID/root there.
 * umount2(".") after pivot_root detaches only the top of the stack, which
 * need not be the old root. So: join our own mount namespace to land where a
 * joiner would, and detach that mount until it is the new root. */
static void detach_above_root(struct mctx *m)
{
    struct child_ctx *c = m->c;
    uint64_t want, top;
    int self;
    STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "statx", mnt_id_of(m->root, "", &want));
    STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "pidfd_open",
         self = (int)SYS2(SYS_pidfd_open, SYS0(SYS_getpid), 0));
    for (int i = 0;; i++) {
        STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "setns", SYS2(SYS_setns, self, CLONE_NEWNS));
        STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "statx", mnt_id_of(AT_FDCWD, "/", &top));
        if (top == want)
            break;
        if (i == 64)
            fail(c, NSCG_STAGE_PIVOT_ROOT, ELOOP, -1, "umount2");
        STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "umount2", SYS2(SYS_umount2, "/", MNT_DETACH));
    }
    SYS1(SYS_close, self);
}

/* The staging root: a fresh tmpfs stacked on "/" (see the top of this file). */
static void make_staging_root(struct mctx *m)
{
    struct child_ctx *c = m->c;
    int fs;
    STEP(c, NSCG_STAGE_MOUNTS, -1, "fsopen", fs = (int)SYS2(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC));
    STEP(c, NSCG_STAGE_MOUNTS, -1, "fsconfig",
         SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_SET_STRING, "mode", "0755", 0));
    STEP(c, NSCG_STAGE_MOUNTS, -1, "fsconfig",
         SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    STEP(c, NSCG_STAGE_MOUNTS, -1, "fsmount",
         m->root = (int)SYS3(SYS_fsmount, fs, FSMOUNT_CLOEXEC, NSCG_ATTR_NOSUID | NSCG_ATTR_NODEV));
    SYS1(SYS_close, fs);
    STEP(c, NSCG_STAGE_MOUNTS, -1, "move_mount",
         SYS5(SYS_move_mount, m->root, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH));
}


/* ------------------------------------------------------------ scratch memory */

static int slot_index(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    if (op->slot >= NSCG_MAX_SLOTS)
        fail(m->c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount");
    return (int)op->slot;
}

/* Send fd over the socket sock (one byte, SCM_RIGHTS). */
static long send_fd(int sock, int fd)
{
    char byte = 'S';
    struct iovec iov;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg;
    memset(&u, 0, sizeof u);
    memset(&msg, 0, sizeof msg);
    iov.iov_base = &byte;
    iov.iov_len = 1;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof(int));
    long r;
    do {
        r = SYS3(SYS_sendmsg, sock, &msg, MSG_NOSIGNAL);
    } while (r == -EINTR);
    return r;
}

/* SCRATCH: make the tmpfs, send its fd to the parent, attach it (see the top). */
static void op_scratch(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    int fs;
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsopen", fs = (int)SYS2(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC));
    for (int k = 0; op->options && op->options[k]; k += 2)
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_SET_STRING, op->options[k], op->options[k + 1], 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
         SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsmount",
         m->scratch = (int)SYS3(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                                NSCG_ATTR_NOSUID | NSCG_ATTR_NODEV));
    SYS1(SYS_close, fs);
    if (c->scratch_sock >= 0) {
        STEP(c, NSCG_STAGE_MOUNTS, i, "sendmsg", send_fd(c->scratch_sock, m->scratch));
        SYS1(SYS_close, c->scratch_sock);
        c->scratch_sock = -1;
    }
    m->stacked = op->dest[0] == 0;
    STEP(c, NSCG_STAGE_MOUNTS, i, "move_mount",
         SYS5(SYS_move_mount, m->scratch, "", AT_FDCWD, m->stacked ? "/" : op->dest,
              MOVE_MOUNT_F_EMPTY_PATH));
    /* (overlay's upperdir and workdir are looked up from here) */
    STEP(c, NSCG_STAGE_MOUNTS, i, "fchdir", SYS1(SYS_fchdir, m->scratch));
}

/* SDIR, SFILE: a directory or a file in the scratch (dest relative to it). */
static void op_sdir(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    long r = SYS3(SYS_mkdirat, m->scratch, op->dest, 0700);
    if (r < 0 && r != -EEXIST)
        fail(c, NSCG_STAGE_MOUNTS, (int)-r, i, "mkdirat");
    /* the mode as given (mkdirat's is masked by the umask; 1777 keeps its sticky bit) */
    STEP(c, NSCG_STAGE_MOUNTS, i, "fchmodat", SYS4(SYS_fchmodat, m->scratch, op->dest, op->mode, 0));
}

static void op_sfile(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    int fd;
    STEP(c, NSCG_STAGE_MOUNTS, i, "openat",
         fd = (int)SYS4(SYS_openat, m->scratch, op->dest,
                        O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, 0600));
    uint64_t off = 0;
    while (off < op->size) {
        long w = SYS3(SYS_write, fd, op->source + off, (size_t)(op->size - off));
        if (w == -EINTR)
            continue;
        if (w <= 0)
            fail(c, NSCG_STAGE_MOUNTS, w < 0 ? (int)-w : EIO, i, "write");
        off += (uint64_t)w;
    }
    STEP(c, NSCG_STAGE_MOUNTS, i, "fchmod", SYS2(SYS_fchmod, fd, op->mode));
    SYS1(SYS_close, fd);
}

/* SFS: a filesystem made with the scratch as working directory, kept in a slot. */
static void op_sfs(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    int k = slot_index(m, i, op), fs;
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsopen", fs = (int)SYS2(SYS_fsopen, op->fstype, FSOPEN_CLOEXEC));
    for (int j = 0; op->options && op->options[j]; j += 2) {
        const char *key = op->options[j], *val = op->options[j + 1];
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, val ? NSCG_FSCONFIG_SET_STRING : NSCG_FSCONFIG_SET_FLAG, key,
                  val, 0));
    }
    if (op->source)
        STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
             SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_SET_STRING, "source", op->source, 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsconfig",
         SYS5(SYS_fsconfig, fs, NSCG_FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    STEP(c, NSCG_STAGE_MOUNTS, i, "fsmount",
         m->slots[k] = (int)SYS3(SYS_fsmount, fs, FSMOUNT_CLOEXEC, (unsigned)attrs_of(op->flags)));
    SYS1(SYS_close, fs);
}

/* SBIND: a clone of source (relative to the scratch), kept in a slot.
 * With NSCG_MNT_FROM_FD: the parent's detached tree (an idmapped overlay
 * lower, see nscg/_rootfs_run.py) attached at dest in the scratch, where the
 * overlay made next finds it by a relative lowerdir: overlayfs clones a lower
 * only from a mount of the caller's namespace (clone_private_mount), not from
 * the parent's detached one. It goes when SDONE detaches the scratch; the
 * overlay keeps its own clone. */
static void op_sbind(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    struct child_ctx *c = m->c;
    if (op->flags & NSCG_MNT_FROM_FD) {
        struct nscg_spawn_state *st = c->st;
        int tree = (op->fd_index >= 0 && op->fd_index < st->n_mount_fds) ? st->mount_fds[op->fd_index]
                                                                           : -1;
        if (tree < 0)
            fail(c, NSCG_STAGE_MOUNTS, EBADF, i, "move_mount");
        st->mount_fds[op->fd_index] = -1;
        long r = SYS5(SYS_move_mount, tree, "", m->scratch, op->dest, MOVE_MOUNT_F_EMPTY_PATH);
        SYS1(SYS_close, tree);
        STEP(c, NSCG_STAGE_MOUNTS, i, "move_mount", r);
        return;
    }
    int k = slot_index(m, i, op);
    STEP(c, NSCG_STAGE_MOUNTS, i, "open_tree",
         m->slots[k] = (int)sys_open_tree(m->scratch, op->source,
                                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW));
    uint64_t a = attrs_of(op->flags);
    if (a)
        STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr", sys_setattr(m->slots[k], 0, a));
}

/* SDONE: the scratch's own fd is no longer needed; unstack it from "/". */
static void op_sdone(struct mctx *m, int i)
{
    struct child_ctx *c = m->c;
    if (m->stacked)
        STEP(c, NSCG_STAGE_MOUNTS, i, "umount2", SYS2(SYS_umount2, ".", MNT_DETACH));
    SYS1(SYS_close, m->scratch);
    m->scratch = -1;
}

/* SLOT: attach the mount kept in a slot at dest. */
static void op_slot(struct mctx *m, int i, const struct nscg_mount_op *op)
{
    int k = slot_index(m, i, op);
    if (m->slots[k] < 0)
        fail(m->c, NSCG_STAGE_MOUNTS, EBADF, i, "move_mount");
    uint32_t flags = op->flags;
    if ((flags & NSCG_MNT_CREATE_DIR) && (flags & NSCG_MNT_CREATE_FILE))
        flags &= is_dir(m->c, i, m->slots[k]) ? ~(uint32_t)NSCG_MNT_CREATE_FILE
                                              : ~(uint32_t)NSCG_MNT_CREATE_DIR;
    attach(m, i, op, flags, m->slots[k]);
    m->slots[k] = -1; /* closed by attach, or the root now (m->root owns it) */
}

/* Clone the source tree of every bind of the plan (open_tree, and
 * mount_setattr of its flags) before the child becomes the sandbox's root
 * (NSCG_F_ROOT_EARLY): a bind source is the caller's choice and is looked up
 * with the caller's ids, as it was before root inside stopped being the
 * caller; the plan then runs as the sandbox's root. The trees are clones made
 * in this mount namespace (their mounts stay locked as the kernel locks
 * copies into a less privileged namespace) after "/" is made private, so
 * they carry no propagation to or from the host. A tree not used because the
 * plan failed is closed at exit (close-on-exec). */
void nscg_open_bind_sources(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    struct nscg_spawn_state *st = c->st;
    unsigned long prop = (p->mount_flags & NSCG_MOUNTS_SLAVE) ? MS_SLAVE : MS_PRIVATE;
    if (!(p->mount_flags & NSCG_MOUNTS_ACTIVE))
        return;
    STEP(c, NSCG_STAGE_MOUNTS, -1, "mount", SYS5(SYS_mount, NULL, "/", NULL, MS_REC | prop, NULL));
    for (int i = 0; i < p->n_mounts; i++) {
        const struct nscg_mount_op *op = &p->mounts[i];
        if (op->kind != NSCG_MOUNT_BIND || op->fd_index < 0 || op->fd_index >= st->n_mount_fds ||
            st->mount_fds[op->fd_index] != NSCG_FD_NOT_OPENED)
            continue;
        unsigned rec = (op->flags & NSCG_MNT_RECURSIVE) ? AT_RECURSIVE : 0;
        FAULT_POINT(c, NSCG_STAGE_MOUNTS, i, "open_tree");
        int tree = (int)sys_open_tree(AT_FDCWD, op->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
        if (tree < 0) {
            if (tree == -ENOENT && (op->flags & NSCG_MNT_OPTIONAL)) {
                st->mount_fds[op->fd_index] = -1;
                continue;
            }
            fail(c, NSCG_STAGE_MOUNTS, -tree, i, "open_tree");
        }
        uint64_t a = attrs_of(op->flags);
        if (a)
            STEP(c, NSCG_STAGE_MOUNTS, i, "mount_setattr", sys_setattr(tree, rec, a));
        st->mount_fds[op->fd_index] = tree;
    }
}

void nscg_setup_mounts(struct child_ctx *c)
{
    const struct nscg_plan *p = c->p;
    struct mctx mc = {.c = c, .root = -1, .mask_dir = -1, .scratch = -1}, *m = &mc;
    for (int k = 0; k < NSCG_MAX_SLOTS; k++)
        m->slots[k] = -1;
    unsigned long prop = (p->mount_flags & NSCG_MOUNTS_SLAVE) ? MS_SLAVE : MS_PRIVATE;
    /* NSCG_MOUNTS_KEEP_CWD: the caller's working directory, by path, before
     * any op moves us (the scratch ops fchdir); entered again after
     * pivot_root if the new root has it. A cwd the kernel cannot name from
     * our root ("(unreachable)...") or a longer one: none. */
    char old_cwd[NSCG_MAX_DEST + 1];
    old_cwd[0] = 0;
    if ((p->mount_flags & NSCG_MOUNTS_KEEP_CWD) &&
        (SYS2(SYS_getcwd, old_cwd, sizeof old_cwd) <= 0 || old_cwd[0] != '/'))
        old_cwd[0] = 0;

    STEP(c, NSCG_STAGE_MOUNTS, -1, "mount", SYS5(SYS_mount, NULL, "/", NULL, MS_REC | prop, NULL));
    /* A first op that mounts the root itself (RootFS.host()'s bind of "/",
     * from_directory's bind, a tmpfs) becomes the new root directly. With a
     * staging tmpfs under it, a recursive bind of "/" would copy the staging
     * tmpfs too, and every extra layer stacked on the root costs an unmount
     * later, each one waiting for an expedited RCU grace period. */
    /* (the scratch ops come first, or last; they need no root) */
    int first = 0;
    while (first < p->n_mounts && p->mounts[first].kind >= NSCG_MOUNT_SCRATCH &&
           p->mounts[first].kind <= NSCG_MOUNT_SDONE)
        first++;
    int direct = p->n_mounts > first && p->mounts[first].dest[0] == 0 &&
                 (p->mounts[first].kind == NSCG_MOUNT_BIND || p->mounts[first].kind == NSCG_MOUNT_FS ||
                  p->mounts[first].kind == NSCG_MOUNT_SLOT);
    for (int i = 0; i < p->n_mounts; i++) {
        const struct nscg_mount_op *op = &p->mounts[i];
        int scratch_op = op->kind >= NSCG_MOUNT_SCRATCH && op->kind <= NSCG_MOUNT_SDONE;
        if (m->root < 0 && !scratch_op && !(i == first && direct))
            make_staging_root(m); /* (also when an optional first bind was skipped) */
        if (!scratch_op && m->scratch >= 0)
            fail(c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount"); /* a group without SDONE */
        switch (op->kind) {
        case NSCG_MOUNT_BIND:
            op_bind(m, i, op);
            break;
        case NSCG_MOUNT_FS:
            op_fs(m, i, op);
            break;
        case NSCG_MOUNT_MKDIR:
            op_mkdir(m, i, op);
            break;
        case NSCG_MOUNT_SYMLINK:
            op_symlink(m, i, op);
            break;
        case NSCG_MOUNT_FILE:
            op_file(m, i, op);
            break;
        case NSCG_MOUNT_READONLY:
            op_readonly(m, i, op);
            break;
        case NSCG_MOUNT_MASK:
            op_mask(m, i, op);
            break;
        case NSCG_MOUNT_CHMOD:
            op_chmod(m, i, op);
            break;
        case NSCG_MOUNT_SCRATCH:
            if (m->scratch >= 0)
                fail(c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount");
            op_scratch(m, i, op);
            break;
        case NSCG_MOUNT_SDIR:
        case NSCG_MOUNT_SFILE:
        case NSCG_MOUNT_SFS:
        case NSCG_MOUNT_SBIND:
        case NSCG_MOUNT_SDONE:
            if (m->scratch < 0)
                fail(c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount");
            if (op->kind == NSCG_MOUNT_SDIR)
                op_sdir(m, i, op);
            else if (op->kind == NSCG_MOUNT_SFILE)
                op_sfile(m, i, op);
            else if (op->kind == NSCG_MOUNT_SFS)
                op_sfs(m, i, op);
            else if (op->kind == NSCG_MOUNT_SBIND)
                op_sbind(m, i, op);
            else
                op_sdone(m, i);
            break;
        case NSCG_MOUNT_SLOT:
            op_slot(m, i, op);
            break;
        default:
            fail(c, NSCG_STAGE_MOUNTS, EINVAL, i, "mount");
        }
    }
    if (m->scratch >= 0)
        fail(c, NSCG_STAGE_MOUNTS, EINVAL, p->n_mounts - 1, "mount"); /* no SDONE */
    for (int k = 0; k < NSCG_MAX_SLOTS; k++)
        if (m->slots[k] >= 0)
            SYS1(SYS_close, m->slots[k]); /* made but never attached */
    if (m->root < 0)
        make_staging_root(m); /* an empty plan: an empty root */
    if (m->mask_dir >= 0)
        SYS1(SYS_close, m->mask_dir);
    if (p->mount_flags & NSCG_MOUNTS_ROOT_RDONLY)
        STEP(c, NSCG_STAGE_MOUNTS, p->n_mounts, "mount_setattr",
             sys_setattr(m->root, 0, NSCG_ATTR_RDONLY));

    /* pivot_root(".", "."): the old root ends up stacked on the new one */
    long r = SYS1(SYS_fchdir, m->root);
    if (r < 0)
        fail(c, NSCG_STAGE_PIVOT_ROOT, (int)-r, -1, "fchdir");
    STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "pivot_root", SYS2(SYS_pivot_root, ".", "."));
    detach_above_root(m);
    STEP(c, NSCG_STAGE_PIVOT_ROOT, -1, "chdir", SYS1(SYS_chdir, "/"));
    SYS1(SYS_close, m->root);
    /* the same path in the new root, if it is a directory there (resolved
     * from the new root: nothing outside it can be reached); else "/" */
    if (old_cwd[0])
        (void)SYS1(SYS_chdir, old_cwd);
}

/* Not part of the child: the parent's half of NSCG_MNT_FROM_FD (abi.h). */
int nscg_detached_tree(const char *path, int recursive, uint64_t attr_set, int userns_fd, int *step,
                       int32_t *out)
{
    unsigned rec = recursive ? AT_RECURSIVE : 0;
    *step = 0;
    int tree = (int)sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    if (tree < 0)
        return tree;
    struct nscg_mount_attr a;
    memset(&a, 0, sizeof a);
    a.attr_set = attr_set;
    a.propagation = MS_PRIVATE; /* no peer of the host's mounts */
    if (userns_fd >= 0) {
        a.attr_set |= NSCG_ATTR_IDMAP;
        a.userns_fd = (uint64_t)userns_fd;
    }
    *step = 1;
    long r = SYS5(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | rec, &a, sizeof a);
    if (r < 0) {
        SYS1(SYS_close, tree);
        return (int)r;
    }
    *out = tree;
    return 0;
}
