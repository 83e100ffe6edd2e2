/*  rates: the meter's rate cards. A card prices vCPU-, GB-RAM- and GB-disk-hours, a fixed
    price per template per day and a factor per billing state, in integer minor units of one
    currency, from its effective time on. Cards are written once and never changed, and none
    takes effect before the platform's now: a change of rates is never retroactive. */
#ifndef BERTH_METER_RATES_H
#define BERTH_METER_RATES_H

#include "berth.pb-c.h"
#include "error.h"
#include "store.h"

#include <stdint.h>

#define RATES_MAX 10000 /* cards the meter keeps; more are refused (CONFLICT) */

/* Check card (a new card as a user wrote it) and store it with a new id, created_ms = now_ms
   and created_by = actor; effective_ms 0 means now_ms. 0 and *out (free with
   berth__rate_card__free_unpacked), or -1 with error: BAD_REQUEST naming the field,
   CONFLICT (another currency than the cards before it, or a card already takes effect at
   that time), UNAVAILABLE (Redis). */
int rates_create(store_t *store, const Berth__RateCard *card, const char *actor, int64_t now_ms,
                 Berth__RateCard **out, berth_error_t *error);

/* Every card, by effective_ms (then created_ms). 0 and *out (free with
   berth__rate_card_list__free_unpacked or rates_list_free), or -1 with error. */
int rates_list(store_t *store, Berth__RateCardList **out, berth_error_t *error);
void rates_list_free(Berth__RateCardList **list_p);

/* One card by id. 0 and *out, or -1 with error (NOT_FOUND, BAD_REQUEST naming id). */
int rates_get(store_t *store, const char *id, Berth__RateCard **out, berth_error_t *error);

#endif
