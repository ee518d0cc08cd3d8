/*
 * Test-only LD_PRELOAD shim: dma-heaps and udmabuf for a machine whose kernel has neither.
 *
 * A Raspberry Pi's kernel offers /dev/dma_heap/{linux,cma,vidbuf_cached,system} (and often
 * /dev/udmabuf): libcamera and picamera2 allocate their frame buffers there. The test VM's kernel
 * has none, so the real picamera2 and libcamera code could not allocate a single buffer. This
 * stands in for exactly those device nodes and nothing else:
 *
 *   open("/dev/dma_heap/..." or "/dev/udmabuf") -> a memfd standing for the allocator
 *   ioctl(heap, DMA_HEAP_IOCTL_ALLOC)             -> a new memfd of the asked length
 *   ioctl(udmabuf, UDMABUF_CREATE)                -> a duplicate of the caller's memfd
 *   ioctl(memfd, DMA_BUF_IOCTL_SYNC | SET_NAME)   -> 0 (a memfd is always coherent; names are cosmetic)
 *
 * Every other call goes to the C library untouched. Built by the tests (tests/camera_stack.py) and
 * never installed with the appliance.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/udmabuf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEAP_NAME "fake-dma-heap"
#define UDMABUF_NAME "fake-udmabuf"

static int is_faked_path(const char *path)
{
	return path && (strncmp(path, "/dev/dma_heap/", 14) == 0 || strcmp(path, "/dev/udmabuf") == 0);
}

static int provider(const char *path, int flags)
{
	const char *name = strcmp(path, "/dev/udmabuf") == 0 ? UDMABUF_NAME : HEAP_NAME;
	return memfd_create(name, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
}

/* The memfd's name, from /proc/self/fd: "/memfd:NAME (deleted)"; empty when fd is no memfd. */
static void memfd_name(int fd, char *name, size_t size)
{
	char link[64], target[256];
	ssize_t length;

	name[0] = '\0';
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	length = readlink(link, target, sizeof(target) - 1);
	if (length <= 0)
		return;
	target[length] = '\0';
	if (strncmp(target, "/memfd:", 7) != 0)
		return;
	snprintf(name, size, "%s", target + 7);
	char *tail = strstr(name, " (deleted)");
	if (tail)
		*tail = '\0';
}

#define OPEN_WRAPPER(fn, ...)                                                          \
	int fn(const char *path, int flags, ...)                                       \
	{                                                                              \
		static int (*real)(const char *, int, ...);                            \
		mode_t mode = 0;                                                       \
		if (flags & (O_CREAT | O_TMPFILE)) {                                   \
			va_list args;                                                  \
			va_start(args, flags);                                         \
			mode = va_arg(args, mode_t);                                   \
			va_end(args);                                                  \
		}                                                                      \
		if (is_faked_path(path))                                               \
			return provider(path, flags);                                  \
		if (!real)                                                             \
			real = dlsym(RTLD_NEXT, #fn);                                  \
		return real(path, flags, mode);                                        \
	}

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(fn)                                                             \
	int fn(int dirfd, const char *path, int flags, ...)                            \
	{                                                                              \
		static int (*real)(int, const char *, int, ...);                       \
		mode_t mode = 0;                                                       \
		if (flags & (O_CREAT | O_TMPFILE)) {                                   \
			va_list args;                                                  \
			va_start(args, flags);                                         \
			mode = va_arg(args, mode_t);                                   \
			va_end(args);                                                  \
		}                                                                      \
		if (is_faked_path(path))                                               \
			return provider(path, flags);                                  \
		if (!real)                                                             \
			real = dlsym(RTLD_NEXT, #fn);                                  \
		return real(dirfd, path, flags, mode);                                 \
	}

OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

/* _FORTIFY_SOURCE builds call these for open(path, flags) without a mode. */
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real)(int, unsigned long, ...);
	char name[256];
	va_list args;
	void *arg;

	va_start(args, request);
	arg = va_arg(args, void *);
	va_end(args);
	if (!real)
		real = dlsym(RTLD_NEXT, "ioctl");

	if (request == DMA_HEAP_IOCTL_ALLOC || request == UDMABUF_CREATE || _IOC_TYPE(request) == DMA_BUF_BASE) {
		memfd_name(fd, name, sizeof(name));
		if (request == DMA_HEAP_IOCTL_ALLOC && strcmp(name, HEAP_NAME) == 0) {
			struct dma_heap_allocation_data *alloc = arg;
			int buffer = memfd_create("fake-dma-buf", (alloc->fd_flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
			if (buffer < 0)
				return -1;
			if (ftruncate(buffer, (off_t)alloc->len) < 0) {
				close(buffer);
				errno = ENOMEM;
				return -1;
			}
			alloc->fd = (unsigned int)buffer;
			return 0;
		}
		if (request == UDMABUF_CREATE && strcmp(name, UDMABUF_NAME) == 0) {
			struct udmabuf_create *create = arg;
			return fcntl((int)create->memfd, (create->flags & UDMABUF_FLAGS_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
		}
		if (_IOC_TYPE(request) == DMA_BUF_BASE && name[0] != '\0')
			return 0;
	}
	return real(fd, request, arg);
}
