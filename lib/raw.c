/* The raw serializer and ip_bytes buffers, including the in-place path: in a task's child a
 * large ip_bytes_alloc() lives in a memfd, so the parent can map the result instead of
 * receiving a copy through the socket. ip_bytes_inplace() seals such a buffer for any
 * serializer's inplace hook; the raw serializer's hook is just that. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>

#define BOX_MAGIC 0x49504258u /* "IPBX" */

struct box {
  ip_bytes pub;
  uint32_t magic;
  int memfd; /* -1 for heap buffers */
  size_t maplen;
  bool sealed; /* by ip_bytes_inplace: the mapping is read-only now */
  struct box *next; /* in-place buffers of this child */
};

/* Buffers of this process that live in a memfd. Only a task's child makes them, and it is
 * single-minded enough that a list is plenty. In a pool worker every buffer is listed: a
 * call's buffers are freed once its answer is sent (ip__bytes_call_end), or a worker that runs
 * thousands of calls would keep each one's result. */
static struct box *inplace;
static pthread_mutex_t inplace_lock = PTHREAD_MUTEX_INITIALIZER;
static bool per_call;

static void track(struct box *b) {
  pthread_mutex_lock(&inplace_lock);
  b->next = inplace;
  inplace = b;
  pthread_mutex_unlock(&inplace_lock);
}

void ip__bytes_call_end(void) {
  pthread_mutex_lock(&inplace_lock);
  struct box *b = inplace;
  inplace = NULL;
  per_call = true;
  pthread_mutex_unlock(&inplace_lock);
  while (b) {
    struct box *next = b->next;
    if (b->memfd >= 0) {
      if (b->pub.data) munmap(b->pub.data, b->maplen);
      close(b->memfd);
    }
    b->magic = 0;
    free(b);
    b = next;
  }
}

static ip_bytes *alloc_inplace(size_t len) {
  struct box *b = malloc(sizeof *b);
  if (!b) return NULL;
  int fd = memfd_create("inparallel-result", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) goto fail;
  if (ftruncate(fd, (off_t)len) < 0) goto fail_fd;
  /* Populated at once: the caller is about to write every page, and one mmap that fills the
   * page table costs far less than a fault per page. */
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) goto fail_fd;
  *b = (struct box){{p, len}, BOX_MAGIC, fd, len, false, NULL};
  track(b);
  return &b->pub;
fail_fd:
  close(fd);
fail:
  free(b);
  return NULL;
}

ip_bytes *ip_bytes_alloc(size_t len) {
  if (len >= IP__INPLACE_MIN && ip_in_child()) {
    ip_bytes *b = alloc_inplace(len);
    if (b) return b;
    /* No memfd to be had (descriptor limit, old kernel): the heap still works. */
  }
  if (len > SIZE_MAX - sizeof(struct box) - 16) {
    errno = ENOMEM;
    return NULL;
  }
  struct box *b = malloc(sizeof *b + len + 1);
  if (!b) {
    errno = ENOMEM;
    return NULL;
  }
  *b = (struct box){{b + 1, len}, BOX_MAGIC, -1, 0, false, NULL};
  if (per_call && ip_in_child()) track(b);
  return &b->pub;
}

ip_bytes *ip_bytes_copy(const void *data, size_t len) {
  if (!data && len) {
    errno = EINVAL;
    return NULL;
  }
  ip_bytes *b = ip_bytes_alloc(len);
  if (b && len) memcpy(b->data, data, len);
  return b;
}

void ip_bytes_free(ip_bytes *pub) {
  if (!pub) return;
  struct box *b = (struct box *)pub;
  if (b->memfd >= 0 || per_call) {
    pthread_mutex_lock(&inplace_lock);
    for (struct box **pp = &inplace; *pp; pp = &(*pp)->next) {
      if (*pp == b) {
        *pp = b->next;
        break;
      }
    }
    pthread_mutex_unlock(&inplace_lock);
    if (b->memfd >= 0) {
      if (b->pub.data) munmap(b->pub.data, b->maplen);
      close(b->memfd);
    }
  }
  b->magic = 0;
  free(b);
}

/* Child side, for an inplace hook: when v is one of our in-place buffers, unmap it, seal the
 * memfd so the parent can trust its size and contents, map it again read-only (the value
 * stays readable, should the caller stream it after all) and return the descriptor. */
int ip_bytes_inplace(const ip_bytes *v, size_t *len) {
  struct box *b;
  pthread_mutex_lock(&inplace_lock);
  for (b = inplace; b && &b->pub != v; b = b->next) {
  }
  pthread_mutex_unlock(&inplace_lock);
  if (!b || !len || b->memfd < 0 || b->pub.len > b->maplen) return -1;
  if (!b->sealed) {
    /* F_SEAL_WRITE is refused while a writable shared mapping exists. */
    if (b->pub.data) munmap(b->pub.data, b->maplen);
    b->pub.data = NULL;
    bool cut = b->pub.len == b->maplen || ftruncate(b->memfd, (off_t)b->pub.len) == 0;
    b->sealed = cut && fcntl(b->memfd, F_ADD_SEALS,
                             F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0;
    if (cut) b->maplen = b->pub.len;
    if (b->maplen) {
      void *p = mmap(NULL, b->maplen, b->sealed ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED,
                     b->memfd, 0);
      b->pub.data = p == MAP_FAILED ? NULL : p;
    }
    if (!b->sealed) return -1;
  }
  *len = b->pub.len;
  return b->memfd;
}

/* ---- the serializer ---------------------------------------------------------------------- */

static int raw_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  const ip_bytes *b = value;
  if (!b || !b->len) return 0;
  if (!b->data) return ip_encode_error(IP_EINVAL, "an ip_bytes with data NULL and len %zu", b->len);
  return w(ctx, b->data, b->len);
}

static int raw_decode(const ip_serializer *s, const void *buf, size_t len, void **value) {
  ip_bytes *b = malloc(sizeof *b);
  if (!b) return IP_ENOMEM;
  b->data = (void *)buf;
  b->len = len;
  *value = b;
  return 0;
}

static void raw_free(const ip_serializer *s, void *value) { free(value); }

static int raw_inplace(const ip_serializer *s, const void *value, size_t *len) {
  return ip_bytes_inplace(value, len);
}

static const ip_serializer raw = {
    .abi = IP_SERIALIZER_ABI,
    .name = "raw",
    .encode = raw_encode,
    .decode = raw_decode,
    .free_value = raw_free,
    .inplace = raw_inplace,
};

const ip_serializer *ip_serializer_raw(void) { return &raw; }
