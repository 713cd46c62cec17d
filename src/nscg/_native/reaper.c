/* pid 1 of a new pid namespace (a minimal init: tini / catatonit semantics),
 * also used as the forwarder between the caller and a payload that had to be
 * forked into a pid namespace the child joined.
 *
 * It closes every fd, keeps every signal blocked and waits with sigwaitinfo:
 * SIGCHLD reaps every child (orphans included); SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the payload. When
 * the payload is reaped, its raw wait status goes to the shared page (so the
 * parent sees "killed by signal N", which an exit code of pid 1 cannot say),
 * and the reaper exits with the matching exit code; as pid 1 its exit makes
 * the kernel kill whatever is left in the namespace.
 */
#include "nscg.h"

#include <sys/prctl.h>
#include <sys/wait.h>

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

void nscg_reaper(const struct nscg_plan *p, pid_t payload, const sigset_t *oldmask)
{
    sigset_t all;
    (void)oldmask;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    syscall(SYS_close_range, 0U, ~0U, 0U);
    prctl(PR_SET_NAME, (unsigned long)"nscg-init", 0, 0, 0);
    if (p->shared)
        p->shared->payload_pid = payload;
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
                if (p->shared) {
                    p->shared->payload_status = st;
                    __atomic_store_n(&p->shared->has_status, 1, __ATOMIC_RELEASE);
                }
                if (WIFEXITED(st))
                    _exit(WEXITSTATUS(st));
                _exit(128 + WTERMSIG(st));
            }
        } else if (forwarded(sig)) {
            kill(payload, sig);
        }
    }
}
