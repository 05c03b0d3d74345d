/* libFuzzer target: the protobuf serializer's decoder for ipt.Sample (tests/proto/sample.proto)
 * on untrusted bytes, and a repack of whatever it accepts. */
#include "config.h"
#include <inparallel/protobuf.h>
#include "sample.pb-c.h"
#include <stdlib.h>
#include <string.h>

#define CHECK(c) \
  do {           \
    if (!(c)) __builtin_trap(); \
  } while (0)

static ip_serializer *sample;

static int sink(void *ctx, const void *buf, size_t len) {
  size_t *total = ctx;
  *total += len;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!sample) sample = ip_serializer_protobuf_new(&ipt__sample__descriptor);
  CHECK(sample);
  void *v = NULL;
  int rc = sample->decode(sample, size ? data : NULL, size, &v);
  CHECK(rc == 0 || rc == IP_EDECODE);
  if (rc) return 0;
  const Ipt__Sample *m = v;
  CHECK(m->base.descriptor == &ipt__sample__descriptor);
  /* Read everything the parent could read. */
  unsigned sum = 0;
  if (m->text) sum += (unsigned)strlen(m->text);
  if (m->has_blob) for (size_t i = 0; i < m->blob.len; i++) sum += m->blob.data[i];
  for (size_t i = 0; i < m->n_tags; i++) sum += (unsigned)strlen(m->tags[i]);
  for (size_t i = 0; i < m->n_items; i++) {
    if (m->items[i]->label) sum += (unsigned)strlen(m->items[i]->label);
    for (size_t j = 0; j < m->items[i]->n_values; j++) sum += (unsigned)m->items[i]->values[j];
  }
  if (m->inner && m->inner->label) sum += (unsigned)strlen(m->inner->label);
  if (m->choice_case == IPT__SAMPLE__CHOICE_NAME) sum += (unsigned)strlen(m->name);
  (void)sum;
  /* What decodes passes the child's check and encodes again. */
  size_t total = 0;
  CHECK(sample->encode(sample, m, sink, &total) == 0);
  CHECK(total == protobuf_c_message_get_packed_size(&m->base));
  sample->free_value(sample, v);
  return 0;
}
