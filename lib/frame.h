/* The wire format between a child and its parent. Private to libinparallel.
 *
 * A child sends a sequence of frames on its socket, each a fixed 32-byte header and a body:
 *
 *   DATA*  END     a value streamed in chunks; END carries the total length as a check
 *   MEMFD          a value built in place: a sealed memfd arrives with SCM_RIGHTS
 *   ERROR          the call failed in the child (ip_raise, encode failure, set-up failure)
 *   CRASH          sent by the fatal-signal handler: signal number and raw return addresses
 *
 * Header (little-endian host order; both ends are the same machine, usually the same binary):
 *   u32 magic "IPF1" | u8 version | u8 kind | u16 flags | u32 serializer id | u32 call id
 *   u64 body length  | u32 reserved | u32 check (FNV-1a of the 28 bytes before it)
 * The call id is 0 on a forked call's channel. A pool worker's channel carries many calls,
 * one at a time: CALL frames one way; ACK (with the call's id), then the call's answer
 * (frames as above, call id 0) the other way.
 * Nothing in a frame is trusted: every length is checked against a bound before use.
 */
#ifndef IP_FRAME_H
#define IP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IP__FRAME_MAGIC 0x31465049u /* "IPF1" */
#define IP__FRAME_VERSION 1u
#define IP__FRAME_HDR_SIZE 32u
/* Bounds for bodies that are not values. */
#define IP__FRAME_ERROR_MAX ((size_t)4 << 20)
#define IP__FRAME_STRING_MAX ((size_t)1 << 20)
#define IP__CRASH_FRAMES_MAX 64u

enum {
  IP__FRAME_DATA = 1,
  IP__FRAME_END = 2,
  IP__FRAME_MEMFD = 3,
  IP__FRAME_ERROR = 4,
  IP__FRAME_CRASH = 5,
  /* A pool's channel to a worker carries these too (the call id is in the header). */
  IP__FRAME_CALL = 6,   /* caller to worker: struct ip__call_spec, then the argument */
  IP__FRAME_CANCEL = 7, /* caller to worker: skip that call if it has not started; worker to
                           caller: it was skipped */
  IP__FRAME_QUIT = 8,   /* caller to worker: exit once the calls before this are done */
  IP__FRAME_ACK = 9     /* worker to caller: the call starts now; its answer follows */
};

struct ip__frame_hdr {
  uint32_t magic;
  uint8_t version;
  uint8_t kind;
  uint16_t flags;
  uint32_t ser_id;
  uint32_t call_id;
  uint64_t len;
  uint32_t reserved;
  uint32_t check;
};

/* Fills `out` (IP__FRAME_HDR_SIZE bytes). Async-signal-safe. */
void ip__frame_pack(unsigned char *out, int kind, uint32_t ser_id, uint64_t len);
void ip__frame_pack_id(unsigned char *out, int kind, uint32_t ser_id, uint32_t call_id,
                       uint64_t len);
/* Gathers a header from a stream read in pieces: copies what `hdr` still lacks from *p (n
 * bytes; both advanced past it). True once hdr is whole (and *have back at 0). */
bool ip__frame_gather(unsigned char *hdr, size_t *have, const unsigned char **p, size_t *n);
/* Parses and checks a header. Returns NULL when valid, else why not (static text). */
const char *ip__frame_unpack(const unsigned char *in, struct ip__frame_hdr *h);

/* ERROR body: i32 code | i32 raised_code | u32 kind_len | u32 msg_len | u32 bt_len | bytes.
 * Strings are cut to IP__FRAME_STRING_MAX. Returns the bytes written to `out` (which holds
 * ip__error_body_size(...) bytes). */
size_t ip__error_body_size(const char *kind, const char *msg, const char *bt);
size_t ip__error_body_pack(unsigned char *out, int code, int raised_code, const char *kind,
                           const char *msg, const char *bt);
struct ip__error_body {
  int code, raised_code;
  const char *kind, *msg, *bt; /* point into the body; not NUL-terminated */
  uint32_t kind_len, msg_len, bt_len;
};
/* NULL when `body` is a well-formed error body, else why not. */
const char *ip__error_body_unpack(const unsigned char *body, size_t len,
                                  struct ip__error_body *out);

/* CRASH body: i32 signal | u32 n | n x u64 return addresses. */
#define IP__CRASH_BODY_MAX (8u + 8u * IP__CRASH_FRAMES_MAX)

uint32_t ip__fnv1a(const void *p, size_t n, uint32_t h);
#define IP__FNV_SEED 2166136261u

#endif
