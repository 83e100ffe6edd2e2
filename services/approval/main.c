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
    policy_declare(service_config(service));
    approval_t *approval = NULL;
    policy_t policy;
    policy_defaults(&policy);
    int rc = 1;
    if (service_start(service) == 0 && policy_load(&policy, service_config(service)) == 0 &&
        (approval = approval_new(service_store(service), &policy)) != NULL) {
        for (const approval_handler_t *h = approval_handlers; h->type; h++)
            service_on(service, h->type, h->fn, approval);
        approval_seed(approval);
        service_every(service, service_heartbeat_ms(service), s_seed_job, approval);
        rc = service_run(service);
    }
    approval_destroy(&approval);
    service_destroy(&service);
    return rc;
}
