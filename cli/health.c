/*  berth health: the platform's registered instances, as /v1/health reports them. */
#include "cli.h"

int cli_health(cli_t *cli, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: berth health\n");
        return 2;
    }
    json_t *body = NULL;
    if (cli_http(cli, "GET", "/v1/health", NULL, &body) != 0)
        return 1;
    if (cli->json)
        cli_print_json(body);
    else {
        printf("%-10s %-48s %-26s %s\n", "SERVICE", "INSTANCE", "ENDPOINT", "STATUS");
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(body, "services"), i, s)
            printf("%-10s %-48s %-26s %s\n", json_string_value(json_object_get(s, "service")),
                   json_string_value(json_object_get(s, "instance")),
                   json_string_value(json_object_get(s, "endpoint")),
                   json_string_value(json_object_get(s, "status")));
        printf("platform: %s\n", json_string_value(json_object_get(body, "status")));
    }
    json_decref(body);
    return 0;
}
