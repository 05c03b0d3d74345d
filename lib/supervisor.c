/* The supervisor thread: one per process, started by the first call. It sleeps in epoll_wait
 * on every call's socket and pidfd (plus an eventfd to be woken), drains sockets while the
 * children run so none blocks on a full buffer, reaps only its own children through their
 * pidfds, kills children past their deadline, and completes futures. It never decodes. */
#include "internal.h"
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define STAGING (64u << 10)
#define DIRECT_MIN (16u << 10)       /* body bytes left from which recv goes to the payload */
#define READ_BUDGET ((size_t)8 << 20) /* per wake-up and socket, so one big result can't starve */
#define TAG_PIDFD ((uintptr_t)1)
#define SKIP ((void *)2)

static unsigned char staging[STAGING]; /* only the supervisor thread touches it */

static void kill_child(ip_future *f) {
  if (!f->killed && f->pidfd >= 0) {
    f->killed = true;
    syscall(SYS_pidfd_send_signal, f->pidfd, SIGKILL, NULL, 0);
  }
}

/* ---- reading frames ------------------------------------------------------------------------ */

static void proto(ip_future *f, int code, const char *why) {
  if (!f->rx.proto_code) {
    f->rx.proto_code = code;
    f->rx.proto_msg = why;
  }
}

static bool reserve(ip_future *f, size_t need, uint64_t hint) {
  struct ip__rx *rx = &f->rx;
  if (need <= rx->cap) return true;
  size_t ncap = rx->cap * 2;
  if (ncap < need) ncap = need;
  if (hint > ncap && hint - ncap < ((size_t)256 << 20)) ncap = (size_t)hint;
  if (ncap < 4096) ncap = 4096;
  unsigned char *p = realloc(rx->payload, ncap);
  if (!p) {
    proto(f, IP_ENOMEM, "no memory for the result");
    return false;
  }
  rx->payload = p;
  rx->cap = ncap;
  return true;
}

static void take_memfd(ip_future *f, uint64_t len) {
  struct ip__rx *rx = &f->rx;
  struct stat st;
  int seals = fcntl(rx->memfd, F_GET_SEALS);
  const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if (rx->memfd < 0) return proto(f, IP_EPROTO, "in-place result without a descriptor");
  if (rx->len) return proto(f, IP_EPROTO, "in-place result after streamed data");
  if (len > f->max_result) return proto(f, IP_E2BIG, "in-place result exceeds max_result");
  if (fstat(rx->memfd, &st) < 0 || (uint64_t)st.st_size < len)
    return proto(f, IP_EPROTO, "in-place result smaller than announced");
  /* Unsealed memory could shrink under our mapping and kill us with SIGBUS. */
  if (seals < 0 || (seals & need) != need) return proto(f, IP_EPROTO, "in-place result not sealed");
  if (len) {
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, rx->memfd, 0);
    if (p == MAP_FAILED) return proto(f, IP_ENOMEM, "could not map the in-place result");
    rx->payload = p;
    rx->mapped = true;
    rx->len = rx->cap = len;
  }
  ip__close(&rx->memfd);
  rx->final_kind = IP__FRAME_MEMFD;
}

static void start_frame(ip_future *f) {
  struct ip__rx *rx = &f->rx;
  const struct ip__frame_hdr *h = &rx->cur;
  if (h->kind <= IP__FRAME_MEMFD && h->ser_id != f->ser_id)
    return proto(f, IP_EDECODE, "the result was encoded by another serializer");
  switch (h->kind) {
  case IP__FRAME_DATA:
    if (h->len > f->max_result - rx->len) return proto(f, IP_E2BIG, "result exceeds max_result");
    break;
  case IP__FRAME_END:
    if (h->len != rx->len) return proto(f, IP_EPROTO, "result length does not match its end frame");
    rx->final_kind = IP__FRAME_END;
    return;
  case IP__FRAME_MEMFD:
    return take_memfd(f, h->len);
  default: /* ERROR, CRASH: bounded by ip__frame_unpack */
    free(rx->aux);
    rx->aux_len = 0;
    if (!(rx->aux = malloc(h->len))) return proto(f, IP_ENOMEM, "no memory for an error frame");
    break;
  }
  rx->in_body = h->len > 0;
  rx->body_left = h->len;
}

