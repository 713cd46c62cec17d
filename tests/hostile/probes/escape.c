/* escape: try to get out of the sandbox the way an attacker would.
 *
 * Every attempt prints one line: "blocked WHAT: why" when the kernel or the
 * sandbox refused it, or "ESCAPED WHAT: how" when it worked. Nothing is ever
 * written to a host file: a successful open for writing is reported and the
 * fd closed at once. A seccomp filter that kills the process shows as a death
 * by SIGSYS instead (the i386 and x32 modes rely on that). Modes:
 *
 *   fds NAME            fds 3..4095 left open; NAME readable from the inherited
 *                       cwd; ".." from the cwd or from / leading above the root
 *   exe                 open /proc/PID/exe (every visible PID, and self) for
 *                       writing, chmod through it (CVE-2019-5736)
 *   exewatch SECONDS    the same, on every process that appears meanwhile
 *   ptrace PID          PTRACE_ATTACH/SEIZE, process_vm_readv, pidfd_open
 *   kill PID            kill(PID, SIGKILL), pidfd_open + pidfd_send_signal
 *   ns TYPE:INO...      setns into /proc/1/ns/NAME, unshare(CLONE_NEWxxx), and
 *                       whether any namespace is the host's (inode given)
 *   tty                 TIOCSTI, TIOCSCTTY, TIOCLINUX on fd 0
 *   x32 NR / i386 NR    syscall NR through the x32 ABI / int $0x80
 *   creds               after a setuid/file-capability exec: euid, caps
 *   cgroup              open every cgroup.procs/tasks/subtree_control for writing
 *   secrets NEKOT       TOKEN (given reversed) in any /proc/PID/environ or cmdline, kcore,
 *                       kmsg, kallsyms, syslog, keyctl, writable /proc/sys, /sys
 *   handle HEX          open_by_handle_at("/", HEX) (the "shocker" attack)
 *   gethandle PATH      print PATH's file handle as HEX (run on the host)
 *   root                "/.." and /proc/1/root, chroot("/.")
 *   mknod               block and char device nodes
 *   rlimit              raise every finite hard limit
 *   connect IP PORT     TCP connect
 *   unix NAME           connect to the abstract unix socket "\0NAME"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int escaped;

static void verdict(int ok, const char *what, const char *detail)
{
    if (ok) {
        escaped = 1;
        printf("ESCAPED %s: %s\n", what, detail);
    } else {
        printf("blocked %s: %s\n", what, detail);
    }
    fflush(stdout);
}

/* not an escape by itself (e.g. a step towards one), printed for the record */
static void note(long r, const char *what)
{
    if (r < 0)
        printf("note %s: errno %d (%s)\n", what, errno, strerror(errno));
    else
        printf("note %s: returned %ld\n", what, r);
    fflush(stdout);
}

