/*  berth-scheduler: places VMs on hosts: filters, weighers, atomic claims. */
#include "service.h"

int main(int argc, char **argv)
{
    service_t *service = service_new("scheduler", argc, argv);
    if (!service)
        return 2;
    int rc = 1;
    if (service_start(service) == 0)
        rc = service_run(service);
    service_destroy(&service);
    return rc;
}
