/* nscg-init: pid 1 of a sandbox's pid namespace (tini / catatonit semantics).
 *
 *     nscg-init PAYLOAD_PID STATUS_FD
 *
 * A small static program, exec'd by the sandbox's first process right after
 * it started the payload (so the init holds none of the caller's memory). It
 * closes every other fd, keeps every signal blocked and waits with
 * sigwaitinfo: SIGCHLD reaps every child (orphans included); SIGINT, SIGTERM,
 * SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the
 * payload. When the payload is reaped its raw wait status is written to
 * STATUS_FD (a memfd the caller has mapped: "killed by signal N" cannot be said
 * by pid 1's own exit code), and the init exits with the matching code; as pid
 * 1 its exit makes the kernel kill whatever is left in the namespace.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* offsets in struct nscg_shared (abi.h) */
#define HAS_STATUS_OFFSET 4

static int forwarded(int sig)
{
    switch (sig) {
    case SIGINT:
    case SIGTERM:
    case SIGHUP:
    case SIGQUIT:
    case SIGUSR1:
    case SIGUSR2:
    case SIGWINCH:
        return 1;
    default:
        return 0;
    }
}

static long parse(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return (errno || *end || end == s) ? -1 : v;
}

int main(int argc, char **argv)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (argc != 3)
        return 125;
    pid_t payload = (pid_t)parse(argv[1]);
    int status_fd = (int)parse(argv[2]);
    if (payload <= 0)
        return 125;
    /* keep only the status fd */
    if (status_fd > 0)
        syscall(SYS_close_range, 0U, (unsigned)status_fd - 1, 0U);
    syscall(SYS_close_range, (unsigned)status_fd + 1, ~0U, 0U);
    prctl(PR_SET_NAME, (unsigned long)"nscg-init", 0, 0, 0);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue;
        if (sig == SIGCHLD) {
            int st;
            pid_t w;
            while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
                if (w != payload)
                    continue;
                if (status_fd >= 0) {
                    int32_t rec[2] = {1, st};
                    (void)!pwrite(status_fd, rec, sizeof rec, HAS_STATUS_OFFSET);
                }
                if (WIFEXITED(st))
                    return WEXITSTATUS(st);
                return 128 + WTERMSIG(st);
            }
        } else if (forwarded(sig)) {
            kill(payload, sig);
        }
    }
}
