/*  limit: the limits on what a caller may ask for, in one place. The gateway checks them
    before a call leaves it, the approval service enforces them where the request is decided,
    and docs/openapi.yaml states each one (tests/integration/test_contract.py compares the
    document with this file). A service setting may lower a limit, never raise it. */
#ifndef BERTH_LIMIT_H
#define BERTH_LIMIT_H

/* A request for VMs. */
#define LIMIT_COUNT_MAX           50 /* VMs one request asks for (approval's max_count may lower) */
#define LIMIT_VM_NAME_MAX         51 /* a VM name: a hostname label once "-N" is added (<= 63) */
#define LIMIT_TEMPLATE_REF_MAX    64 /* the template a request names: its id or its name */
#define LIMIT_GROUP_REF_MAX       64 /* the group a request names: its id or its name */
#define LIMIT_IDEMPOTENCY_KEY_MAX 128  /* Idempotency-Key header, [A-Za-z0-9._-] */
#define LIMIT_REASON_MAX          1024 /* an admin's reason for a decision, in bytes */
#define LIMIT_POOL_SIZE_MAX       20   /* VMs a template's instant-deploy pool keeps built ahead */

/* A template. */
#define LIMIT_TEMPLATE_NAME_MAX 63 /* [a-z0-9][a-z0-9._-]*, not a UUID */
#define LIMIT_VCPUS_MAX         256
#define LIMIT_RAM_MB_MIN        64
#define LIMIT_RAM_MB_MAX        4194304 /* 4 TiB */
#define LIMIT_DISK_GB_MAX       65536
#define LIMIT_LEASE_DAYS_MAX    3650
#define LIMIT_TEXT_MAX          128 /* image, os (approval's max_text may lower) */

/* Users. */
#define LIMIT_USER_NAME_MAX     64
#define LIMIT_DISPLAY_NAME_MAX  128 /* a user's display name, in bytes, no control characters */
#define LIMIT_EMAIL_MAX         254 /* a user's email address: local@domain (RFC 5321 path) */
#define LIMIT_APIKEY_NAME_MAX   64  /* an API key's name: [A-Za-z0-9._-] */
#define LIMIT_APIKEY_DAYS_MAX   366 /* an API key's lifetime in days (apikey_days_max may lower) */
#define LIMIT_APIKEY_GROUPS_MAX 32  /* groups one API key is scoped to */

/* Groups (approval enforces them; the gateway checks them first). */
#define LIMIT_GROUP_NAME_MAX        63              /* [a-z0-9][a-z0-9._-]*, not a UUID */
#define LIMIT_GROUP_TEXT_MAX        256             /* description, in bytes */
#define LIMIT_GROUP_COST_CENTRE_MAX 64              /* cost_centre, printable */
#define LIMIT_GROUP_MEMBERS_MAX     1000            /* members of one group */
#define LIMIT_GROUP_QUOTA_MAX       1099511627776LL /* 2^40: largest quota value */

/* A group's webhook (approval enforces them; the gateway checks them first: util_webhook_check). */
#define LIMIT_WEBHOOK_URL_MAX    2048 /* the URL, in bytes */
#define LIMIT_WEBHOOK_SECRET_MIN 16   /* the signing secret, in bytes: long enough to guess at */
#define LIMIT_WEBHOOK_SECRET_MAX 256

/* Day-2 actions (taskmgr and the agent enforce it; the gateway checks it first). */
#define LIMIT_STOP_TIMEOUT_MAX_S 3600 /* a stop's or shelve's graceful shutdown, in seconds */

/* Group reservations (approval enforces them; the gateway checks them first). */
#define LIMIT_RESERVATIONS_MAX    32              /* reservations of one group */
#define LIMIT_GROUP_TEMPLATES_MAX 64              /* templates a group offers by name */
#define LIMIT_RESERVE_VCPUS_MAX   1048576         /* vcpus of one reservation */
#define LIMIT_RESERVE_RAM_MB_MAX  1099511627776LL /* 2^40: ram_mb of one reservation */
#define LIMIT_RESERVE_DISK_GB_MAX 1099511627776LL /* 2^40: disk_gb of one reservation */
#define LIMIT_HOST_REF_MAX        127             /* a reservation's host: its id or its name */

/* The image store (services/stager): an imported image's descriptive texts (os_version, arch,
   an application's name and version) and its applications. */
