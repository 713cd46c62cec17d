/* nscg native ABI: the declarations shared by the C sources and cffi's cdef().
 *
 * This file is read verbatim by build.py and passed to ffibuilder.cdef(): no
 * #include, no #if, no macros other than integer constants. Every struct is
 * exact (no "...;") and starts with its ABI version where it crosses the
 * boundary. Bump NSCG_ABI_VERSION whenever a struct or a signature changes.
 */

#define NSCG_ABI_VERSION 15

/* ---- stages of a spawn (reported in struct nscg_child_error) ----
 * Numbered in the order a spawn with new namespaces runs them, and listed in
 * that order by nscg.Stage and docs/errors.md (a unit test keeps the three in
 * step). Out of order by design: namespaces joined and then created
 * (NSCG_F_UNSHARE_LATE) run SETNS and UNSHARE before ID_MAPS and WAIT_PARENT;
 * NSCG_F_ROOT_EARLY opens the bind sources (MOUNTS) and becomes root (SETGID,
 * SETUID) right after WAIT_PARENT; the bounding set is dropped (CAPS) before
 * SETGROUPS; an init is started (FORK) after PIVOT_ROOT. CLONE and ID_MAPS
 * are the parent's. */
#define NSCG_STAGE_NONE 0
#define NSCG_STAGE_CLONE 1
#define NSCG_STAGE_SIGNALS 2
#define NSCG_STAGE_PDEATHSIG 3
#define NSCG_STAGE_FDS 4
#define NSCG_STAGE_ID_MAPS 5
#define NSCG_STAGE_WAIT_PARENT 6
#define NSCG_STAGE_SETNS 7
#define NSCG_STAGE_UNSHARE 8
#define NSCG_STAGE_FORK 9
#define NSCG_STAGE_HOSTNAME 10
#define NSCG_STAGE_DOMAINNAME 11
#define NSCG_STAGE_LOOPBACK 12
#define NSCG_STAGE_TIMENS 13
#define NSCG_STAGE_MOUNTS 14
#define NSCG_STAGE_PIVOT_ROOT 15
#define NSCG_STAGE_SETSID 16
#define NSCG_STAGE_RLIMITS 17
#define NSCG_STAGE_CHDIR 18
#define NSCG_STAGE_SETGROUPS 19
#define NSCG_STAGE_SETGID 20
#define NSCG_STAGE_SETUID 21
#define NSCG_STAGE_CAPS 22
#define NSCG_STAGE_NO_NEW_PRIVS 23
#define NSCG_STAGE_SECCOMP 24
#define NSCG_STAGE_EXEC 25
/* not a failure: the child asks the parent to write its id maps now */
#define NSCG_STAGE_READY 100

/* ---- plan flags ---- */
#define NSCG_F_INIT 1
#define NSCG_F_SETID 2
#define NSCG_F_SETGROUPS 4
#define NSCG_F_NO_NEW_PRIVS 8
#define NSCG_F_LOOPBACK 16
#define NSCG_F_NEWTIME 32
#define NSCG_F_SETSID 64
#define NSCG_F_WAIT_PARENT 128
#define NSCG_F_UNSHARE_LATE 256
#define NSCG_F_FORK_PIDNS 512
#define NSCG_F_FORCE_CLONE_FALLBACK 1024
#define NSCG_F_NO_SPAWNER_THREAD 2048
#define NSCG_F_CAPS 4096
#define NSCG_F_CAPS_BOUNDING 8192
#define NSCG_F_SECCOMP 16384
/* the first child is the payload and nothing waits for the parent: clone it
 * vfork-style (the caller resumes once it has exec'd or failed) and take its
 * failure report from memory (nscg_spawn_out.child_err) instead of a pipe */
#define NSCG_F_VFORK 32768
/* the caller's thread writes the child's id maps (uid_map_text, gid_map_text,
 * setgroups "deny" if asked) right after the clone and lets it go (sync_w),
 * without a trip back to Python; a failure is in nscg_spawn_out.maps_err */
#define NSCG_F_PARENT_MAPS 65536
/* after the clone, nscg_spawn also closes the caller's copy of err_fd, reaps the
 * first child (with NSCG_F_FORK_PIDNS: opens a pidfd of the process it started)
 * and reads err_r to EOF or one record: one call, one release of the GIL,
 * instead of a Python step (and a wait for the GIL) after each */
