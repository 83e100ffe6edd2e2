/*  user_record: the integrity of a user record (berth:user:<name>). The gateway keeps a MAC
    in each record, keyed BLAKE2b under user.secret (made by berth-secrets, in the gateway's
    view only, never in Redis), over the fields that grant power: name, password hash, role,
    state and epoch. A record written or changed in Redis without the key fails its MAC and
    the gateway refuses it, so writing one hash never makes an admin. */
#ifndef BERTH_USER_RECORD_H
#define BERTH_USER_RECORD_H

#include "store.h"

#define USER_RECORD_KEY_FILE  "user.secret" /* in secrets_dir: 32 bytes, hex */
#define USER_RECORD_KEY_LEN   32
#define USER_RECORD_MAC_HEX   65 /* 32-byte BLAKE2b in hex, with its NUL */
#define USER_RECORD_EPOCH_MAX 40 /* an epoch's text with its NUL */
#define USER_RECORD_VERSION   1  /* berth:schema:users this build reads (records with a MAC) */

/* The key from secrets_dir/user.secret into key. 0, or -1 with errno set (ENODATA: not 32
   bytes of hex). */
int user_record_key_read(const char *secrets_dir, unsigned char key[USER_RECORD_KEY_LEN]);

/* The MAC of a record's power fields (hex into out). An absent state is "ACTIVE", an absent
   epoch "": pass what the record would read as. */
void user_record_mac(const unsigned char key[USER_RECORD_KEY_LEN], const char *name,
                     const char *password, const char *role, const char *state, const char *epoch,
                     char out[USER_RECORD_MAC_HEX]);

/* Does mac (hex, may be NULL) match those fields? Constant time. */
int user_record_mac_ok(const unsigned char key[USER_RECORD_KEY_LEN], const char *name,
                       const char *password, const char *role, const char *state,
                       const char *epoch, const char *mac);

/* A new random epoch ("e" and 24 hex digits) into out: a user's tokens carry the epoch they
   were issued in, and a new one (password change) revokes them all. */
void user_record_epoch(char out[USER_RECORD_EPOCH_MAX]);

/* Bring the user records to USER_RECORD_VERSION (the gateway runs it at start, holding the
   key): index every user in berth:users and the ACTIVE admins in berth:admins, and give the
   records of the release before MACs theirs. Records are blessed only while no record has
   a MAC yet (a store that was migrated, then had berth:schema:users deleted, blesses
   nothing: a hash written meanwhile stays refused); an interrupted run goes on with the
   names in berth:schema:users:todo. 0, or -1 when Redis failed. */
int user_record_migrate(store_t *store, const unsigned char key[USER_RECORD_KEY_LEN],
                        const char *owner, int wait_ms);

#endif
