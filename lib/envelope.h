/*  envelope: the one frame carried on the bus. Packs an outgoing envelope around a typed
    body and unpacks/validates an incoming one, refusing garbage with a reason. */
#ifndef BERTH_ENVELOPE_H
#define BERTH_ENVELOPE_H

#include "berth.pb-c.h"
#include "error.h"

#include <czmq.h>

#define ENVELOPE_MAX_BYTES (4 * 1024 * 1024) /* largest frame any socket accepts */
#define ENVELOPE_MAX_ID    128               /* longest id/type/sender string */

/* What to put in an outgoing envelope. Strings are borrowed. */
typedef struct {
    const char *message_id;     /* required */
    const char *correlation_id; /* on replies */
    const char *type;           /* defaults to body's message name */
    int64_t deadline_ms;
    const char *request_id;
    const char *sender;
    const char *service;          /* on requests: the service meant (NULL = any) */
    const ProtobufCMessage *body; /* may be NULL (an empty body) */
    const char *error_code;       /* when set: an Error reply */
    const char *error_message;
    const berth_error_t *error; /* when set: an Error reply with details (wins over the two
                                   fields above) */
} envelope_spec_t;

/* Serialize spec into a new frame; NULL if spec is invalid (missing id or type). */
zframe_t *envelope_pack(const envelope_spec_t *spec);

/* Parse and validate a received frame. Returns NULL on garbage and points *reason at a
   static description. The result is freed with berth__envelope__free_unpacked(env, NULL). */
Berth__Envelope *envelope_unpack(const uint8_t *data, size_t size, const char **reason);

/* Unpack the body as desc's message. NULL if the envelope's type is not desc's or the body
   does not parse. Free with protobuf_c_message_free_unpacked(). */
ProtobufCMessage *envelope_body(const Berth__Envelope *env, const ProtobufCMessageDescriptor *desc);

#endif
