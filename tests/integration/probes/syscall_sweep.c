/* syscall_sweep: make many raw system calls, each in a forked child, and print
 * what each did. Used to compare a seccomp-filtered sandbox with an unfiltered one.
 *
 *   syscall_sweep PLAN
 *
 * PLAN has one call per line: "NR A0 A1 A2 A3 A4 A5", each argument a number
 * (strtoul base 0) or "Z", a pointer to a zeroed, page-aligned 4 KiB buffer. For
 * each line it prints "NR ok", "NR errno N", "NR signal N" (the child died of a
 * signal before reporting), "NR exit N" (it exited without reporting, e.g. exit)
 * or "NR timeout" (killed after 10 s).
 *
 * Before the calls, fd 0 becomes the read end of a pipe this probe made (its
 * write end stays open): calls given fd 0 act on that pipe, never on a file the
 * sandbox shares with the host. Each child arms alarm(5) so a call that blocks
 * ends as "signal 14".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char zero_page[4096] __attribute__((aligned(4096)));

static unsigned long parse_arg(const char *tok)
{
    if (!strcmp(tok, "Z"))
        return (unsigned long)zero_page;
    return strtoul(tok, NULL, 0);
}

static void one(long nr, unsigned long a[6])
{
    int res[2];
    if (pipe(res) < 0) {
        printf("%ld probe-error %d\n", nr, errno);
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("%ld probe-error %d\n", nr, errno);
        close(res[0]);
        close(res[1]);
        return;
    }
    if (pid == 0) {
        close(res[0]);
        alarm(5);
        errno = 0;
        long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        int e = r == -1 ? errno : 0;
        if (write(res[1], &e, sizeof e) != (ssize_t)sizeof e)
            _exit(125);
        _exit(0);
    }
    close(res[1]);
    int e = -1;
    struct pollfd p = {.fd = res[0], .events = POLLIN};
    int timed_out = 0;
    if (poll(&p, 1, 10000) == 0) {
        kill(pid, SIGKILL);
        timed_out = 1;
    } else if (read(res[0], &e, sizeof e) != (ssize_t)sizeof e) {
        e = -1;
    }
    close(res[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (timed_out)
        printf("%ld timeout\n", nr);
    else if (e == 0)
        printf("%ld ok\n", nr);
    else if (e > 0)
        printf("%ld errno %d\n", nr, e);
    else if (WIFSIGNALED(status))
        printf("%ld signal %d\n", nr, WTERMSIG(status));
    else
        printf("%ld exit %d\n", nr, WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    FILE *plan = fopen(argv[1], "r");
    if (!plan)
        return 3;
    int fds[2];
    if (pipe(fds) < 0 || dup2(fds[0], 0) < 0)
        return 4;
    char line[512];
    while (fgets(line, sizeof line, plan)) {
        char *save = NULL;
        char *tok = strtok_r(line, " \t\n", &save);
        if (!tok)
            continue;
        long nr = strtol(tok, NULL, 0);
        unsigned long a[6] = {0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 6 && (tok = strtok_r(NULL, " \t\n", &save)); i++)
            a[i] = parse_arg(tok);
        one(nr, a);
    }
    fclose(plan);
    fflush(stdout);
    return 0;
}