/* r >= 0 is a success of the attacker */
static void attempt(long r, const char *what)
{
    char buf[64];
    if (r < 0)
        snprintf(buf, sizeof buf, "errno %d (%s)", errno, strerror(errno));
    else
        snprintf(buf, sizeof buf, "returned %ld", r);
    verdict(r >= 0, what, buf);
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int do_fds(const char *name)
{
    char what[300], link[256], path[64];
    for (int fd = 3; fd < 4096; fd++) {
        if (fcntl(fd, F_GETFD) < 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        link[n < 0 ? 0 : n] = 0;
        snprintf(what, sizeof what, "fd %d left open", fd);
        verdict(1, what, link);
    }
    verdict(0, "fds 3..4095", "all closed");
    ssize_t n = readlink("/proc/self/cwd", link, sizeof link - 1);
    link[n < 0 ? 0 : n] = 0;
    verdict(n < 0 || link[0] != '/', "cwd", link);
    snprintf(what, sizeof what, "open(\"%s\") from the inherited cwd", name);
    attempt(open(name, O_RDONLY), what);
    struct stat root, st;
    if (stat("/", &root) < 0)
        return 1;
    for (int i = 0; i < 64; i++)
        if (chdir("..") < 0)
            break;
    if (stat(".", &st) < 0)
        return 1;
    verdict(!same_file(&root, &st), "\"..\" x64 from the cwd", "compared with /");
    int dfd = open("/", O_PATH | O_DIRECTORY);
    for (int i = 0; i < 64 && dfd >= 0; i++) {
        int up = openat(dfd, "..", O_PATH | O_DIRECTORY);
        close(dfd);
        dfd = up;
    }
    if (dfd >= 0 && fstat(dfd, &st) == 0)
        verdict(!same_file(&root, &st), "openat(\"..\") x64 from /", "compared with /");
    return 0;
}

static int do_exe(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    char path[64], what[128];
    int tried = 0;
    while (d && (e = readdir(d))) {
        if ((e->d_name[0] < '0' || e->d_name[0] > '9') && strcmp(e->d_name, "self"))
            continue;
        snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
        snprintf(what, sizeof what, "open(%s, O_WRONLY)", path);
        int fd = open(path, O_WRONLY | O_APPEND);
        attempt(fd, what);
        if (fd >= 0)
            close(fd);
        fd = open(path, O_PATH);
        if (fd >= 0) {
            struct stat st;
            char via[64];
            snprintf(via, sizeof via, "/proc/self/fd/%d", fd);
            snprintf(what, sizeof what, "chmod(%s) to its own mode", path);
            if (fstat(fd, &st) == 0)
                attempt(chmod(via, st.st_mode & 07777), what);
            snprintf(what, sizeof what, "reopen O_PATH %s for writing", path);
            int w = open(via, O_WRONLY | O_APPEND);
            attempt(w, what);
            if (w >= 0)
                close(w);
            close(fd);
        }
        tried++;
    }
    verdict(tried == 0, "exe", "no /proc/PID/exe to try");
    return 0;
}

/* for SECONDS: every new process that shows up (one the host spawns into this
 * sandbox's namespaces) is tried the CVE-2019-5736 way while it exists */
static int do_exewatch(int seconds)
{
    char path[64], via[64], what[128];
    int seen = 0, handles = 0, hit = 0;
    pid_t self = getpid();
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += seconds;
    do {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self)
                continue;
            seen++;
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int fd = open(path, O_PATH);
            if (fd < 0)
                continue;
            handles++;
            struct stat st;
            snprintf(via, sizeof via, "/proc/self/fd/%d", fd);
            if (!hit && fstat(fd, &st) == 0 && chmod(via, st.st_mode & 07777) == 0) {
                char link[256];
                ssize_t n = readlink(via, link, sizeof link - 1);
                link[n < 0 ? 0 : n] = 0;
                snprintf(what, sizeof what, "chmod through %s", path);
                verdict(1, what, link);
                hit = 1;
            }
            close(fd);
        }
        if (d)
            closedir(d);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec < end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
    snprintf(what, sizeof what, "%d sightings of other processes, %d exe handles", seen, handles);
    printf("%s exewatch: %s\n", hit ? "ESCAPED" : "blocked", what);
    return 0;
}

static int do_ptrace(pid_t pid)
{
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    attempt(ptrace(PTRACE_ATTACH, pid, 0, 0), "PTRACE_ATTACH");
    attempt(ptrace(PTRACE_SEIZE, pid, 0, 0), "PTRACE_SEIZE");
    long r = syscall(SYS_process_vm_readv, pid, &local, 1, &remote, 1, 0);
    verdict(r >= 0 || (r < 0 && errno == EFAULT), "process_vm_readv", strerror(errno));
    return 0;
}

static int do_kill(pid_t pid)
{
    attempt(kill(pid, SIGKILL), "kill(SIGKILL)");
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    attempt(fd, "pidfd_open");
    if (fd >= 0)
        attempt(syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0), "pidfd_send_signal");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    fd = open(path, O_RDONLY | O_DIRECTORY);
    attempt(fd, "open /proc/PID of the host process");
    if (fd >= 0)
        attempt(syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0), "pidfd_send_signal(/proc/PID)");
    return 0;
}

static int do_ns(int argc, char **argv)
{
    static const char *names[] = {"user", "mnt", "pid", "net", "uts", "ipc", "cgroup"};
    static const int flags[] = {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
                                CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWCGROUP};
    char path[64], what[128];
    for (int i = 2; i < argc; i++) {
        char type[32];
        unsigned long ino;
        if (sscanf(argv[i], "%31[^:]:%lu", type, &ino) != 2)
            return 2;
        struct stat st;
        snprintf(path, sizeof path, "/proc/self/ns/%s", type);
        snprintf(what, sizeof what, "%s namespace is the host's", type);
        verdict(stat(path, &st) == 0 && st.st_ino == ino, what, path);
    }
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "/proc/1/ns/%s", names[i]);
        int fd = open(path, O_RDONLY);
        snprintf(what, sizeof what, "setns(%s)", path);
        if (fd >= 0) {
            attempt(setns(fd, 0), what);
            close(fd);
        }
        snprintf(what, sizeof what, "unshare(CLONE_NEW%s)", names[i]);
        attempt(unshare(flags[i]), what);
    }
    return 0;
}

