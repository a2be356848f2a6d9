/*
 * tinysrv, in C: the tiny child the bench runs under every supervisor by
 * default (see bench/README.md, "The child"). It behaves like the Go one in
 * bench/tinysrv: it listens on 127.0.0.1:<port> (argv[1], else $PORT, else
 * $ALLEX_TCP_PORT) and answers each connection with its pid and a newline
 * before closing it, so the bench can tell a replacement from the process it
 * killed without asking the supervisor. It only returns on failure (exit 1
 * with a message on stderr, worded as the Go one's): a supervisor stops it
 * by signal.
 *
 * It exists because a Go binary's runtime start costs CPU, a constant
 * that is the same under every supervisor and hides their differences when
 * hundreds of children start on a small machine; this one starts in a
 * fraction of that.
 *
 * One source, two builds (bench/child.go picks one):
 *
 * - freestanding, on Linux x86_64 and aarch64: no C library at all, with
 *   freestanding.h providing the few functions used, built with
 *   cc -DTINYSRV_FREESTANDING -O2 -Wall -Wextra -static -nostdlib
 *      -fno-stack-protector -fno-builtin -fno-asynchronous-unwind-tables
 *   On a VM a static glibc start spends more CPU detecting the CPU (see
 *   freestanding.h) than this build's whole start.
 * - with the C library, plain POSIX C, anywhere else or with -child libc:
 *   cc -O2 -Wall -Wextra -static (without -static when there is no static
 *   C library).
 *
 * So that both builds behave the same, it uses no stdio (it formats its
 * few lines itself) and no signal handling (send with MSG_NOSIGNAL), only
 * system calls, getenv and strerror. This directory holds no Go files, so
 * the go tool ignores it.
 */
#define _POSIX_C_SOURCE 200809L

#ifdef TINYSRV_FREESTANDING
/* Some compilers define it by default (Ubuntu's gcc); the checked
 * functions it swaps in are the C library's. */
#undef _FORTIFY_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#ifdef TINYSRV_FREESTANDING
#include "freestanding.h"
#endif

#define USAGE "want a port as argv[1], $PORT or $ALLEX_TCP_PORT"

/* parse_port returns the port s holds (decimal digits only, 1 to 65535), or
 * -1. Port 0 is refused: it would listen on a port nobody asked for. */
static int parse_port(const char *s)
{
	long v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	return v == 0 ? -1 : (int)v;
}

/* first_set is the first of a, b, c that is set and not empty. */
static const char *first_set(const char *a, const char *b, const char *c)
{
	if (a != NULL && *a != '\0')
		return a;
	if (b != NULL && *b != '\0')
		return b;
	return c;
}

/* line is a line of output built in memory, sent with one write. Too
 * long a line is cut; none of tinysrv's comes close. */
struct line {
	char buf[160];
	size_t len;
};

static void put(struct line *l, const char *s)
{
	while (*s != '\0' && l->len < sizeof l->buf)
		l->buf[l->len++] = *s++;
}

static void put_uint(struct line *l, unsigned long v)
{
	char digits[20];
	size_t n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	while (n > 0 && l->len < sizeof l->buf)
		l->buf[l->len++] = digits[--n];
}

/* put_error appends strerror's text for err with its first letter in lower
 * case, as Go prints it: glibc says "Address already in use", Go and
 * freestanding.h "address already in use", so all the builds of the child
 * print the same line. */
static void put_error(struct line *l, int err)
{
	size_t first = l->len;

	put(l, strerror(err));
	if (first < l->len && l->buf[first] >= 'A' && l->buf[first] <= 'Z')
		l->buf[first] = (char)(l->buf[first] - 'A' + 'a');
}

/* say writes l to stderr. It is only called on the way out, so a failed
 * write has nowhere to be reported. */
static void say(const struct line *l)
{
	size_t off = 0;

	while (off < l->len) {
		ssize_t n = write(2, l->buf + off, l->len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* fail says "tinysrv: op[ tcp 127.0.0.1:port]: [call: ]<error>", the shape
 * of Go's net errors, and returns main's exit status 1. */
static int fail(const char *op, int port, const char *call, int err)
{
	struct line l;

	l.len = 0;
	put(&l, "tinysrv: ");
	put(&l, op);
	if (port > 0) {
		put(&l, " tcp 127.0.0.1:");
		put_uint(&l, (unsigned long)port);
	}
	put(&l, ": ");
	if (call != NULL) {
		put(&l, call);
		put(&l, ": ");
	}
	put_error(&l, err);
	put(&l, "\n");
	say(&l);
	return 1;
}

/* accept_again says whether an accept error only concerns the connection
 * being accepted (or a signal), so the listener keeps going. Linux reports
 * pending network errors of the new connection through accept (see
 * accept(2)); Go's net package retries on the same ones. */
static int accept_again(int err)
{
	switch (err) {
	case EINTR:
	case EAGAIN:
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
	case ECONNABORTED:
	case EPROTO:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ENOPROTOOPT:
	case EOPNOTSUPP:
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
	case ENOTSUP:
#endif
#ifdef EHOSTDOWN
	case EHOSTDOWN:
#endif
#ifdef ENONET
	case ENONET:
#endif
		return 1;
	default:
		return 0;
	}
}

/* answer sends msg to fd; a failed send only means the prober already
 * left. MSG_NOSIGNAL makes sending to a closed connection fail with EPIPE
 * instead of raising SIGPIPE, which would kill the process, so tinysrv
 * needs no signal handling. */
static void answer(int fd, const char *msg, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, msg, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		msg += n;
		len -= (size_t)n;
	}
}

int main(int argc, char **argv)
{
	const char *arg = first_set(argc > 1 ? argv[1] : NULL, getenv("PORT"), getenv("ALLEX_TCP_PORT"));
	int port = parse_port(arg);
	struct sockaddr_in sin;
	struct line msg;
	int fd, one = 1;

	if (port < 0) {
		msg.len = 0;
		put(&msg, "tinysrv: " USAGE "\n");
		say(&msg);
		return 1;
	}

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return fail("socket", 0, NULL, errno);
	/* As Go's net.Listen does: a replacement may bind the port while the
	 * killed child's connections are still in TIME_WAIT. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
		return fail("setsockopt SO_REUSEADDR", 0, NULL, errno);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
		return fail("listen", port, "bind", errno);
	/* Linux caps the backlog at net.core.somaxconn, the value Go uses. */
	if (listen(fd, 65535) != 0)
		return fail("listen", port, "listen", errno);

	/* The answer, the same for every connection. */
	msg.len = 0;
	put_uint(&msg, (unsigned long)getpid());
	put(&msg, "\n");
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (accept_again(errno))
				continue;
			return fail("accept", port, NULL, errno);
		}
		answer(c, msg.buf, msg.len);
		close(c);
	}
}
