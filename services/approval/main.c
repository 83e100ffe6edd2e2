/*  berth-approval: requests, the template catalog and approval policy. The logic lives in
    catalog.c and requests.c, the bus handlers in approval.c; this file only starts the
    service, binds the handlers and keeps trying to seed the catalog until Redis answers. */
#include "approval.h"
#include "service.h"

static int s_seed_job(service_t *service, void *arg)
{
    (void)service;
    approval_seed(arg);
    return 0;
}

int main(int argc, char **argv)
{
    service_t *service = service_new("approval", argc, argv);
    if (!service)
        return 2;
    config_t *c = service_config(service);
    policy_declare(c);
    approval_t *approval = NULL;
    assertion_t *verifier = NULL;
    policy_t policy;
    policy_defaults(&policy);
    int rc = 1;
    berth_error_t error = { 0 };
    if (service_start(service) != 0 || policy_load(&policy, c) != 0)
        goto done;
    /* Who a call acts for is only what the gateway signed: no key, no service. */
    verifier = assertion_verifier_new(config_get(c, "secrets_dir"), &error);
    if (!verifier) {
        log_error(NULL, "cannot load the user assertion key", "{s:s}", "reason", error.message);
        goto done;
    }
    approval = approval_new(service_store(service), verifier, &policy);
    if (!approval)
        goto done;
    approval_set_client(approval, service_client(service));
    for (const approval_handler_t *h = approval_handlers; h->type; h++)
        service_on(service, h->type, "gateway", h->fn, approval); /* the gateway only */
    approval_seed(approval);
    service_every(service, service_heartbeat_ms(service), s_seed_job, approval);
    rc = service_run(service);
done:
    approval_destroy(&approval);
    assertion_destroy(&verifier);
    service_destroy(&service);
    return rc;
}