static int do_tty(void)
{
    char c = 'X';
    attempt(ioctl(0, TIOCSTI, &c), "TIOCSTI on fd 0");
    note(ioctl(0, TIOCSCTTY, 0), "TIOCSCTTY (take fd 0 as controlling tty)");
    note(ioctl(0, TIOCSCTTY, 1), "TIOCSCTTY steal");
    attempt(ioctl(0, TIOCSTI, &c), "TIOCSTI after TIOCSCTTY");
    /* the kernel takes the command as an int: high bits that a 64-bit filter sees */
    attempt(syscall(SYS_ioctl, 0, 0x100000000UL | TIOCSTI, &c), "TIOCSTI with high bits set");
    char sel[] = {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    attempt(ioctl(0, TIOCLINUX, sel), "TIOCLINUX set selection");
    char paste = 3;
    attempt(ioctl(0, TIOCLINUX, &paste), "TIOCLINUX paste");
    int fd = open("/dev/tty", O_RDWR);
    note(fd, "open /dev/tty");
    if (fd >= 0)
        attempt(ioctl(fd, TIOCSTI, &c), "TIOCSTI on /dev/tty");
    return 0;
}

static int do_abi(const char *mode, long nr)
{
#if defined(__x86_64__)
    long r;
    if (!strcmp(mode, "x32")) {
        r = syscall(nr | 0x40000000L, CLONE_NEWUSER, 0, 0, 0, 0, 0);
    } else {
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(CLONE_NEWUSER) : "memory");
        r = ret < 0 && ret > -4096 ? (errno = (int)-ret, -1) : ret;
    }
    attempt(r, mode);
    return 0;
#else
    (void)nr;
    verdict(0, mode, "not x86_64");
    return 0;
#endif
}

static int do_creds(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256], what[300];
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    snprintf(what, sizeof what, "ruid %d euid %d suid %d", r, e, s);
    verdict(e != r || s != r, "setuid exec", what);
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Cap", 3)) {
            unsigned long long v = strtoull(strchr(line, ':') + 1, NULL, 16);
            line[strcspn(line, "\n")] = 0;
            verdict(v != 0 && strncmp(line, "CapBnd", 6), "capabilities after exec", line);
        }
    }
    return 0;
}

static int do_cgroup(void)
{
    static const char *files[] = {"cgroup.procs", "tasks", "cgroup.subtree_control",
                                  "cgroup.threads", "release_agent", "notify_on_release"};
    char path[512], what[600];
    DIR *top = opendir("/sys/fs/cgroup");
    struct dirent *e;
    int tried = 0;
    /* the root of the cgroupfs and of every hierarchy under it, and their children */
    while (top && (e = readdir(top))) {
        if (e->d_name[0] == '.' && strcmp(e->d_name, "."))
            continue;
        char base[300];
        snprintf(base, sizeof base, "/sys/fs/cgroup/%s", e->d_name);
        DIR *sub = opendir(base);
        struct dirent *s;
        while (sub && (s = readdir(sub))) {
            if (s->d_name[0] == '.' && strcmp(s->d_name, "."))
                continue;
            for (unsigned i = 0; i < sizeof files / sizeof *files; i++) {
                snprintf(path, sizeof path, "%s/%s/%s", base, s->d_name, files[i]);
                if (access(path, F_OK) < 0)
                    continue;
                int fd = open(path, O_WRONLY); /* never written */
                snprintf(what, sizeof what, "open(%s, O_WRONLY)", path);
                attempt(fd, what);
                if (fd >= 0)
                    close(fd);
                tried++;
            }
        }
        if (sub)
            closedir(sub);
    }
    snprintf(what, sizeof what, "%d cgroup files tried", tried);
    verdict(0, "cgroup", what);
    return 0;
}