#define NSCG_F_WAIT_EXEC 131072
/* with NSCG_F_FORK_PIDNS: nscg_spawn makes the status page itself (a memfd,
 * mapped; nscg_spawn_out.shared) and closes its fd after the clone */
#define NSCG_F_MAKE_STATUS 262144
/* in a new user namespace whose maps give inside ids 0 to other host ids than
 * the caller's: become uid/gid 0 inside right after the maps are written, so
 * that the mount plan creates files and directories as the sandbox's root
 * (the caller's own ids are not mapped there: EOVERFLOW) */
#define NSCG_F_ROOT_EARLY 524288

/* ---- nscg_plan.checks: the prepared plan's assumptions nscg_spawn checks ---- */
#define NSCG_CHECK_CAPS 1
#define NSCG_CHECK_SOCKETS 2

/* ---- nscg_plan.make: the spawn's pipes nscg_spawn makes, into plan->slots ---- */
#define NSCG_MAKE_ERR_PIPE 1
#define NSCG_MAKE_SYNC_PIPE 2
/* the slots (the caller's guard, nscg/_spawn.py _Fds) of their ends */
#define NSCG_SLOT_ERR_R 0
#define NSCG_SLOT_ERR_W 1
#define NSCG_SLOT_SYNC_R 2
#define NSCG_SLOT_SYNC_W 3

/* ---- mount plan: kinds of struct nscg_mount_op (see mount.c) ---- */
#define NSCG_MOUNT_BIND 1
#define NSCG_MOUNT_FS 2
#define NSCG_MOUNT_MKDIR 3
#define NSCG_MOUNT_SYMLINK 4
#define NSCG_MOUNT_FILE 5
#define NSCG_MOUNT_READONLY 6
#define NSCG_MOUNT_MASK 7
/* The scratch tmpfs (see mount.c, "Scratch memory"): SCRATCH makes it (options:
 * fsconfig pairs) and opens a group of scratch ops, SDONE closes the group.
 * Inside: SDIR/SFILE make dest (relative to the scratch), SFS makes a
 * filesystem with the scratch as working directory (an overlay's upperdir and
 * workdir are relative paths), SBIND clones source (relative to the scratch);
 * both keep the mount in slot op->slot, which a later SLOT op attaches at dest. */
#define NSCG_MOUNT_SCRATCH 8
#define NSCG_MOUNT_SDIR 9
#define NSCG_MOUNT_SFILE 10
#define NSCG_MOUNT_SFS 11
#define NSCG_MOUNT_SBIND 12
#define NSCG_MOUNT_SDONE 13
#define NSCG_MOUNT_SLOT 14
/* CHMOD: set the mode of dest (which must exist; a symlink is followed inside the root) */
#define NSCG_MOUNT_CHMOD 15
/* at most this many slots per plan */
#define NSCG_MAX_SLOTS 256
/* the longest nscg_mount_op.dest, in bytes without its NUL: the kernel's
 * PATH_MAX (4096) less the NUL. The child copies dest into buffers of this
 * size (mount.c) and refuses a longer one (ENAMETOOLONG); nscg.rootfs refuses
 * it before anything runs. */
#define NSCG_MAX_DEST 4095

/* ---- flags of one mount op ---- */
#define NSCG_MNT_RDONLY 1
#define NSCG_MNT_NOSUID 2
#define NSCG_MNT_NODEV 4
#define NSCG_MNT_NOEXEC 8
#define NSCG_MNT_RECURSIVE 16
#define NSCG_MNT_CREATE_DIR 32
#define NSCG_MNT_CREATE_FILE 64
#define NSCG_MNT_OPTIONAL 128
/* a bind whose detached mount the parent made (an idmapped tree: see
 * nscg/_idmap.py): the child moves state->mount_fds[op->fd_index] into place
 * instead of calling open_tree and mount_setattr itself; an SBIND with it
 * attaches that tree at dest in the scratch (an idmapped overlay lower) */
#define NSCG_MNT_FROM_FD 256
/* a MASK whose directory mask is the mount kept in slot op->slot (an empty
 * read-only directory of the scratch tmpfs), taken by the first directory
 * mask, instead of a tmpfs of its own */
#define NSCG_MNT_FROM_SLOT 512
/* a slot of nscg_spawn_state.mount_fds whose tree the child opens in op_bind; -1:
 * an optional source that does not exist */
