/* inparallel + protobuf-c: tasks whose results are protobuf messages.
 *
 *     #include <inparallel/protobuf.h>         // link: pkg-config inparallel-protobuf
 *
 *     ip_serializer *s = ip_serializer_protobuf_new(&host__info__descriptor);
 *     ip_task *t = ip_task_new(fn, s);         // fn returns a HostInfo * (a ProtobufCMessage)
 *     const HostInfo *h = ip_future_value(ip_call(t, arg));
 *     ...
 *     ip_future_free(f); ip_task_free(t); ip_serializer_free(s);
 *
 * A serializer is bound to one message type. Child side: fn returns a pointer to a message of
 * exactly that type (its `base.descriptor` is checked) that passes protobuf_c_message_check()
 * (every required field set, no NULL element in a repeated field, ...); anything else fails
 * the call with IP_EENCODE and a message that says what was wrong: NULL, "a message of type
 * X where the serializer expects Y", or the field that fails the check, named by its path
 * ("the required field pkg.Msg.inner (a message) is missing (NULL)"). Parent side: the value
 * is a message of that type unpacked with protobuf_c_message_unpack() and freed with the
 * future; bytes that do not unpack fail with IP_EDECODE. The wire name is "protobuf:<full message name>", so a result
 * of another type is refused too.
 */
#ifndef INPARALLEL_PROTOBUF_H
#define INPARALLEL_PROTOBUF_H

#include <inparallel.h>
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A serializer for messages of type `descriptor` (borrowed: generated descriptors are static).
 * Owned by the caller: free it with ip_serializer_free() after its tasks and futures.
 * NULL with errno EINVAL (NULL or not a message descriptor) or ENOMEM. */
IP_EXTERN ip_serializer *ip_serializer_protobuf_new(const ProtobufCMessageDescriptor *descriptor);

#ifdef __cplusplus
}
#endif
#endif
