/*  rates: rate cards stored as RateCard hashes (berth:rate:<id>) indexed by effective time
    (berth:rates), written in one model_tx with a rate.created event. A card is checked
    whole here, the owner of the fact, whatever the gateway checked before. */
#include "rates.h"
#include "keys.h"
#include "limit.h"
#include "log.h"
#include "model.h"
#include "util.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_currency_ok(const char *c)
{
    if (!c || strlen(c) != 3)
        return 0;
    for (int i = 0; i < 3; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return 0;
    return 1;
}

static int s_template_ok(const char *t)
{
    if (!t || !*t || strlen(t) > LIMIT_TEMPLATE_NAME_MAX)
        return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

/* The card's own rules: BAD_REQUEST naming the field, or 0. */
static int s_check(const Berth__RateCard *c, int64_t now_ms, berth_error_t *error)
{
    if (!s_currency_ok(c->currency))
        return error_field(error, "currency", "currency must be an ISO 4217 code (EUR, USD)");
    const struct {
        const char *name;
        int64_t value;
    } prices[] = { { "vcpu_hour", c->vcpu_hour },
                   { "ram_gb_hour", c->ram_gb_hour },
                   { "disk_gb_hour", c->disk_gb_hour } };
    for (size_t i = 0; i < sizeof prices / sizeof prices[0]; i++)
        if (prices[i].value < 0 || prices[i].value > LIMIT_RATE_PRICE_MAX)
            return error_field(error, prices[i].name, "%s must be 0 to %lld minor units",
                               prices[i].name, (long long)LIMIT_RATE_PRICE_MAX);
    const struct {
        const char *name;
        int32_t value;
    } factors[] = { { "factor_running", c->factor_running },
                    { "factor_stopped", c->factor_stopped },
                    { "factor_shelved", c->factor_shelved },
                    { "factor_expired", c->factor_expired } };
    for (size_t i = 0; i < sizeof factors / sizeof factors[0]; i++)
        if (factors[i].value < 0 || factors[i].value > LIMIT_RATE_FACTOR_MAX)
            return error_field(error, factors[i].name, "%s must be 0 to %d per mille",
                               factors[i].name, LIMIT_RATE_FACTOR_MAX);
    if (c->n_templates > LIMIT_RATE_TEMPLATES_MAX)
        return error_field(error, "templates", "a card prices at most %d templates",
                           LIMIT_RATE_TEMPLATES_MAX);
    for (size_t i = 0; i < c->n_templates; i++) {
        const Berth__RateTemplatePrice *t = c->templates[i];
        if (!s_template_ok(t->template_))
            return error_field(error, "templates", "templates[%zu].template is not a template name",
                               i);
        if (t->per_day < 0 || t->per_day > LIMIT_RATE_PRICE_MAX)
            return error_field(error, "templates", "templates[%zu].per_day must be 0 to %lld", i,
                               (long long)LIMIT_RATE_PRICE_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->templates[j]->template_, t->template_) == 0)
                return error_field(error, "templates", "template %s is priced twice", t->template_);
    }
    if (c->note && strlen(c->note) > LIMIT_RATE_NOTE_MAX)
        return error_field(error, "note", "note is longer than %d bytes", LIMIT_RATE_NOTE_MAX);
    if (c->effective_ms < 0 || c->effective_ms > (INT64_C(1) << 52))
        return error_field(error, "effective_ms", "effective_ms is not a time");
    if (c->effective_ms && c->effective_ms < now_ms)
        return error_field(error, "effective_ms",
                           "a rate card cannot take effect in the past (rates are never "
                           "retroactive)");
    return 0;
}

int rates_create(store_t *store, const Berth__RateCard *card, const char *actor, int64_t now_ms,
                 Berth__RateCard **out, berth_error_t *error)
{
    assert(store && out);
    if (!card)
        return error_field(error, "card", "a rate card is required");
    if (s_check(card, now_ms, error) != 0)
        return -1;
    /* One currency for every card: a report adds charges of several cards together. */
    Berth__RateCardList *all = NULL;
    if (rates_list(store, &all, error) != 0)
        return -1;
    int64_t effective = card->effective_ms ? card->effective_ms : now_ms;
    int rc = 0;
    if (all->n_cards >= RATES_MAX)
        rc = error_set(error, "CONFLICT", "the meter keeps at most %d rate cards", RATES_MAX);
    for (size_t i = 0; rc == 0 && i < all->n_cards; i++) {
        if (strcmp(all->cards[i]->currency, card->currency) != 0) {
            rc = error_set(error, "CONFLICT", "every rate card is in %s", all->cards[i]->currency);
            error_detail(error, "field", "currency");
        } else if (all->cards[i]->effective_ms == effective) {
            rc = error_set(error, "CONFLICT", "rate card %s already takes effect at that time",
                           all->cards[i]->id);
            error_detail(error, "field", "effective_ms");
        }
    }
    rates_list_free(&all);
    if (rc != 0)
        return -1;

    char id[UTIL_ID_LEN], key[KEYS_MAX], at[32];
    util_uuid(id);
    keys_build(key, KEYS_RATE, id, NULL);
    Berth__RateCard stored = *card;
    stored.id = id;
    stored.effective_ms = effective;
    stored.created_ms = now_ms;
    stored.created_by = (char *)(actor ? actor : "");
    stored.note = card->note ? card->note : (char *)"";
    stored.version = 1;
    snprintf(at, sizeof at, "%" PRId64, effective);
    model_tx_t *tx = model_tx_new();
    if (!tx)
        return error_set(error, "INTERNAL", "out of memory");
    model_tx_check_version(tx, key, 0);
    model_tx_put(tx, key, &stored.base);
    model_tx_zadd(tx, KEYS_RATES, effective, id);
    model_tx_event(tx, "rate.created", "key", key, "rate", id, "effective_ms", at, "currency",
                   card->currency, "actor", stored.created_by, NULL);
    model_tx_actor(tx, stored.created_by, NULL);
    const char *why = NULL;
    rc = model_tx_commit(tx, store, &why);
    model_tx_destroy(&tx);
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "cannot store the rate card: %s",
                         why ? why : "state store unreachable");
    return rates_get(store, id, out, error);
}