static int file_has(const char *path, const char *token)
{
    char buf[65536];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    size_t tl = strlen(token);
    for (ssize_t i = 0; i + (ssize_t)tl <= n; i++)
        if (!memcmp(buf + i, token, tl))
            return 1;
    return 0;
}

static int do_secrets(const char *nekot)
{
    char token[128];
    size_t tl = strlen(nekot);
    if (tl >= sizeof token)
        return 2;
    for (size_t i = 0; i < tl; i++)
        token[i] = nekot[tl - 1 - i];
    token[tl] = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    char path[300], what[400];
    int pids = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        pids++;
        static const char *files[] = {"environ", "cmdline"};
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "/proc/%s/%s", e->d_name, files[i]);
            snprintf(what, sizeof what, "host token in %s", path);
            if (file_has(path, token))
                verdict(1, what, "found");
        }
    }
    snprintf(what, sizeof what, "%d visible pids scanned", pids);
    verdict(0, "host token in /proc/*/environ", what);
    verdict(getenv(token) != NULL || file_has("/proc/self/environ", token), "host token in env",
            "own environment");
    char buf[4096];
    int fd = open("/proc/kcore", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    attempt(n > 0 ? n : -1, "read /proc/kcore");
    fd = open("/proc/keys", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    verdict(n > 0, "read /proc/keys", n > 0 ? "keys listed" : "empty or refused");
    attempt(open("/proc/kmsg", O_RDONLY), "open /proc/kmsg");
    attempt(syscall(SYS_syslog, 3, buf, sizeof buf), "syslog(READ_ALL)");
    attempt(syscall(SYS_keyctl, 0, -4, 0), "keyctl(GET_KEYRING_ID, user)");
    attempt(syscall(SYS_add_key, "user", "nscg", "x", 1, -4), "add_key");
    /* kallsyms: non-zero addresses would defeat KASLR */
    FILE *f = fopen("/proc/kallsyms", "r");
    unsigned long long addr = 0;
    if (f && fscanf(f, "%llx", &addr) == 1)
        verdict(addr != 0, "kernel addresses in /proc/kallsyms", addr ? "non-zero" : "zeroed");
    static const char *wr[] = {"/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern",
                               "/proc/sys/vm/drop_caches",  "/proc/sysrq-trigger",
                               "/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run"};
    for (unsigned i = 0; i < sizeof wr / sizeof *wr; i++) {
        if (access(wr[i], F_OK) < 0)
            continue;
        fd = open(wr[i], O_WRONLY); /* never written */
        snprintf(what, sizeof what, "open(%s, O_WRONLY)", wr[i]);
        attempt(fd, what);
        if (fd >= 0)
            close(fd);
    }
    DIR *fw = opendir("/sys/firmware");
    int entries = 0;
    while (fw && (e = readdir(fw)))
        entries += e->d_name[0] != '.';
    verdict(entries > 0, "list /sys/firmware", entries ? "entries visible" : "masked");
    return 0;
}

static int do_handle(const char *hex, int mnt_fd)
{
    char buf[sizeof(struct file_handle) + 128];
    struct file_handle *h = (struct file_handle *)buf;
    unsigned type, bytes;
    int off;
    if (sscanf(hex, "%x:%u:%n", &type, &bytes, &off) != 2 || bytes > 128)
        return 2;
    h->handle_type = (int)type;
    h->handle_bytes = bytes;
    for (unsigned i = 0; i < bytes; i++)
        sscanf(hex + off + 2 * i, "%2hhx", &h->f_handle[i]);
    if (mnt_fd < 0)
        mnt_fd = open("/", O_RDONLY | O_DIRECTORY);
    attempt(open_by_handle_at(mnt_fd, h, O_RDONLY), "open_by_handle_at");
    return 0;
}

static int do_gethandle(const char *path)
{
    char buf[sizeof(struct file_handle) + 128];
    struct file_handle *h = (struct file_handle *)buf;
    int mnt;
    h->handle_bytes = 128;
    if (name_to_handle_at(AT_FDCWD, path, h, &mnt, 0) < 0)
        return perror("name_to_handle_at"), 1;
    printf("%x:%u:", (unsigned)h->handle_type, h->handle_bytes);
    for (unsigned i = 0; i < h->handle_bytes; i++)
        printf("%02x", h->f_handle[i]);
    printf("\n");
    return 0;
}

static int do_root(void)
{
    struct stat root, st;
    stat("/", &root);
    verdict(stat("/..", &st) == 0 && !same_file(&root, &st), "stat(\"/..\")", "compared with /");
    verdict(stat("/proc/1/root/", &st) == 0 && !same_file(&root, &st), "/proc/1/root",
            "compared with /");
    attempt(chroot("/."), "chroot(\"/.\")");
    attempt(chroot("/tmp"), "chroot(\"/tmp\")");
    attempt(syscall(SYS_pivot_root, "/", "/"), "pivot_root");
    attempt(umount2("/", MNT_DETACH), "umount2(\"/\")");
    attempt(mount("none", "/tmp", "tmpfs", 0, NULL), "mount tmpfs");
    attempt(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL), "remount / read-write");
    return 0;
}

