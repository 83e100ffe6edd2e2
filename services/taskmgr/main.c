/*  berth-taskmgr: runs tasks (provisioning, disposal), fires lease timers (leases.c) and is
    the host agents' endpoint.
    Agents connect out to it to heartbeat and to park a work poll (agents.c); the task engine
    (tasks.c) drives each VM through its stages and hands commands to the parked polls. Any
    number of instances share the work. */
#include "agents.h"
#include "leases.h"
#include "tasks.h"

int main(int argc, char **argv)
{
    service_t *service = service_new("taskmgr", argc, argv);
    if (!service)
        return 2;
    tasks_declare(service_config(service));
    agents_declare(service_config(service));
    leases_declare(service_config(service));
    agents_t *agents = NULL;
    tasks_t *tasks = NULL;
    leases_t *leases = NULL;
    int rc = 1;
    if (service_start(service) == 0 && (agents = agents_new(service)) &&
        (tasks = tasks_new(service, agents)) && (leases = leases_new(service))) {
        tasks_use_leases(tasks, leases);
        rc = service_run(service);
    }
    tasks_destroy(&tasks);
    leases_destroy(&leases);
    agents_destroy(&agents);
    service_destroy(&service);
    return rc;
}