static void feed(ip_future *f, const unsigned char *p, size_t n) {
  struct ip__rx *rx = &f->rx;
  while (n > 0 && !rx->proto_code) {
    if (rx->final_kind) return proto(f, IP_EPROTO, "bytes after the final frame");
    if (!rx->in_body) {
      size_t take = IP__FRAME_HDR_SIZE - rx->hdr_have;
      if (take > n) take = n;
      memcpy(rx->hdr + rx->hdr_have, p, take);
      rx->hdr_have += take, p += take, n -= take;
      if (rx->hdr_have < IP__FRAME_HDR_SIZE) return;
      rx->hdr_have = 0;
      const char *why = ip__frame_unpack(rx->hdr, &rx->cur);
      if (why) return proto(f, IP_EPROTO, why);
      start_frame(f);
      continue;
    }
    size_t take = rx->body_left < n ? (size_t)rx->body_left : n;
    if (rx->cur.kind == IP__FRAME_DATA) {
      if (!reserve(f, rx->len + take, rx->len + rx->body_left)) return;
      memcpy(rx->payload + rx->len, p, take);
      rx->len += take;
    } else {
      memcpy(rx->aux + rx->aux_len, p, take);
      rx->aux_len += take;
    }
    p += take, n -= take;
    if ((rx->body_left -= take) == 0) {
      rx->in_body = false;
      if (rx->cur.kind == IP__FRAME_ERROR) rx->final_kind = IP__FRAME_ERROR;
    }
  }
}

static void take_fds(ip_future *f, struct msghdr *m) {
  if (m->msg_flags & MSG_CTRUNC) proto(f, IP_EPROTO, "too many descriptors from the child");
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (f->rx.memfd < 0 && k == 1) f->rx.memfd = fd;
      else {
        close(fd);
        proto(f, IP_EPROTO, "unexpected descriptors from the child");
      }
    }
  }
}

/* Reads what the socket holds, up to `budget` bytes. Returns false at end of stream. */
static bool drain(ip_future *f, size_t budget) {
  struct ip__rx *rx = &f->rx;
  while (budget > 0 && !rx->proto_code) {
    ssize_t r;
    if (rx->in_body && rx->cur.kind == IP__FRAME_DATA && rx->body_left >= DIRECT_MIN) {
      /* The bulk of a large result goes straight into its buffer: no staging copy. */
      if (!reserve(f, rx->len + DIRECT_MIN, rx->len + rx->body_left)) break;
      size_t room = rx->cap - rx->len;
      if (room > rx->body_left) room = (size_t)rx->body_left;
      r = recv(f->sock, rx->payload + rx->len, room, MSG_DONTWAIT);
      if (r > 0) {
        rx->len += (size_t)r;
        if ((rx->body_left -= (uint64_t)r) == 0) rx->in_body = false;
      }
    } else {
      union {
        struct cmsghdr c;
        char b[CMSG_SPACE(sizeof(int) * 4)];
      } u;
      struct iovec iov = {staging, sizeof staging};
      struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b};
      r = recvmsg(f->sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (r >= 0 && m.msg_controllen) take_fds(f, &m);
      if (r > 0) feed(f, staging, (size_t)r);
    }
    if (r == 0) return false;
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    budget -= (size_t)r < budget ? (size_t)r : budget;
  }
  return true;
}

static void stop_reading(ip_future *f) {
  if (f->rx.sock_open) {
    epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->sock, NULL);
    f->rx.sock_open = false;
  }
}

static void on_readable(ip_future *f) {
  bool open = drain(f, READ_BUDGET);
  if (f->rx.proto_code) {
    /* A child that sends garbage gets no more attention: stop reading and end it. */
    stop_reading(f);
    pthread_mutex_lock(&ip__g.lock);
    kill_child(f);
    pthread_mutex_unlock(&ip__g.lock);
  } else if (!open) {
    stop_reading(f);
  }
}

/* The child exited: reap it, take whatever it left in the socket, and complete the future.
 * Returns false when the wake-up was spurious. */
static bool on_child_exit(ip_future *f) {
  int st;
  pid_t r;
  while ((r = wait4(f->pid, &st, WNOHANG, &f->rusage)) < 0 && errno == EINTR) {
  }
  if (r == 0) return false;
  f->reaped = true;
  f->wstatus = r < 0 ? -1 : st; /* ECHILD: the host's waitpid(-1) took it */
  if (f->rx.sock_open) {
    /* Everything the child wrote is in the socket now; a grandchild that inherited the
     * channel could keep writing, so read what is there and no more. */
    drain(f, SIZE_MAX);
    stop_reading(f);
  }
  epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->pidfd, NULL);
  pthread_mutex_lock(&ip__g.lock);
  ip__outcome(f);
  ip__close(&f->sock);
  ip__close(&f->pidfd);
  ip__complete_locked(f);
  pthread_mutex_unlock(&ip__g.lock);
  return true;
}

/* ---- the loop ------------------------------------------------------------------------------ */

