/*  networks: the networks VMs get addresses on (berth:network:<id>, the index berth:networks,
    the name index berth:network-name:<name>, the default berth:network-default). Admins add,
    read and delete them; a request resolves its template's network (or the default) into
    the VM's VmNetwork; the scheduler allocates the address in the claim's step
    (lib/lua/placement_claim.lua). Every write is one model_tx. */
#ifndef BERTH_APPROVAL_NETWORKS_H
#define BERTH_APPROVAL_NETWORKS_H

#include "fault.h"
#include "store.h"

#include "berth.pb-c.h"

/* Check every field of a network to add (name, cidr, gateway, dns, bridge or libvirt
   network, groups: each a group id or name, replaced by its id in *resolved). 0, or -1 with
   BAD_REQUEST naming the field (NOT_FOUND for a group that does not exist). */
int networks_check(store_t *store, const Berth__Network *net, char ***groups_p, size_t *n_groups,
                   fault_t *fault);

/* Add a network after networks_check; *out_p is the network as stored (free with
   protobuf_c_message_free_unpacked). CONFLICT when the name is taken, another network is
   already the default, or LIMIT_NETWORKS_MAX networks exist. */
int networks_create(store_t *store, const Berth__Network *net, const char *actor,
                    Berth__Network **out_p, fault_t *fault);

/* Every network, sorted by name, with the pool's size and how much of it is allocated. */
int networks_list(store_t *store, Berth__NetworkList **list_p, fault_t *fault);
void networks_list_destroy(Berth__NetworkList **list_p);

/* The network ref names (its id or name), with its pool's size and allocated count.
   NOT_FOUND "unknown network '<ref>'". */
int networks_find(store_t *store, const char *ref, Berth__Network **out_p, fault_t *fault);

/* Delete the network ref names; refused (CONFLICT) while a VM holds an address on it, in the
   same step as the delete. *out_p: the network as it was. */
int networks_delete(store_t *store, const char *ref, const char *actor, Berth__Network **out_p,
                    fault_t *fault);

/* The network a VM gets in group: the one its request names (requested: BAD_REQUEST naming
   network when there is none so named; FORBIDDEN naming it when the group may not use it),
   else the template's (by name: NOT_FOUND naming the field template's network when gone;
   FORBIDDEN when the group may not use it), else the default network if the group may use
   it, else none (*out_p NULL, 0). *out_p is a VmNetwork without address (free with
   protobuf_c_message_free_unpacked). */
int networks_for_vm(store_t *store, const char *requested, const char *template_network,
                    const char *group, Berth__VmNetwork **out_p, fault_t *fault);

/* Every network a VM gets in group, in order: the request's list (requested_list; each
   BAD_REQUEST or FORBIDDEN naming networks[i]; requested, when also set, must be its first),
   else its one network, else the template's list (FORBIDDEN naming template), else as
   networks_for_vm. *out_p (free with networks_vm_list_free) holds *n_out VmNetworks
   without addresses (NULL and 0: none); a network named twice is BAD_REQUEST. */
int networks_for_vm_all(store_t *store, const char *requested, char **requested_list,
                        size_t n_requested, const char *template_network, char **template_list,
                        size_t n_template, const char *group, Berth__VmNetwork ***out_p,
                        size_t *n_out, fault_t *fault);
void networks_vm_list_free(Berth__VmNetwork ***list_p, size_t n);
/* The number of addresses net's pool gives (every address of its cidr but the network
   address, the broadcast and the gateway), or -1 when its cidr does not parse. */
int64_t networks_pool_size(const char *cidr, const char *gateway);

#endif
