/* Frame headers and the bodies of error frames: packing in the child, checking in the
 * parent. See frame.h for the layout. */
#include "internal.h"
#include <string.h>

uint32_t ip__fnv1a(const void *p, size_t n, uint32_t h) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 16777619u;
  }
  return h;
}

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t get64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

void ip__frame_pack(unsigned char *out, int kind, uint32_t ser_id, uint64_t len) {
  ip__frame_pack_id(out, kind, ser_id, 0, len);
}

void ip__frame_pack_id(unsigned char *out, int kind, uint32_t ser_id, uint32_t call_id,
                       uint64_t len) {
  put32(out, IP__FRAME_MAGIC);
  out[4] = IP__FRAME_VERSION;
  out[5] = (unsigned char)kind;
  out[6] = out[7] = 0;
  put32(out + 8, ser_id);
  put32(out + 12, call_id);
  put64(out + 16, len);
  put32(out + 24, 0);
  put32(out + 28, ip__fnv1a(out, 28, IP__FNV_SEED));
}

bool ip__frame_gather(unsigned char *hdr, size_t *have, const unsigned char **p, size_t *n) {
  size_t take = IP__FRAME_HDR_SIZE - *have;
  if (take > *n) take = *n;
  memcpy(hdr + *have, *p, take);
  *have += take, *p += take, *n -= take;
  if (*have < IP__FRAME_HDR_SIZE) return false;
  *have = 0;
  return true;
}

const char *ip__frame_unpack(const unsigned char *in, struct ip__frame_hdr *h) {
  h->magic = get32(in);
  h->version = in[4];
  h->kind = in[5];
  h->flags = (uint16_t)(in[6] | in[7] << 8);
  h->ser_id = get32(in + 8);
  h->call_id = get32(in + 12);
  h->len = get64(in + 16);
  h->reserved = get32(in + 24);
  h->check = get32(in + 28);
  if (h->magic != IP__FRAME_MAGIC) return "bad magic";
  if (h->check != ip__fnv1a(in, 28, IP__FNV_SEED)) return "header checksum mismatch";
  if (h->version != IP__FRAME_VERSION) return "unsupported frame version";
  if (h->kind < IP__FRAME_DATA || h->kind > IP__FRAME_ACK) return "unknown frame kind";
  if (h->flags != 0 || h->reserved != 0) return "reserved header bits set";
  switch (h->kind) {
  case IP__FRAME_ERROR:
    if (h->len < 20 || h->len > IP__FRAME_ERROR_MAX) return "error frame length out of range";
    break;
  case IP__FRAME_CRASH:
    if (h->len < 8 || h->len > IP__CRASH_BODY_MAX) return "crash frame length out of range";
    break;
  default:
    break; /* DATA, END and MEMFD lengths are checked against the task's max_result */
  }
  return NULL;
}

static uint32_t cut(const char *s) {
  size_t n = s ? strlen(s) : 0;
  return (uint32_t)(n > IP__FRAME_STRING_MAX ? IP__FRAME_STRING_MAX : n);
}

size_t ip__error_body_size(const char *kind, const char *msg, const char *bt) {
  return 20u + cut(kind) + cut(msg) + cut(bt);
}

size_t ip__error_body_pack(unsigned char *out, int code, int raised_code, const char *kind,
                           const char *msg, const char *bt) {
  uint32_t lens[3] = {cut(kind), cut(msg), cut(bt)};
  const char *strs[3] = {kind, msg, bt};
  put32(out, (uint32_t)code);
  put32(out + 4, (uint32_t)raised_code);
  size_t off = 8;
  for (int i = 0; i < 3; i++, off += 4) put32(out + off, lens[i]);
  for (int i = 0; i < 3; i++) {
    if (lens[i]) memcpy(out + off, strs[i], lens[i]);
    off += lens[i];
  }
  return off;
}

const char *ip__error_body_unpack(const unsigned char *body, size_t len,
                                  struct ip__error_body *out) {
  if (len < 20) return "error frame too short";
  out->code = (int)get32(body);
  out->raised_code = (int)get32(body + 4);
  out->kind_len = get32(body + 8);
  out->msg_len = get32(body + 12);
  out->bt_len = get32(body + 16);
  if (out->code != IP_ERAISED && out->code != IP_EENCODE && out->code != IP_EINVAL &&
      out->code != IP_EDECODE &&
      out->code != IP_E2BIG && out->code != IP_ENOMEM)
    return "error frame carries an unexpected code";
  if (out->kind_len > IP__FRAME_STRING_MAX || out->msg_len > IP__FRAME_STRING_MAX ||
      out->bt_len > IP__FRAME_STRING_MAX)
    return "error frame string too long";
  if ((uint64_t)out->kind_len + out->msg_len + out->bt_len != len - 20)
    return "error frame lengths do not add up";
  out->kind = (const char *)body + 20;
  out->msg = out->kind + out->kind_len;
  out->bt = out->msg + out->msg_len;
  return NULL;
}
