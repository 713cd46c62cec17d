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
 *
 * Two builds of the same behaviour, chosen by setup.py:
 *
 * - NSCG_INIT_NOLIBC (x86_64 and aarch64): no C library at all. Its own
 *   _start, raw system calls (syscall / svc #0), linked with -nostdlib
 *   -static. A statically linked glibc runs its whole start-up in every
 *   sandbox (CPU feature probing with CPUID, which traps to the hypervisor
 *   in a VM; IRELATIVE relocations; TLS; tunables); this build starts with
 *   the first system call below. Built -ffreestanding -fno-builtin: nothing
 *   here may become a memset/memcpy call (there is none to link against),
 *   and a link failure says so. It blocks all 64 signals (glibc's
 *   sigfillset leaves out its internal 32 and 33; to pid 1 of a namespace,
 *   unhandled signals are dropped either way).
 * - otherwise (another architecture, or a toolchain that cannot build the
 *   above): the same program on the C library, linked -static.
 */

/* Where the report goes in the status page: struct nscg_shared (abi.h, which
 * needs only <stdint.h>, a header even a freestanding build has). has_status
 * and payload_status are written together, {1, status}, by one pwrite. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* (the C library build: before its first header) */
#endif
#include <stddef.h>
#include <stdint.h>

#include "abi.h"

#define HAS_STATUS_OFFSET offsetof(struct nscg_shared, has_status)
_Static_assert(offsetof(struct nscg_shared, payload_status) == HAS_STATUS_OFFSET + 4 &&
                   sizeof(((struct nscg_shared *)0)->has_status) == 4 &&
                   sizeof(((struct nscg_shared *)0)->payload_status) == 4,
               "init.c writes {has_status, payload_status} as two adjacent 32-bit words");

#if defined(NSCG_INIT_NOLIBC) && !defined(__x86_64__) && !defined(__aarch64__)
#error "nscg-init: no libc-free build for this architecture (setup.py then builds it on the C library)"
#elif defined(NSCG_INIT_NOLIBC)

/* The kernel's ABI, the same numbers on x86_64 and aarch64 (no headers: a
 * freestanding build must not depend on the C library's). */
#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17
#define SIGWINCH 28
#define SIG_SETMASK 2
#define WNOHANG 1
#define PR_SET_NAME 15
#define KERNEL_SIGSET_SIZE 8 /* _NSIG / 8: the size the rt_* calls take */

#if defined(__x86_64__)
#define NR_pwrite64 18
#define NR_rt_sigprocmask 14
#define NR_wait4 61
#define NR_kill 62
#define NR_rt_sigtimedwait 128
#define NR_prctl 157
#define NR_exit_group 231
#define NR_close_range 436

static inline long sc(long n, long a, long b, long c, long d, long e)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

/* The kernel enters with argc at (%rsp), argv after it; rsp is 16-aligned. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start, %function\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call nscg_init_main\n"
        "    hlt\n"
        ".size _start, . - _start\n");

#elif defined(__aarch64__)
#define NR_pwrite64 68
#define NR_exit_group 94
#define NR_kill 129
#define NR_rt_sigprocmask 135
#define NR_rt_sigtimedwait 137
#define NR_prctl 167
#define NR_wait4 260
#define NR_close_range 436

static inline long sc(long n, long a, long b, long c, long d, long e)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    __asm__ volatile("svc #0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                     : "memory");
    return x0;
}

/* The kernel enters with argc at [sp], argv after it; sp is 16-aligned. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start, %function\n"
        "_start:\n"
        "    hint #34\n" /* bti c: a no-op unless the binary is marked for BTI */
        "    mov x29, #0\n"
        "    mov x30, #0\n"
        "    mov x0, sp\n"
        "    bl nscg_init_main\n"
        "    brk #0\n"
        ".size _start, . - _start\n");
#endif

_Static_assert(sizeof(int) == 4 && sizeof(long) == 8, "LP64");

/* The numbers above are the kernel's, written out; where its headers are at
 * hand (plain #defines, fine in a freestanding build) they are checked. */
#if __has_include(<asm/unistd.h>)
#include <asm/unistd.h>
_Static_assert(NR_pwrite64 == __NR_pwrite64 && NR_rt_sigprocmask == __NR_rt_sigprocmask &&
                   NR_wait4 == __NR_wait4 && NR_kill == __NR_kill &&
                   NR_rt_sigtimedwait == __NR_rt_sigtimedwait && NR_prctl == __NR_prctl &&
                   NR_exit_group == __NR_exit_group && NR_close_range == __NR_close_range,
               "init.c: system call numbers");
#endif

__attribute__((noreturn)) static void quit(int code)
{
    for (;;)
        sc(NR_exit_group, code, 0, 0, 0, 0);
}

static int forwarded(long sig)
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

/* strtol(s, &end, 10) that must consume all of s, as the C library build:
 * leading white space, a sign, at least one digit; -1 on anything else or on
 * overflow of a long. */
static long parse(const char *s)
{
    while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
        s++;
    int neg = *s == '-';
    if (*s == '-' || *s == '+')
        s++;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long limit = neg ? 0x8000000000000000UL : 0x7fffffffffffffffUL; /* -LONG_MIN, LONG_MAX */
    unsigned long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned long d = (unsigned long)(*s - '0');
        if (v > (limit - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (*s)
        return -1;
    return neg ? (long)(0 - v) : (long)v;
}

/* Called by _start with the initial stack pointer: argc, argv[], NULL, envp. */
__attribute__((noreturn, used)) void nscg_init_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    unsigned long all = ~0UL;
    sc(NR_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, KERNEL_SIGSET_SIZE, 0);
    if (argc != 3)
        quit(125);
    int payload = (int)parse(argv[1]);
    int status_fd = (int)parse(argv[2]);
    if (payload <= 0)
        quit(125);
    /* keep only the status fd */
    if (status_fd > 0)
        sc(NR_close_range, 0, (unsigned)status_fd - 1, 0, 0, 0);
    sc(NR_close_range, (unsigned)status_fd + 1, ~0U, 0, 0, 0);
    sc(NR_prctl, PR_SET_NAME, (long)"nscg-init", 0, 0, 0);
    for (;;) {
        /* sigwaitinfo(&all, NULL): no siginfo wanted, no timeout */
        long sig = sc(NR_rt_sigtimedwait, (long)&all, 0, 0, KERNEL_SIGSET_SIZE, 0);
        if (sig < 0)
            continue;
        if (sig == SIGCHLD) {
            int st;
            long w;
            while ((w = sc(NR_wait4, -1, (long)&st, WNOHANG, 0, 0)) > 0) {
                if (w != payload)
                    continue;
                if (status_fd >= 0) {
                    int rec[2] = {1, st};
                    sc(NR_pwrite64, status_fd, (long)rec, sizeof rec, HAS_STATUS_OFFSET, 0);
                }
                if ((st & 0x7f) == 0)        /* WIFEXITED */
                    quit((st >> 8) & 0xff);  /* WEXITSTATUS */
                quit(128 + (st & 0x7f));     /* WTERMSIG */
            }
        } else if (forwarded(sig)) {
            sc(NR_kill, payload, sig, 0, 0, 0);
        }
    }
}

#else /* the C library build */

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

#endif
