/*  berth-stager: the image store: base images and cloud-init seeds. */
#include "service.h"

int main(int argc, char **argv)
{
    service_t *service = service_new("stager", argc, argv);
    if (!service)
        return 2;
    int rc = 1;
    if (service_start(service) == 0)
        rc = service_run(service);
    service_destroy(&service);
    return rc;
}
