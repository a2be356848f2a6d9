/*
 * freestanding.h: the little of a C library that tinysrv.c uses, for its
 * freestanding build on Linux x86_64 and aarch64 (see bench/child.go):
 *
 *   cc -DTINYSRV_FREESTANDING -O2 -Wall -Wextra -static -nostdlib \
 *      -fno-stack-protector -fno-builtin -fno-asynchronous-unwind-tables
 *
 * Why: before main, a static glibc program runs glibc's start-up, whose CPU
 * feature detection executes CPUID instructions; on a VM each one traps to
 * the hypervisor, which costs more than all the rest of the child's start.
 * That cost is the same under every supervisor and, with hundreds of
 * children starting on two cores, hides the supervisors' own differences,
 * which are what the bench compares.
 *
 * tinysrv.c includes the usual system headers before this file, for their
 * constants and structs (-nostdlib only changes linking); this file then
 * defines the functions they declare and tinysrv.c calls, with the same
 * prototypes, so the compiler checks that both builds call the same thing.
 * It has raw system calls, errno, getenv, a strerror that knows the errors
 * tinysrv can report, memset and memcpy, and a _start that calls main and
 * exits with its value. So little is enough because tinysrv is single
 * threaded and installs no signal handler, and nothing sets up thread-local
 * storage, which is why it is built with -fno-stack-protector: the stack
 * protector's canary lives there.
 */
#ifndef TINYSRV_FREESTANDING_H
#define TINYSRV_FREESTANDING_H

#if !defined(__linux__) || !(defined(__x86_64__) || defined(__aarch64__)) || defined(__ILP32__) || \
	__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the freestanding tinysrv is for Linux x86_64 and aarch64 only: build it without -DTINYSRV_FREESTANDING"
#endif

#include <sys/syscall.h>

int main(int argc, char **argv);

/* sys6 makes system call n with up to six arguments (unused ones are 0)
 * and returns what the kernel does: a result, or -errno. */
#if defined(__x86_64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	/* syscall overwrites rcx (return address) and r11 (flags). */
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#else
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
#endif

/* <errno.h> defines errno as (*__errno_location ()); one thread, so one
 * variable. */
static int ts_errno;

int *__errno_location(void)
{
	return &ts_errno;
}

/* sys is sys6 the C library's way: the kernel's -4095 to -1 are an error,
 * returned as -1 with errno set. */
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
	long r = sys6(n, a, b, c, d, e, f);

	if (r < 0 && r > -4096) {
		ts_errno = (int)-r;
		return -1;
	}
	return r;
}

int socket(int domain, int type, int protocol)
{
	return (int)sys(__NR_socket, domain, type, protocol, 0, 0, 0);
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	return (int)sys(__NR_setsockopt, fd, level, name, (long)val, (long)len, 0);
}

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	return (int)sys(__NR_bind, fd, (long)sa, (long)len, 0, 0, 0);
}

int listen(int fd, int backlog)
{
	return (int)sys(__NR_listen, fd, backlog, 0, 0, 0, 0);
}

int accept(int fd, struct sockaddr *restrict sa, socklen_t *restrict len)
{
	return (int)sys(__NR_accept, fd, (long)sa, (long)len, 0, 0, 0);
}

/* Linux has no send system call: send is sendto without an address. */
ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	return sys(__NR_sendto, fd, (long)buf, (long)len, flags, 0, 0);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	return sys(__NR_write, fd, (long)buf, (long)len, 0, 0, 0);
}

int close(int fd)
{
	return (int)sys(__NR_close, fd, 0, 0, 0, 0, 0);
}

pid_t getpid(void)
{
	return (pid_t)sys(__NR_getpid, 0, 0, 0, 0, 0, 0);
}

/* The environment, as _start found it after argv. */
static char **ts_environ;

/* getenv returns the value of the first name=value entry, as glibc's. */
char *getenv(const char *name)
{
	char **e;
	size_t i;

	for (e = ts_environ; e != NULL && *e != NULL; e++) {
		for (i = 0; name[i] != '\0' && (*e)[i] == name[i]; i++)
			;
		if (name[i] == '\0' && (*e)[i] == '=')
			return *e + i + 1;
	}
	return NULL;
}

/* The errors socket, setsockopt, bind, listen and accept can report that
 * tinysrv does not retry, worded as glibc's strerror and Go's syscall
 * package word them; any other is "errno N". */
static const struct {
	int err;
	const char *text;
} ts_errors[] = {
	{ EADDRINUSE, "address already in use" },
	{ EADDRNOTAVAIL, "cannot assign requested address" },
	{ EACCES, "permission denied" },
	{ EPERM, "operation not permitted" },
	{ EAFNOSUPPORT, "address family not supported by protocol" },
	{ EMFILE, "too many open files" },
	{ ENFILE, "too many open files in system" },
	{ ENOBUFS, "no buffer space available" },
	{ ENOMEM, "cannot allocate memory" },
	{ EINVAL, "invalid argument" },
	{ EBADF, "bad file descriptor" },
};

char *strerror(int err)
{
	static char unknown[sizeof "errno 4294967295"] = "errno ";
	char digits[10];
	unsigned int v = (unsigned int)err;
	size_t i, n = 0;

	for (i = 0; i < sizeof ts_errors / sizeof ts_errors[0]; i++)
		if (ts_errors[i].err == err)
			return (char *)ts_errors[i].text;
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (i = sizeof "errno " - 1; n > 0; i++)
		unknown[i] = digits[--n];
	unknown[i] = '\0';
	return unknown;
}

/* The compiler may call memset and memcpy for a struct's zeroing or copy,
 * even with -fno-builtin. The volatile stores keep it from turning these
 * loops into calls to themselves. */
void *memset(void *dst, int c, size_t n)
{
	volatile unsigned char *d = dst;

	while (n-- > 0)
		*d++ = (unsigned char)c;
	return dst;
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
	volatile unsigned char *d = dst;
	const unsigned char *s = src;

	while (n-- > 0)
		*d++ = *s++;
	return dst;
}

/* glibc's <netinet/in.h> makes htons and htonl inline when optimizing;
 * otherwise (-O0, or other headers) they are functions to provide. Only
 * little-endian machines get here. */
#ifndef htons
uint16_t htons(uint16_t v)
{
	return (uint16_t)(v << 8 | v >> 8);
}
#endif
#ifndef htonl
uint32_t htonl(uint32_t v)
{
	return v << 24 | (v & 0xff00) << 8 | (v >> 8 & 0xff00) | v >> 24;
}
#endif

/* ts_start is what _start calls with the initial stack: argc, the argv
 * pointers and a null, the environment pointers and a null (then the
 * auxiliary vector, which tinysrv does not need). */
__attribute__((noreturn, used)) void ts_start(long *sp);

void ts_start(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);

	ts_environ = argv + argc + 1;
	sys6(__NR_exit_group, main(argc, argv), 0, 0, 0, 0, 0);
	__builtin_unreachable();
}

/* _start is where the kernel starts the program, with the stack pointer
 * at argc. It clears the frame pointer (and link register), so debuggers
 * see the outermost frame, and calls ts_start with the stack aligned as
 * the calling convention wants (16 bytes; the kernel already aligns it on
 * aarch64). */
#if defined(__x86_64__)
__asm__(".text\n"
	".globl _start\n"
	".type _start, %function\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call ts_start\n"
	"	hlt\n");
#else
__asm__(".text\n"
	".globl _start\n"
	".type _start, %function\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl ts_start\n"
	"	brk #0\n");
#endif

#endif
