/* The protobuf serializer: one instance per message type, packed through the write callback
 * in the child and unpacked with protobuf-c in the parent. */
#include "config.h"
#include <inparallel/protobuf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct pb {
  ip_serializer base; /* first: the library sees only this */
  const ProtobufCMessageDescriptor *desc;
  char name[64];
};

/* protobuf-c packs into a ProtobufCBuffer; this one forwards to the library's writer. */
struct sink {
  ProtobufCBuffer base;
  ip_write_fn w;
  void *ctx;
  int err;
};

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  struct sink *s = (struct sink *)b;
  if (!s->err && len) s->err = s->w(s->ctx, data, len);
}

static int pb_encode(const ip_serializer *ser, const void *value, ip_write_fn w, void *ctx) {
  const struct pb *pb = (const struct pb *)ser;
  const ProtobufCMessage *m = value;
  if (!m || m->descriptor != pb->desc || !protobuf_c_message_check(m)) return IP_EENCODE;
  struct sink s = {{sink_append}, w, ctx, 0};
  protobuf_c_message_pack_to_buffer(m, &s.base);
  return s.err;
}

static int pb_decode(const ip_serializer *ser, const void *buf, size_t len, void **value) {
  const struct pb *pb = (const struct pb *)ser;
  static const uint8_t empty[1];
  ProtobufCMessage *m = protobuf_c_message_unpack(pb->desc, NULL, len, buf ? buf : empty);
  if (!m) return IP_EDECODE;
  *value = m;
  return 0;
}

static void pb_free(const ip_serializer *ser, void *value) {
  protobuf_c_message_free_unpacked(value, NULL);
}

static void pb_destroy(ip_serializer *ser) { free(ser); }

ip_serializer *ip_serializer_protobuf_new(const ProtobufCMessageDescriptor *d) {
  if (!d || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || !d->name) {
    errno = EINVAL;
    return NULL;
  }
  struct pb *pb = calloc(1, sizeof *pb);
  if (!pb) {
    errno = ENOMEM;
    return NULL;
  }
  if ((size_t)snprintf(pb->name, sizeof pb->name, "protobuf:%s", d->name) >= sizeof pb->name) {
    /* Too long for a wire name: keep the start and make the end a hash of the whole. */
    uint32_t h = 2166136261u;
    for (const char *c = d->name; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
    snprintf(pb->name + sizeof pb->name - 10, 10, "#%08x", (unsigned)h);
  }
  pb->desc = d;
  pb->base = (ip_serializer){
      .abi = IP_SERIALIZER_ABI,
      .name = pb->name,
      .encode = pb_encode,
      .decode = pb_decode,
      .free_value = pb_free,
      .destroy = pb_destroy,
  };
  return &pb->base;
}