#define NSCG_FD_NOT_OPENED -2

/* ---- flags of the whole mount plan (nscg_plan.mount_flags) ---- */
#define NSCG_MOUNTS_ACTIVE 1
#define NSCG_MOUNTS_SLAVE 2
#define NSCG_MOUNTS_ROOT_RDONLY 4
/* no working directory given (plan->cwd NULL): after pivot_root, enter the
 * caller's working directory (its path, read by the child before the mount
 * plan) if the same path is a directory the new root has, else stay at "/"
 * (bubblewrap's rule, without its $HOME step) */
#define NSCG_MOUNTS_KEEP_CWD 8

/* ---- namespace flags (values of the kernel's CLONE_NEW*) ---- */
#define NSCG_CLONE_NEWNS 131072
#define NSCG_CLONE_NEWCGROUP 33554432
#define NSCG_CLONE_NEWUTS 67108864
#define NSCG_CLONE_NEWIPC 134217728
#define NSCG_CLONE_NEWUSER 268435456
#define NSCG_CLONE_NEWPID 536870912
#define NSCG_CLONE_NEWNET 1073741824
#define NSCG_CLONE_NEWTIME 128

/* ---- feature bits returned by nscg_clone_features() ---- */
#define NSCG_HAS_CLONE3 1
#define NSCG_HAS_CLONE_PIDFD 2
#define NSCG_HAS_CLONE_INTO_CGROUP 4

struct nscg_fdmap {
    int32_t src;
    int32_t dst;
};

struct nscg_rlimit {
    int32_t resource;
    uint32_t reserved;
    uint64_t cur;
    uint64_t max;
};

/* nstype 0: fd is a directory (a sandbox process's root) to chroot into, last */
struct nscg_join {
    int32_t fd;
    uint32_t nstype;
};

/* A page of a memfd the parent has mapped: the first child writes the pid of
 * the process it forked into the pid namespace (init_pid); nscg-init writes
 * has_status = 1 and the payload's raw wait status (payload_status, right
 * after it: one pwrite of both, at offsetof(has_status), init.c) before it
 * exits. */
struct nscg_shared {
    uint32_t abi;
    uint32_t has_status;
    int32_t payload_status;
    int32_t init_pid;
};

/* One fixed-size record, written with a single write(2) to the error pipe
 * (Python reads sizeof(struct nscg_child_error) bytes and decodes them with
 * this declaration: nscg/_spawn.py). */
struct nscg_child_error {
    uint32_t abi;
    uint32_t stage;
    int32_t err;
    int32_t index;
    char syscall[24];
};

/* One step of the mount plan, executed in order inside the new root.
 * dest is relative to the new root ("" is the root itself); source is a path
 * in the caller's view (bind), a link target (symlink) or the content of a
 * file (size bytes); options are key, value pairs for fsconfig(2), ended by a
 * NULL key (a NULL value sets a flag). */
struct nscg_mount_op {
    uint32_t kind;
    uint32_t flags;
    uint32_t mode;
    uint32_t slot; /* SFS, SBIND, SLOT: the index of the kept mount */
    uint64_t size;
    const char *source;
    const char *dest;
    const char *fstype;
    char *const *options;
    int32_t fd_index; /* a bind: its slot in nscg_spawn_state.mount_fds, or -1 */
    uint32_t reserved;
};

/* Tests only: make stage `stage` (its op `index`, or any op: -1) fail with
 * errno `err` (child.h, FAULT_POINT). stage -1: none. */
struct nscg_fault {
    int32_t stage;
    int32_t err;
    int32_t index;
};

/* What a spawn writes while it runs: the parent's C (the children's stacks,
 * the status page) and the child (the fds it moves). The plan is const from
 * the spawn call on and never written; this struct is the spawn's own (one
 * per spawn, made zeroed by the caller with status_fd -1, kept as long as the
 * plan), and the plan points to it. */
