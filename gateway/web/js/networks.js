// Networks (GET /v1/networks, /v1/networks/{id}): everyone reads them, with how many of each
// pool's addresses VMs hold; admins add one (POST) and delete one no VM holds an address on
// (DELETE; a 409 says it is in use).
import * as api from './api.js';
import { h, clear, fill, when, usageBar, confirmDialog } from './dom.js';
import { state, showError, announce, fieldErrors, groupName } from './ui.js';

function isAdmin() {
  return state.me && state.me.role === 'admin';
}

function attach(n) {
  return n.bridge ? `bridge ${n.bridge}` : n.libvirt_network ? `libvirt network ${n.libvirt_network}` : '—';
}

function groups(n) {
  return n.groups.length ? n.groups.map(groupName).join(', ') : 'every group';
}

function addForm(done) {
  const fe = fieldErrors('net');
  const inputs = {
    name: h('input', { required: true, autocomplete: 'off', maxlength: 63 }),
    cidr: h('input', { required: true, autocomplete: 'off', placeholder: '10.20.0.0/26' }),
    gateway: h('input', { required: true, autocomplete: 'off', placeholder: '10.20.0.1' }),
    dns: h('input', { autocomplete: 'off', placeholder: '10.20.0.1, 9.9.9.9' }),
    kind: h('select', {}, h('option', { value: 'bridge' }, 'Host bridge'),
      h('option', { value: 'libvirt_network' }, 'libvirt network')),
    attach: h('input', { required: true, autocomplete: 'off', placeholder: 'br0' }),
    groups: h('select', { multiple: true, size: Math.min(5, Math.max(2, state.groups.size)) },
      [...state.groups].map(([id, name]) => h('option', { value: id }, name))),
    is_default: h('input', { type: 'checkbox' }),
  };
  const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'net-add-title' },
    h('h2', { id: 'net-add-title' }, 'Add a network'),
    fe.field('name', 'Name', inputs.name, 'Lower case letters, digits, dots, dashes and underscores.'),
    h('div', { className: 'filters' },
      fe.field('cidr', 'CIDR', inputs.cidr, 'An IPv4 network, /16 to /30.'),
      fe.field('gateway', 'Gateway', inputs.gateway),
      fe.field('dns', 'DNS servers', inputs.dns, 'Comma separated, at most 4.')),
    h('div', { className: 'filters' },
      fe.field('kind', 'Attach to', inputs.kind),
      fe.field('attach', 'Bridge or network name', inputs.attach)),
    fe.field('groups', 'Groups', inputs.groups, 'The groups whose VMs may use it; none chosen: every group.'),
    h('div', { className: 'field' }, h('label', {}, inputs.is_default, ' The default network (for templates that name none)')),
    h('button', { type: 'submit', className: 'primary' }, 'Add network'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fe.reset();
    const body = { name: inputs.name.value.trim(), cidr: inputs.cidr.value.trim(), gateway: inputs.gateway.value.trim() };
    const dns = inputs.dns.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (dns.length) body.dns = dns;
    body[inputs.kind.value] = inputs.attach.value.trim();
    const chosen = [...inputs.groups.selectedOptions].map((o) => o.value);
    if (chosen.length) body.groups = chosen;
    if (inputs.is_default.checked) body.is_default = true;
    try {
      const { network } = await api.post('/v1/networks', body);
      announce(`Network ${network.name} added: ${network.addresses} addresses`);
      form.reset();
      await done();
    } catch (err) {
      // bridge and libvirt_network share one input: its error shows there whichever it names.
      if (err.details && (err.details.field === 'bridge' || err.details.field === 'libvirt_network')) {
        err.details.field = 'attach';
      }
      if (!fe.show(err)) showError(err);
    }
  });
  return form;
}

async function deleteNetwork(n, done) {
  showError(null);
  if (!(await confirmDialog({ title: `Delete the network ${n.name}?`, danger: true, confirm: 'Delete',
    message: 'Templates that name it can no longer be placed. This cannot be undone.' }))) return;
  try {
    await api.del('/v1/networks/' + encodeURIComponent(n.id));
    announce(`Network ${n.name} deleted`);
    await done();
  } catch (err) {
    if (err.status === 409) err.message = `${n.name} stays: ${err.message}`;
    showError(err);
  }
}

async function networkDetail(id) {
  const { network: n } = await api.get('/v1/networks/' + encodeURIComponent(id));
  const section = h('section', {}, h('h1', {}, `Network ${n.name}`),
    h('p', {}, h('a', { href: '#/networks' }, 'All networks')),
    h('dl', { className: 'props card', id: 'network-props' },
      [['CIDR', n.cidr], ['Gateway', n.gateway], ['DNS', n.dns.join(', ') || '—'], ['Attached to', attach(n)],
        ['Groups', groups(n)], ['Default', n.is_default ? 'yes' : 'no'],
        ['Addresses', usageBar('Addresses in use', n.allocated, n.addresses)],
        ['Created', `${when(n.created_at)}${n.created_by ? ' by ' + n.created_by : ''}`], ['Id', h('code', {}, n.id)]]
        .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    isAdmin() ? h('div', { className: 'actions' }, h('button', { type: 'button', className: 'danger',
      onclick: () => deleteNetwork(n, async () => { location.hash = '#/networks'; }) }, 'Delete network')) : null);
  return { title: 'Network', node: section };
}

export async function networksScreen(id) {
  if (id) return networkDetail(id);
  const tbody = h('tbody', {});
  const section = h('section', {});
  async function load() {
    const { networks } = await api.get('/v1/networks');
    clear(tbody).append(...networks.map((n) => h('tr', { dataset: { network: n.name } },
      h('th', { scope: 'row' }, h('a', { href: '#/networks/' + encodeURIComponent(n.id) }, n.name),
        n.is_default ? ' (default)' : ''),
      h('td', {}, n.cidr), h('td', {}, n.gateway), h('td', {}, attach(n)), h('td', {}, groups(n)),
      h('td', {}, usageBar("in use", n.allocated, n.addresses)),
      isAdmin() ? h('td', {}, h('button', { type: 'button', className: 'danger', 'aria-label': `Delete ${n.name}`,
        onclick: () => deleteNetwork(n, load) }, 'Delete')) : null)));
    if (!networks.length) tbody.append(h('tr', {}, h('td', { colspan: 7 }, 'No networks yet.')));
  }
  await load();
  const cols = ['Name', 'CIDR', 'Gateway', 'Attached to', 'Groups', 'Addresses in use'];
  if (isAdmin()) cols.push('');
  fill(section, h('h1', {}, 'Networks'),
    h('table', { id: 'networks' }, h('caption', { className: 'sr-only' }, 'Networks VMs get addresses on'),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))), tbody),
    isAdmin() ? addForm(load) : null);
  return { title: 'Networks', node: section };
}
