/* The :msgpack serializer's C side: the child's packed bytes go into a msgpack_sbuffer for the
 * core's msgpack plugin (which checks them), and the msgpack_object the plugin decodes in the
 * parent becomes Ruby objects here, the way MessagePack.unpack would build them. */
#include "ruby_inparallel.h"
#ifdef RBIP_HAVE_MSGPACK
#include <inparallel/msgpack.h>
#include <ruby/encoding.h>

const ip_serializer *rbip_msgpack_serializer(void) { return ip_serializer_msgpack(); }

void *rbip_msgpack_sbuffer(const char *data, size_t len) {
  msgpack_sbuffer *sb = msgpack_sbuffer_new();
  if (!sb) return NULL;
  if (msgpack_sbuffer_write(sb, data, len) != 0) return NULL;
  return sb; /* freed when the child exits */
}

static VALUE ext_value(const msgpack_object_ext *e) {
  VALUE payload = rb_str_new(e->ptr, e->size);
  VALUE ev = Qnil;
  if (rb_const_defined(rb_cObject, rb_intern("MessagePack"))) {
    VALUE mp = rb_const_get(rb_cObject, rb_intern("MessagePack"));
    if (rb_const_defined(mp, rb_intern("ExtensionValue")))
      ev = rb_const_get(mp, rb_intern("ExtensionValue"));
  }
  if (NIL_P(ev)) return rb_assoc_new(INT2FIX(e->type), payload);
  return rb_funcall(ev, rb_intern("new"), 2, INT2FIX(e->type), payload);
}

/* Depth is bounded by msgpack-c's unpacker (32 levels), so recursion is safe. */
VALUE rbip_msgpack_to_ruby(const void *p) {
  const msgpack_object *o = p;
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: return Qnil;
  case MSGPACK_OBJECT_BOOLEAN: return o->via.boolean ? Qtrue : Qfalse;
  case MSGPACK_OBJECT_POSITIVE_INTEGER: return ULL2NUM(o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: return LL2NUM(o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64: return DBL2NUM(o->via.f64);
  case MSGPACK_OBJECT_STR: return rb_utf8_str_new(o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_BIN: return rb_str_new(o->via.bin.ptr, o->via.bin.size);
  case MSGPACK_OBJECT_EXT: return ext_value(&o->via.ext);
  case MSGPACK_OBJECT_ARRAY: {
    VALUE a = rb_ary_new_capa(o->via.array.size);
    for (uint32_t i = 0; i < o->via.array.size; i++)
      rb_ary_push(a, rbip_msgpack_to_ruby(&o->via.array.ptr[i]));
    return a;
  }
  case MSGPACK_OBJECT_MAP: {
    VALUE h = rb_hash_new();
    for (uint32_t i = 0; i < o->via.map.size; i++)
      rb_hash_aset(h, rbip_msgpack_to_ruby(&o->via.map.ptr[i].key),
                   rbip_msgpack_to_ruby(&o->via.map.ptr[i].val));
    return h;
  }
  }
  rb_raise(rb_eTypeError, "unknown msgpack object type %d", (int)o->type);
}
#endif