struct nscg_spawn_state {
    uint64_t aux_stacks;              /* the stack region (see spawn.c) */
    uint64_t aux_stack_size;
    struct nscg_child_error *err_mem; /* NSCG_F_VFORK: the report goes here */
    struct nscg_shared *shared;       /* NSCG_F_MAKE_STATUS: the status page */
    int32_t status_fd;                /* its memfd, until the clone is done */
    /* the pipes nscg_spawn made (plan->make; -1: none): the child's ends
     * (its failure report; the go-ahead it waits for) and the caller's */
    int32_t err_fd;
    int32_t sync_fd;
    int32_t err_r;
    int32_t sync_w;
    /* one slot per bind (nscg_mount_op.fd_index): a detached mount made by
     * the parent (NSCG_MNT_FROM_FD), or NSCG_FD_NOT_OPENED for the child to
     * open (with NSCG_F_ROOT_EARLY it does so before it becomes root, see
     * nscg_open_bind_sources). The child moves the parent's fds above
     * fd_floor (close-on-exec) and writes the new numbers back */
    int32_t n_mount_fds;
    int32_t *mount_fds;
    /* the child's working memory for its fds (n_scratch ints): the moved
     * fdmap sources and joins, then the list of fds it keeps (its own
     * channels, the joins, the binds): n_fdmap + 2 * n_join + n_mount_fds +
     * NSCG_SCRATCH_CHANNELS at least, or the child fails at FDS (EOVERFLOW) */
    int32_t *scratch;
    int32_t n_scratch;
    uint32_t reserved;
};
#define NSCG_SCRATCH_CHANNELS 8

struct nscg_plan {
    uint32_t abi;
    uint32_t flags;
    uint64_t ns_new;
    int32_t cgroup_fd;
    int32_t parent_pidfd;
    int32_t pdeathsig;
    int32_t fd_floor;
    int32_t n_fdmap;
    int32_t n_join;
    const struct nscg_fdmap *fdmap;
    struct nscg_spawn_state *state;   /* written during the spawn: see above */
    const struct nscg_join *joins;
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    const char *hostname;
    const char *domainname;
    const char *timens_offsets;
    uint32_t uid;
    uint32_t gid;
    int32_t n_groups;
    int32_t n_rlimits;
    const uint32_t *groups;
    const struct nscg_rlimit *rlimits;
    int32_t init_fd;
    int32_t cap_last;
    struct nscg_fault fault;
    uint32_t reserved0;
    uint64_t cap_bounding;
    uint64_t cap_permitted;
    uint64_t cap_effective;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;
    const void *seccomp_filter;
    uint32_t seccomp_len;
    int32_t n_mounts;
    uint32_t mount_flags;
    uint32_t reserved1;
    const struct nscg_mount_op *mounts;
    const char *uid_map_text;         /* NSCG_F_PARENT_MAPS */
    const char *gid_map_text;
    uint32_t deny_setgroups;
    uint32_t reserved2;
    int32_t scratch_sock;             /* the scratch tmpfs's fd is sent here (or -1) */
    uint32_t reserved3;
    /* What the prepared plan assumed about the caller, checked by nscg_spawn
     * right before the clone, in the same call (NSCG_CHECK_*): a mismatch
     * clones nothing and sets nscg_spawn_out.stale; the caller prepares the
     * plan again and retries. So the per-spawn checks cost no trip of their
     * own out of Python (nor a wait for the GIL). */
    uint32_t checks;
    uint32_t reserved5;
    uint64_t key_cap_eff;     /* NSCG_CHECK_CAPS: the calling thread's effective set */
    /* NSCG_CHECK_SOCKETS: the path of every path socket /proc/net/unix
     * listed, each followed by '\n'; ended by a NUL (paths have none) */
    const char *unix_paths;
    /* The caller's fd slots (memory its guard keeps: an abort closes what is
     * in them). nscg_spawn makes the pipes of `make` there (their numbers
     * also go to state), closes the child's ends once the clone is done,
     * sync_w once the go-ahead is written (NSCG_F_PARENT_MAPS) and err_r at
     * EOF (the payload exec'd), each slot set to -1 as it is closed: no call
     * of the caller's own for them (each would be a release of the GIL). */
    int32_t *slots;
    uint32_t make;
    uint32_t reserved6;
};

