/* libFuzzer target: the ERROR frame body parser (lib/frame.c ip__error_body_unpack), and the
 * packer on whatever strings the parser accepted. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

#define CHECK(c) \
  do {           \
    if (!(c)) __builtin_trap(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct ip__error_body b;
  if (ip__error_body_unpack(data, size, &b)) return 0;
  /* Accepted: the strings lie inside the body and fill it exactly. */
  const char *end = (const char *)data + size;
  CHECK(size >= 20);
  CHECK(b.kind == (const char *)data + 20);
  CHECK(b.msg == b.kind + b.kind_len && b.bt == b.msg + b.msg_len && b.bt + b.bt_len == end);
  CHECK(b.kind_len <= IP__FRAME_STRING_MAX && b.msg_len <= IP__FRAME_STRING_MAX &&
        b.bt_len <= IP__FRAME_STRING_MAX);
  CHECK(b.code == IP_ERAISED || b.code == IP_EENCODE || b.code == IP_EINVAL ||
        b.code == IP_E2BIG || b.code == IP_ENOMEM);
  unsigned sum = 0;
  for (const char *p = b.kind; p < end; p++) sum += (unsigned char)*p;
  (void)sum;

  /* Pack the strings again (the packer takes NUL-terminated text: cut at the first NUL). */
  char *k = strndup(b.kind, b.kind_len), *m = strndup(b.msg, b.msg_len),
       *t = strndup(b.bt, b.bt_len);
  size_t n = ip__error_body_size(k, m, t);
  unsigned char *out = malloc(n);
  CHECK(ip__error_body_pack(out, b.code, b.raised_code, k, m, t) == n);
  struct ip__error_body c;
  CHECK(ip__error_body_unpack(out, n, &c) == NULL);
  CHECK(c.code == b.code && c.raised_code == b.raised_code);
  CHECK(c.kind_len == strlen(k) && c.msg_len == strlen(m) && c.bt_len == strlen(t));
  CHECK(memcmp(c.kind, k, c.kind_len) == 0 && memcmp(c.msg, m, c.msg_len) == 0 &&
        memcmp(c.bt, t, c.bt_len) == 0);
  free(out);
  free(k);
  free(m);
  free(t);
  return 0;
}