static int next_timeout_locked(int64_t now) {
  if (!ip__g.n_timed) return -1;
  int64_t first = INT64_MAX;
  for (ip_future *f = ip__g.inflight; f; f = f->next) {
    if (!f->deadline_ns || f->killed) continue;
    if (f->deadline_ns <= now) {
      f->timed_out = true;
      kill_child(f);
    } else if (f->deadline_ns < first) {
      first = f->deadline_ns;
    }
  }
  if (first == INT64_MAX) return -1;
  int64_t ms = (first - now + 999999) / 1000000;
  return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void *supervise(void *unused) {
  struct epoll_event ev[MAX_EVENTS];
  for (;;) {
    pthread_mutex_lock(&ip__g.lock);
    bool stop = ip__g.stopping;
    int timeout = next_timeout_locked(ip__now_ns());
    pthread_mutex_unlock(&ip__g.lock);
    if (stop) break;
    int n = epoll_wait(ip__g.epfd, ev, MAX_EVENTS, timeout);
    for (int i = 0; i < n; i++) {
      void *tag = ev[i].data.ptr;
      if (tag == SKIP) continue;
      if (!tag) {
        uint64_t v;
        ssize_t r = read(ip__g.wake_fd, &v, sizeof v);
        (void)r;
        continue;
      }
      ip_future *f = (ip_future *)((uintptr_t)tag & ~TAG_PIDFD);
      if (!((uintptr_t)tag & TAG_PIDFD)) {
        on_readable(f);
      } else if (on_child_exit(f)) {
        /* f may be freed by its owner from now on: forget its other events in this batch. */
        for (int j = i + 1; j < n; j++)
          if (((uintptr_t)ev[j].data.ptr & ~TAG_PIDFD) == (uintptr_t)f) ev[j].data.ptr = SKIP;
      }
    }
  }
  return NULL;
}

static int fd_error(void) { return ip__errno_code(errno); }

int ip__supervisor_ensure(void) {
  ip__init();
  int rc = 0;
  pthread_mutex_lock(&ip__g.lock);
  if (ip__g.started) goto out;
  ip__g.owner = getpid();
  if (ip__g.epfd < 0 && (ip__g.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) goto fail;
  if (ip__g.wake_fd < 0 && (ip__g.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) goto fail;
  if (ip__g.lifeline[0] < 0 && pipe2(ip__g.lifeline, O_CLOEXEC) < 0) goto fail;
  struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, ip__g.wake_fd, &e) < 0 && errno != EEXIST) goto fail;
  /* The host's signal handlers must run in the host's threads, never in ours. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e2 = pthread_create(&ip__g.thread, NULL, supervise, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e2) {
    errno = e2;
    goto fail;
  }
  ip__g.started = true;
  goto out;
fail:
  rc = fd_error();
out:
  pthread_mutex_unlock(&ip__g.lock);
  return rc;
}

int ip__supervisor_add(ip_future *f) {
  pthread_mutex_lock(&ip__g.lock);
  f->next = ip__g.inflight;
  if (f->next) f->next->prev = f;
  ip__g.inflight = f;
  ip__g.n_inflight++;
  if (f->deadline_ns) ip__g.n_timed++;
  f->rx.sock_open = true;
  pthread_mutex_unlock(&ip__g.lock);

  struct epoll_event es = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = f};
  struct epoll_event ep = {.events = EPOLLIN, .data.ptr = (void *)((uintptr_t)f | TAG_PIDFD)};
  int rc = 0;
  if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, f->sock, &es) < 0) {
    rc = fd_error();
  } else if (epoll_ctl(ip__g.epfd, EPOLL_CTL_ADD, f->pidfd, &ep) < 0) {
    rc = fd_error();
    epoll_ctl(ip__g.epfd, EPOLL_CTL_DEL, f->sock, NULL);
  }
  if (rc < 0) {
    pthread_mutex_lock(&ip__g.lock);
    ip__unlink_locked(f);
    pthread_mutex_unlock(&ip__g.lock);
    return rc;
  }
  if (f->deadline_ns) ip__supervisor_kick();
  return 0;
}

void ip__unlink_locked(ip_future *f) {
  if (f->prev) f->prev->next = f->next;
  else if (ip__g.inflight == f) ip__g.inflight = f->next;
  else return; /* not linked */
  if (f->next) f->next->prev = f->prev;
  f->prev = f->next = NULL;
  ip__g.n_inflight--;
  if (f->deadline_ns) ip__g.n_timed--;
}

void ip__supervisor_kick(void) {
  uint64_t one = 1;
  ssize_t r = write(ip__g.wake_fd, &one, sizeof one);
  (void)r;
}

void ip__supervisor_shutdown(void) {
  pthread_mutex_lock(&ip__g.lock);
  bool ours = ip__g.started && ip__g.owner == getpid();
  if (ours) ip__g.stopping = true;
  pthread_mutex_unlock(&ip__g.lock);
  if (!ours) return;
  ip__supervisor_kick();
  pthread_join(ip__g.thread, NULL);
  pthread_mutex_lock(&ip__g.lock);
  ip__g.started = false;
  ip__close(&ip__g.epfd);
  ip__close(&ip__g.wake_fd);
  ip__close(&ip__g.ready_fd);
  ip__close(&ip__g.lifeline[0]);
  ip__close(&ip__g.lifeline[1]);
  pthread_mutex_unlock(&ip__g.lock);
}
