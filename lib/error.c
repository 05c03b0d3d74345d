/* Error codes: their names and messages, and the errno they come from. */
#include "internal.h"
#include <stdio.h>
#include <limits.h>
#include <string.h>

/* Text for codes the list does not name is made per thread: one buffer per accessor, so
 * ip_strerror(x) and ip_err_name(x) in one printf do not overwrite each other. */
static __thread char other_text[64], other_name[32];

/* Negative errno values the kernel can give are -1..-4095 (MAX_ERRNO): any other code that
 * is not ours is unknown. */
static bool is_errno(int code) { return code < 0 && code >= -4095; }

const char *ip_strerror(int code) {
  switch (code) {
#define IP__ERR_TEXT(name, value, text) \
  case IP_##name:                       \
    return text;
    IP_ERRNO_MAP(IP__ERR_TEXT)
#undef IP__ERR_TEXT
  case 0:
    return "success";
  }
  const char *d = NULL;
#ifdef HAVE_STRERRORDESC_NP
  if (is_errno(code)) d = strerrordesc_np(-code);
#elif defined(__GLIBC__) && defined(_GNU_SOURCE)
  /* An older glibc: its strerror_r (the GNU one) says "Unknown error N" for what it lacks. */
  if (is_errno(code)) d = strerror_r(-code, other_text, sizeof other_text);
#endif
  if (d) return d;
  snprintf(other_text, sizeof other_text, "unknown error %d", code);
  return other_text;
}

const char *ip_err_name(int code) {
  switch (code) {
#define IP__ERR_NAME(name, value, text) \
  case IP_##name:                       \
    return #name;
    IP_ERRNO_MAP(IP__ERR_NAME)
#undef IP__ERR_NAME
  case 0:
    return "OK";
  }
  const char *n = NULL;
#ifdef HAVE_STRERRORNAME_NP
  if (is_errno(code)) n = strerrorname_np(-code);
#endif
  if (n) return n;
  snprintf(other_name, sizeof other_name, "E%d", code < 0 && code != INT_MIN ? -code : code);
  return other_name;
}

int ip__errno_code(int err) { return err > 0 ? -err : IP_EINVAL; }
