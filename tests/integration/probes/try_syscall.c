/* try_syscall: make one system call the way an attacker would and print the
 * outcome ("ok" or "errno N"). A filter that kills the process shows as a
 * death by SIGSYS instead. Modes:
 *   socket DOMAIN      socket(DOMAIN, SOCK_STREAM, 0)
 *   nr NR              syscall(NR) with zero arguments
 *   x32 NR             syscall(NR | __X32_SYSCALL_BIT)          (x86_64 only)
 *   i386 NR            int $0x80 with eax = NR                    (x86_64 only)
 *   bind PORT          bind an AF_INET TCP socket to 127.0.0.1:PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long r)
{
    if (r < 0)
        printf("errno %d\n", errno);
    else
        printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long v = strtol(argv[2], NULL, 0);
    if (!strcmp(argv[1], "socket"))
        return report(socket((int)v, SOCK_STREAM, 0));
    if (!strcmp(argv[1], "nr"))
        return report(syscall(v, 0, 0, 0, 0, 0, 0));
    if (!strcmp(argv[1], "bind")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)v);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return report(s < 0 ? -1 : bind(s, (struct sockaddr *)&a, sizeof a));
    }
#if defined(__x86_64__)
    if (!strcmp(argv[1], "x32"))
        return report(syscall(v | 0x40000000L, 0, 0, 0, 0, 0, 0));
    if (!strcmp(argv[1], "i386")) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(v), "b"(0), "c"(0), "d"(0) : "memory");
        if (r < 0) {
            errno = (int)-r;
            r = -1;
        }
        return report(r);
    }
#endif
    return 2;
}
