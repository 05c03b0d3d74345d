/* The README's large-result function, called once: its result must arrive whole. */
#include <inparallel.h>
#include <string.h>

/* README BLOCK */

int main(void) {
  ip_task *t = ip_task_new(render, NULL);
  ip_future *f = ip_call(t, NULL);
  const ip_bytes *img = ip_future_value(f);
  int ok = img && img->len == 64u << 20 && ((const char *)img->data)[img->len - 1] == 0x2a;
  ip_future_free(f);
  ip_task_free(t);
  return ok ? 0 : 1;
}