struct nscg_spawn_out {
    int32_t pid;
    int32_t pidfd;
    int32_t err;
    uint32_t stage;
    char syscall[24];
    uint64_t stack_addr;
    uint64_t stack_size;
    /* NSCG_F_VFORK: the child's failure (stage 0: it exec'd) */
    struct nscg_child_error child_err;
    /* NSCG_F_PARENT_MAPS: errno of a failed write, and which file
     * (0 uid_map, 1 setgroups, 2 gid_map, 3 the go-ahead byte) */
    int32_t maps_err;
    uint32_t maps_file;
    /* NSCG_F_WAIT_EXEC: what the caller would have waited for */
    uint32_t exec_waited;   /* 1 once the waits are done (see interrupted) */
    int32_t first_status;   /* the first child's exit: code, or -signal */
    int32_t pid2;           /* with NSCG_F_FORK_PIDNS: the process it started */
    int32_t pidfd2;         /* its pidfd, or -1 / -errno */
    uint32_t rec_len;       /* bytes of child_err read from err_r (0: EOF) */
    uint32_t interrupted;   /* a Python signal handler raised during a wait:
                             * the spawn was aborted (nscg_spawn_abort) */
    uint32_t err_closed;    /* the caller's copy of err_fd is closed */
    uint32_t settled;       /* set by the caller: the sandbox was handed over
                             * to a Process, or the spawn aborted */
    struct nscg_shared *shared; /* NSCG_F_MAKE_STATUS: the mapped status page */
    uint32_t stale;             /* NSCG_CHECK_* bits that failed: nothing was cloned */
    uint32_t reserved;
    /* The peak RSS of the caller's memory (VmHWM, KiB), read once the
     * payload has exec'd (spawn.c, note_caller_peak). A task that execs from the caller's memory (every
     * task of ours does: CLONE_VM, or a copy of it) gets that memory's peak as
     * a floor of its ru_maxrss: Linux folds the high-water mark of the address
     * space a task leaves at execve into the process (exec_mmap). A reaped
     * maxrss above this floor is the payload's own; one at or below it cannot
     * be told from ours (nscg/process.py, Usage.max_rss). */
    int64_t caller_maxrss_kb;
};

struct nscg_wait_out {
    int32_t pid;
    int32_t code;
    int32_t status;
    int32_t has_status; /* nscg_reap with a status page: nscg-init's report */
    int32_t payload_status;
    int32_t reserved;
    int64_t utime_usec;
    int64_t stime_usec;
    int64_t maxrss_kb;
};

uint32_t nscg_abi_version(void);
const char *nscg_build_hash(void);
uint32_t nscg_clone_features(void);
int nscg_spawn(const struct nscg_plan *plan, struct nscg_spawn_out *out);
/* 0 if spawn.c has a path for these NSCG_F_* flags (one of the modes of
 * nscg/_spawn.py, choose_mode), else EINVAL: checked when a plan is prepared,
 * and again by nscg_spawn */
int nscg_check_flags(uint32_t flags);
int nscg_wait(int pidfd, int options, struct nscg_wait_out *out);
int nscg_reap(int pidfd, int options, struct nscg_wait_out *out, struct nscg_shared *page);
int nscg_pidfd_open(int pid);
int nscg_pidfd_send_signal(int pidfd, int sig);
void nscg_release_stack(uint64_t addr, uint64_t size);
int nscg_pipe(int32_t *fds);
int nscg_open(const char *path, int flags, int32_t *slot);
void nscg_close(int32_t *slot);
int nscg_spawn_wait(const struct nscg_plan *plan, struct nscg_spawn_out *out);
void nscg_spawn_abort(const struct nscg_plan *plan, struct nscg_spawn_out *out);
int nscg_cap_effective(uint64_t *out);
/* The parent's plain system calls (nscg/_host.py: no ctypes next to this
 * extension); each returns the call's result, or -errno. */
long nscg_sys_setns(int fd, int nstype);
long nscg_sys_unshare(int flags);
long nscg_sys_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
                    unsigned long arg5);
long nscg_sys_seccomp(unsigned int operation, unsigned int flags, void *args);
long nscg_sys_inotify_init1(int flags);
long nscg_sys_inotify_add_watch(int fd, const char *path, uint32_t mask);
struct nscg_shared *nscg_map_shared(int fd);
void nscg_unmap_shared(struct nscg_shared *page);
/* In the parent: a detached copy of the tree at path (open_tree
 * OPEN_TREE_CLONE [| AT_RECURSIVE]) with attr_set applied (mount_setattr),
 * idmapped through the user namespace userns_fd when it is >= 0. The mount fd
 * (close-on-exec) is stored in *out (C memory the spawn's abort closes) and
 * 0 returned, or -errno; *step says which call failed (0 open_tree, 1
 * mount_setattr). */
int nscg_detached_tree(const char *path, int recursive, uint64_t attr_set, int userns_fd, int *step,
                       int32_t *out);
