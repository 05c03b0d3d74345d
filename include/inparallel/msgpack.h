/* inparallel + msgpack-c: tasks whose results travel as MessagePack.
 *
 *     #include <inparallel/msgpack.h>          // link: pkg-config inparallel-msgpack
 *
 *     static void *fn(void *arg) {              // in the child
 *       msgpack_sbuffer *sb = msgpack_sbuffer_new();
 *       msgpack_packer pk;
 *       msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
 *       msgpack_pack_map(&pk, 1); ...           // exactly one object
 *       return sb;                              // freed when the child exits
 *     }
 *     ip_task *t = ip_task_new(fn, ip_serializer_msgpack());
 *     const msgpack_object *o = ip_future_value(ip_call(t, NULL));
 *
 * Child side: fn returns a `msgpack_sbuffer *` holding exactly one packed object. NULL, an
 * empty buffer, a truncated object, trailing bytes, or nesting deeper than msgpack-c's limit
 * of 32 levels fail the call with IP_EENCODE (checked in the child, where the mistake is),
 * and the error's message says which, e.g. "the msgpack serializer could not encode the
 * result: the msgpack_sbuffer holds more than one object (3 trailing bytes after the first
 * object's 12)".
 * Parent side: the value is a `const msgpack_object *`, owned by the future together with the
 * zone and the received bytes it points into, valid until ip_future_free(). Strings, bins and
 * exts are not NUL-terminated (use their size). Bytes that are not exactly one well-formed
 * object (or that declare more elements than they hold) fail with IP_EDECODE.
 *
 * Loading this library registers the serializer under the name "msgpack".
 */
#ifndef INPARALLEL_MSGPACK_H
#define INPARALLEL_MSGPACK_H

#include <inparallel.h>
#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The msgpack serializer (static storage; never free it). */
IP_EXTERN const ip_serializer *ip_serializer_msgpack(void);

#ifdef __cplusplus
}
#endif
#endif