static int do_mknod(void)
{
    attempt(mknod("/tmp/nscg-sda", S_IFBLK | 0600, makedev(8, 0)), "mknod block 8:0");
    attempt(mknod("/tmp/nscg-mem", S_IFCHR | 0600, makedev(1, 1)), "mknod char 1:1 (/dev/mem)");
    attempt(mknod("/dev/nscg-kmsg", S_IFCHR | 0600, makedev(1, 11)), "mknod in /dev");
    attempt(open("/dev/tty0", O_RDWR), "open /dev/tty0");
    attempt(open("/dev/vda", O_RDONLY), "open /dev/vda");
    return 0;
}

static int do_rlimit(void)
{
    char what[64];
    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit l;
        if (getrlimit(r, &l) < 0 || l.rlim_max == RLIM_INFINITY)
            continue;
        struct rlimit up = {l.rlim_max + 1, l.rlim_max + 1};
        snprintf(what, sizeof what, "raise hard limit %d above %llu", r,
                 (unsigned long long)l.rlim_max);
        attempt(setrlimit(r, &up), what);
        /* init keeps the caller's limits; lowering or raising them up to its
         * own hard limit is allowed to the same uid and changes nothing for
         * the payload, whose children inherit from it */
        note(prlimit(1, r, &up, NULL), "prlimit on pid 1");
    }
    verdict(0, "rlimit", "done");
    return 0;
}

static int do_connect(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char what[64];
    inet_pton(AF_INET, ip, &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    snprintf(what, sizeof what, "connect %s:%d", ip, port);
    attempt(connect(s, (struct sockaddr *)&a, sizeof a), what);
    return 0;
}

static int do_unix(const char *name)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n > sizeof a.sun_path - 1)
        return 2;
    memcpy(a.sun_path + 1, name, n);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    attempt(connect(s, (struct sockaddr *)&a, (socklen_t)(sizeof(sa_family_t) + 1 + n)),
            "connect to the host's abstract unix socket");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    const char *a = argc > 2 ? argv[2] : "";
    int rc;
    if (!strcmp(m, "fds"))
        rc = do_fds(a);
    else if (!strcmp(m, "exe"))
        rc = do_exe();
    else if (!strcmp(m, "exewatch"))
        rc = do_exewatch(atoi(a));
    else if (!strcmp(m, "ptrace"))
        rc = do_ptrace(atoi(a));
    else if (!strcmp(m, "kill"))
        rc = do_kill(atoi(a));
    else if (!strcmp(m, "ns"))
        rc = do_ns(argc, argv);
    else if (!strcmp(m, "tty"))
        rc = do_tty();
    else if (!strcmp(m, "x32") || !strcmp(m, "i386"))
        rc = do_abi(m, strtol(a, NULL, 0));
    else if (!strcmp(m, "creds"))
        rc = do_creds();
    else if (!strcmp(m, "cgroup"))
        rc = do_cgroup();
    else if (!strcmp(m, "secrets"))
        rc = do_secrets(a);
    else if (!strcmp(m, "handle"))
        rc = do_handle(a, -1);
    else if (!strcmp(m, "gethandle"))
        rc = do_gethandle(a);
    else if (!strcmp(m, "root"))
        rc = do_root();
    else if (!strcmp(m, "mknod"))
        rc = do_mknod();
    else if (!strcmp(m, "rlimit"))
        rc = do_rlimit();
    else if (!strcmp(m, "connect") && argc == 4)
        rc = do_connect(a, atoi(argv[3]));
    else if (!strcmp(m, "unix"))
        rc = do_unix(a);
    else
        return 2;
    return rc ? rc : (escaped ? 3 : 0);
}
