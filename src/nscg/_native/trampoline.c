/* Starting a task on a stack of its own, sharing the caller's memory.
 *
 * clone3(2) with CLONE_VM gives the child a new stack pointer but returns into
 * the same code: a child that returned from a C wrapper would pop the
 * parent's return address off a stack it does not own. So the child side is
 * written in assembly: right after the system call it calls fn(arg) on its
 * new stack and, should fn ever return, exits. glibc's clone() does the same
 * for the legacy clone(2) call, which is the fallback (no CLONE_INTO_CGROUP).
 */
#include "nscg.h"

long nscg_clone3_run(struct nscg_clone_args *args, void (*fn)(void *), void *arg)
{
#if defined(__x86_64__)
    register long rax __asm__("rax") = SYS_clone3;
    register void *rdi __asm__("rdi") = args;
    register unsigned long rsi __asm__("rsi") = sizeof *args;
    register void (*r12)(void *) __asm__("r12") = fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "and $-16, %%rsp\n\t"
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov $60, %%eax\n\t" /* exit */
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "+r"(rax)
                     : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
                     : "rcx", "r11", "memory", "cc");
    return rax;
#elif defined(__aarch64__)
    register long x0 __asm__("x0") = (long)args;
    register long x1 __asm__("x1") = (long)sizeof *args;
    register long x8 __asm__("x8") = SYS_clone3;
    register void (*x19)(void *) __asm__("x19") = fn;
    register void *x20 __asm__("x20") = arg;
    __asm__ volatile("svc #0\n\t"
                     "cbnz x0, 1f\n\t"
                     "mov x29, xzr\n\t"
                     "mov x0, x20\n\t"
                     "blr x19\n\t"
                     "mov x8, #93\n\t" /* exit */
                     "svc #0\n\t"
                     "1:\n\t"
                     : "+r"(x0)
                     : "r"(x1), "r"(x8), "r"(x19), "r"(x20)
                     : "x30", "memory", "cc");
    return x0;
#endif /* (no other architecture builds: nscg.h) */
}
