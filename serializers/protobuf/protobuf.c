/* The protobuf serializer: one instance per message type, packed through the write callback
 * in the child and unpacked with protobuf-c in the parent. */
#include "config.h"
#include <inparallel/protobuf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Why protobuf_c_message_check refuses `m`, found by the same walk (required fields, then the
 * elements of repeated ones, then submessages, recursively) but naming the field by its path
 * from the top, e.g. "ipt.Strict.inner.name". Writes into why[0..n) and returns true when it
 * found the reason. */
static bool explain(const ProtobufCMessage *m, char *path, size_t plen, size_t pcap, char *why,
                    size_t n) {
  if (!m) {
    snprintf(why, n, "%s is NULL", path);
    return true;
  }
  const ProtobufCMessageDescriptor *d = m->descriptor;
  if (!d || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
    snprintf(why, n, "%s is not a protobuf-c message (no message descriptor at its start)", path);
    return true;
  }
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = d->fields + i;
    const char *field = (const char *)m + f->offset;
    int l = snprintf(path + plen, pcap - plen, ".%s", f->name);
    size_t flen = l < 0 ? plen : plen + (size_t)l < pcap ? plen + (size_t)l : pcap - 1;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t count = *(const size_t *)((const char *)m + f->quantifier_offset);
      const void *arr = *(void *const *)field;
      if (count && !arr) {
        snprintf(why, n, "the repeated field %s has a count of %zu but its array is NULL", path,
                 count);
        return true;
      }
      for (size_t j = 0; j < count; j++) {
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
          const ProtobufCMessage *sub = ((ProtobufCMessage *const *)arr)[j];
          l = snprintf(path + flen, pcap - flen, "[%zu]", j);
          size_t elen = l < 0 ? flen : flen + (size_t)l < pcap ? flen + (size_t)l : pcap - 1;
          if (!sub || !protobuf_c_message_check(sub)) return explain(sub, path, elen, pcap, why, n);
        } else if (f->type == PROTOBUF_C_TYPE_STRING && !((char *const *)arr)[j]) {
          snprintf(why, n, "element %zu of the repeated string %s is NULL", j, path);
          return true;
        } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
          const ProtobufCBinaryData *bd = (const ProtobufCBinaryData *)arr + j;
          if (bd->len && !bd->data) {
            snprintf(why, n, "element %zu of the repeated bytes %s has len %zu but data NULL", j,
                     path, bd->len);
            return true;
          }
        }
      }
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      const ProtobufCMessage *sub = *(ProtobufCMessage *const *)field;
      if (f->label == PROTOBUF_C_LABEL_REQUIRED && !sub) {
        snprintf(why, n, "the required field %s (a message) is missing (NULL)", path);
        return true;
      }
      if (sub && !protobuf_c_message_check(sub)) return explain(sub, path, flen, pcap, why, n);
    } else if (f->type == PROTOBUF_C_TYPE_STRING) {
      if (f->label == PROTOBUF_C_LABEL_REQUIRED && !*(char *const *)field) {
        snprintf(why, n, "the required field %s (a string) is missing (NULL)", path);
        return true;
      }
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
      const ProtobufCBinaryData *bd = (const ProtobufCBinaryData *)field;
      bool set = f->label == PROTOBUF_C_LABEL_REQUIRED ||
                 *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset);
      if (set && bd->len && !bd->data) {
        snprintf(why, n, "the bytes field %s has len %zu but data NULL", path, bd->len);
        return true;
      }
    }
    path[plen] = '\0';
  }
  return false;
}

static int pb_encode(const ip_serializer *ser, const void *value, ip_write_fn w, void *ctx) {
  const struct pb *pb = (const struct pb *)ser;
  const ProtobufCMessage *m = value;
  if (!m)
    return ip_encode_error(IP_EENCODE,
                           "the task returned NULL where the serializer expects a message of "
                           "type %s", pb->desc->name);
  if (m->descriptor != pb->desc) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (!d || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
      return ip_encode_error(IP_EENCODE,
                             "the task returned something that is not a protobuf-c message (no "
                             "message descriptor at its start) where the serializer expects %s",
                             pb->desc->name);
    return ip_encode_error(IP_EENCODE, "a message of type %s where the serializer expects %s",
                           d->name ? d->name : "?", pb->desc->name);
  }
  if (!protobuf_c_message_check(m)) {
    char path[256], why[512];
    snprintf(path, sizeof path, "%s", pb->desc->name);
    if (!explain(m, path, strlen(path), sizeof path, why, sizeof why))
      snprintf(why, sizeof why, "protobuf-c's check refuses it");
    return ip_encode_error(IP_EENCODE, "the %s message fails protobuf_c_message_check: %s",
                           pb->desc->name, why);
  }
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