#define LIMIT_IMAGE_TEXT_MAX 64
#define LIMIT_IMAGE_APPS_MAX 64
#define LIMIT_IMAGE_NAME_MAX 64   /* an image's name: [a-z0-9][a-z0-9._-]* */
#define LIMIT_IMAGE_PATH_MAX 1024 /* the file an import names, under the import directory */
#define LIMIT_IMAGE_CMDLINE_MAX 512 /* a direct-boot image's kernel command line */
#define LIMIT_IMAGE_MANIFEST_MAX 16384 /* an image's manifest (JSON text), in bytes */
#define LIMIT_IMAGE_MANIFEST_FILES_MAX 256 /* files one image's manifest lists */
/* An image file uploaded over HTTP (the gateway's image_upload_max_bytes at most): 1 TiB */
#define LIMIT_IMAGE_UPLOAD_MAX 1099511627776

/* Rate cards (the meter; POST /v1/rates). Prices are integer minor units: per 1,000 hours for
   vCPU, GB-RAM and GB-disk, per day for a template; factors are per mille. */
#define LIMIT_RATE_PRICE_MAX     1000000000000LL /* 10^12: largest price on a card */
#define LIMIT_RATE_FACTOR_MAX    10000           /* a billing state's factor (per mille) */
#define LIMIT_RATE_TEMPLATES_MAX 64              /* template prices on one card */
#define LIMIT_RATE_NOTE_MAX      256             /* a card's note, in bytes */
#define LIMIT_BUDGET_AMOUNT_MAX     1000000000000000LL /* 10^15: a month's budget, minor units */
#define LIMIT_BUDGET_THRESHOLDS_MAX 10                 /* alert thresholds of one budget */
#define LIMIT_BUDGET_THRESHOLD_MAX  1000               /* a threshold, percent of the budget */

/* SSH public keys (the gateway keeps them; POST /v1/keys, a request's ssh_keys). */
#define LIMIT_SSH_KEY_NAME_MAX     64   /* a key's name: [A-Za-z0-9._-] */
#define LIMIT_SSH_KEY_MAX          8192 /* an OpenSSH public key line, in bytes */
#define LIMIT_SSH_KEYS_PER_USER    64   /* keys one user holds (ssh_keys_per_user_max may lower) */
#define LIMIT_REQUEST_SSH_KEYS_MAX 16   /* keys one request installs in its VMs */

/* Networks (approval; POST /v1/networks). */
#define LIMIT_NETWORK_NAME_MAX   63  /* [a-z0-9][a-z0-9._-]*, not a UUID */
#define LIMIT_NETWORK_PREFIX_MIN 16  /* the largest network: a /16 (65,533 addresses to give) */
#define LIMIT_NETWORK_PREFIX_MAX 30  /* the smallest: a /30 (one address beside the gateway) */
#define LIMIT_NETWORK_DNS_MAX    4   /* name servers of one network */
#define LIMIT_NETWORK_BRIDGE_MAX 15  /* a host bridge's name (a Linux interface name) */
#define LIMIT_NETWORK_ATTACH_MAX 64  /* a libvirt network's name */
#define LIMIT_NETWORK_GROUPS_MAX 64  /* groups a network is limited to */
#define LIMIT_NETWORKS_MAX       256 /* networks on the platform */
#define LIMIT_VM_NETWORKS_MAX    4   /* networks one VM (its template or request) is on */

/* Image transfer between the stager and the agents (bus only, no API: settings of both are
   checked against these, so they are not stated in docs/openapi.yaml). A chunk travels in one
   envelope (ENVELOPE_MAX_BYTES, 4 MiB) with room to spare. */
#define TRANSFER_CHUNK_MIN   4096    /* smallest chunk (image_chunk_bytes, image_chunk_max) */
#define TRANSFER_CHUNK_MAX   2097152 /* largest chunk: 2 MiB */
#define TRANSFER_CREDIT_MAX  64      /* chunk requests one transfer keeps in flight */
#define TRANSFER_RETRIES_MAX 16      /* times one bad or lost chunk is asked for again */
/* An upload to the stager (a captured VM disk, POST /v1/vms/{id}/capture): the largest file
   the stager takes (its capture_max_bytes is at most this) and uploads open at once. */
#define TRANSFER_UPLOAD_MAX       1099511627776LL /* 1 TiB */
#define TRANSFER_UPLOADS_OPEN_MAX 64

#endif