static int s_by_effective(const void *a, const void *b)
{
    const Berth__RateCard *x = *(Berth__RateCard *const *)a, *y = *(Berth__RateCard *const *)b;
    if (x->effective_ms != y->effective_ms)
        return x->effective_ms < y->effective_ms ? -1 : 1;
    if (x->created_ms != y->created_ms)
        return x->created_ms < y->created_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

int rates_list(store_t *store, Berth__RateCardList **out, berth_error_t *error)
{
    redisReply *ids = store_command(store, "ZRANGE %s 0 -1", KEYS_RATES);
    if (!ids || ids->type != REDIS_REPLY_ARRAY) {
        if (ids)
            freeReplyObject(ids);
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    }
    Berth__RateCardList *list = malloc(sizeof *list);
    if (list) {
        berth__rate_card_list__init(list);
        list->cards = calloc(ids->elements + 1, sizeof *list->cards);
    }
    if (!list || !list->cards) {
        free(list);
        freeReplyObject(ids);
        return error_set(error, "INTERNAL", "out of memory");
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < ids->elements; i++) {
        if (ids->element[i]->type != REDIS_REPLY_STRING)
            continue;
        char key[KEYS_MAX];
        ProtobufCMessage *m = NULL;
        int lrc = model_load(store, &berth__rate_card__descriptor,
                             keys_build(key, KEYS_RATE, ids->element[i]->str, NULL), &m);
        if (lrc == MODEL_NOT_FOUND)
            continue;
        if (lrc != 0)
            rc = error_set(error, "UNAVAILABLE", "state store unreachable");
        else
            list->cards[list->n_cards++] = (Berth__RateCard *)m;
    }
    freeReplyObject(ids);
    if (rc != 0) {
        rates_list_free(&list);
        return -1;
    }
    qsort(list->cards, list->n_cards, sizeof *list->cards, s_by_effective);
    *out = list;
    return 0;
}

void rates_list_free(Berth__RateCardList **list_p)
{
    if (list_p && *list_p) {
        Berth__RateCardList *list = *list_p;
        for (size_t i = 0; i < list->n_cards; i++)
            berth__rate_card__free_unpacked(list->cards[i], NULL);
        free(list->cards);
        free(list);
        *list_p = NULL;
    }
}

int rates_get(store_t *store, const char *id, Berth__RateCard **out, berth_error_t *error)
{
    if (!id || !util_is_uuid(id))
        return error_field(error, "id", "id must be a rate card id");
    char key[KEYS_MAX];
    ProtobufCMessage *m = NULL;
    int rc =
        model_load(store, &berth__rate_card__descriptor, keys_build(key, KEYS_RATE, id, NULL), &m);
    if (rc == MODEL_NOT_FOUND)
        return error_set(error, "NOT_FOUND", "no such rate card");
    if (rc != 0)
        return error_set(error, "UNAVAILABLE", "state store unreachable");
    *out = (Berth__RateCard *)m;
    return 0;
}
