/*  envelope: packing and strict validation of bus frames. A frame from the network is
    untrusted: size, required fields, string lengths and the type's alphabet are checked. */
#include "envelope.h"

#include <ctype.h>
#include <string.h>

static int s_valid_token(const char *text, int required)
{
    if (!text || !*text)
        return !required;
    size_t len = strlen(text);
    if (len > ENVELOPE_MAX_ID)
        return 0;
    for (const char *c = text; *c; c++)
        if (!(isalnum((unsigned char)*c) || strchr("-_.:/@", *c)))
            return 0;
    return 1;
}

zframe_t *envelope_pack(const envelope_spec_t *spec)
{
    const char *type = spec->type;
    if (!type && spec->body)
        type = spec->body->descriptor->short_name;
    if ((spec->error_code || spec->error) && !type)
        type = "Error";
    if (!s_valid_token(spec->message_id, 1) || !s_valid_token(type, 1))
        return NULL;

    Berth__Envelope env = BERTH__ENVELOPE__INIT;
    Berth__Error error = BERTH__ERROR__INIT;
    env.message_id = (char *)spec->message_id;
    env.correlation_id = (char *)(spec->correlation_id ? spec->correlation_id : "");
    env.type = (char *)type;
    env.deadline_ms = spec->deadline_ms;
    env.request_id = (char *)(spec->request_id ? spec->request_id : "");
    env.sender = (char *)(spec->sender ? spec->sender : "");
    env.service = (char *)(spec->service ? spec->service : "");
    uint8_t *body = NULL;
    if (spec->body) {
        env.body.len = protobuf_c_message_get_packed_size(spec->body);
        body = malloc(env.body.len ? env.body.len : 1);
        if (!body)
            return NULL;
        protobuf_c_message_pack(spec->body, body);
        env.body.data = body;
    }
    Berth__Error__DetailsEntry entries[ERROR_DETAILS_MAX];
    Berth__Error__DetailsEntry *details[ERROR_DETAILS_MAX];
    if (spec->error) {
        error.code = (char *)spec->error->code;
        error.message = (char *)spec->error->message;
        for (size_t i = 0; i < spec->error->n_details && i < ERROR_DETAILS_MAX; i++) {
            berth__error__details_entry__init(&entries[i]);
            entries[i].key = (char *)spec->error->details[i].key;
            entries[i].value = (char *)spec->error->details[i].value;
            details[i] = &entries[i];
            error.n_details = i + 1;
        }
        error.details = details;
        env.error = &error;
    } else if (spec->error_code) {
        error.code = (char *)spec->error_code;
        error.message = (char *)(spec->error_message ? spec->error_message : "");
        env.error = &error;
    }
    size_t size = berth__envelope__get_packed_size(&env);
    zframe_t *frame = NULL;
    if (size <= ENVELOPE_MAX_BYTES) {
        frame = zframe_new(NULL, size);
        if (frame)
            berth__envelope__pack(&env, zframe_data(frame));
    }
    free(body);
    return frame;
}

Berth__Envelope *envelope_unpack(const uint8_t *data, size_t size, const char **reason)
{
    const char *why = NULL;
    Berth__Envelope *env = NULL;
    if (!data || size == 0)
        why = "empty frame";
    else if (size > ENVELOPE_MAX_BYTES)
        why = "frame too large";
    else if (!(env = berth__envelope__unpack(NULL, size, data)))
        why = "not a protobuf envelope";
    else if (!s_valid_token(env->message_id, 1))
        why = "missing or invalid message_id";
    else if (!s_valid_token(env->type, 1))
        why = "missing or invalid type";
    else if (!s_valid_token(env->correlation_id, 0) || !s_valid_token(env->request_id, 0) ||
             !s_valid_token(env->sender, 0) || !s_valid_token(env->service, 0))
        why = "invalid correlation_id, request_id, sender or service";
    else if (env->deadline_ms < 0)
        why = "negative deadline";
    if (why) {
        if (env)
            berth__envelope__free_unpacked(env, NULL);
        if (reason)
            *reason = why;
        return NULL;
    }
    return env;
}

ProtobufCMessage *envelope_body(const Berth__Envelope *env, const ProtobufCMessageDescriptor *desc)
{
    if (!env || !streq(env->type, desc->short_name))
        return NULL;
    return protobuf_c_message_unpack(desc, NULL, env->body.len, env->body.data);
}
