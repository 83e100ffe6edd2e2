/*  berth-taskmgr: runs tasks (provisioning, disposal) and is the host agents' endpoint.
    Agents connect out to it to heartbeat and to park a work poll (agents.c); the task engine
    (tasks.c) drives each VM through its stages and hands commands to the parked polls. Any
    number of instances share the work. */
#include "agents.h"
#include "tasks.h"

int main(int argc, char **argv)
{
    service_t *service = service_new("taskmgr", argc, argv);
    if (!service)
        return 2;
    tasks_declare(service_config(service));
    agents_declare(service_config(service));
    agents_t *agents = NULL;
    tasks_t *tasks = NULL;
    int rc = 1;
    if (service_start(service) == 0 && (agents = agents_new(service)) &&
        (tasks = tasks_new(service, agents)))
        rc = service_run(service);
    tasks_destroy(&tasks);
    agents_destroy(&agents);
    service_destroy(&service);
    return rc;
}
