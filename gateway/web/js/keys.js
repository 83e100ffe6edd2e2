// The user's own SSH keys (GET/POST /v1/keys, DELETE /v1/keys/{name}): a request names some
// of them (ssh_keys) to install in its VMs.
import * as api from './api.js';
import { h, clear, when, confirmDialog } from './dom.js';
import { showError, announce, fieldErrors } from './ui.js';

export async function keysScreen() {
  const tbody = h('tbody', {});
  async function load() {
    const { keys } = await api.get('/v1/keys');
    clear(tbody).append(...keys.map((k) => h('tr', { dataset: { key: k.name } },
      h('th', { scope: 'row' }, k.name), h('td', {}, k.type), h('td', {}, h('code', {}, k.fingerprint)),
      h('td', {}, k.comment || ''), h('td', {}, when(k.created_at)),
      h('td', {}, h('button', { type: 'button', className: 'danger', 'aria-label': `Delete key ${k.name}`,
        onclick: async () => {
          showError(null);
          if (!(await confirmDialog({ title: `Delete the key ${k.name}?`, danger: true, confirm: 'Delete',
            message: 'VMs already asked for with it keep it.' }))) return;
          try {
            await api.del('/v1/keys/' + encodeURIComponent(k.name));
            announce(`Key ${k.name} deleted`);
            await load();
          } catch (err) { showError(err); }
        } }, 'Delete')))));
    if (!keys.length) tbody.append(h('tr', {}, h('td', { colspan: 6 }, 'No SSH keys yet.')));
  }
  const fe = fieldErrors('key');
  const name = h('input', { required: true, autocomplete: 'off', maxlength: 64 });
  const line = h('textarea', { required: true, rows: 4, className: 'pubkey', spellcheck: 'false' });
  const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'key-add-title' },
    h('h2', { id: 'key-add-title' }, 'Add a key'),
    fe.field('name', 'Key name', name, 'Letters, digits, dots, dashes and underscores.'),
    fe.field('public_key', 'Public key', line, 'One line of a .pub file, e.g. "ssh-ed25519 AAAA… you@laptop".'),
    h('button', { type: 'submit', className: 'primary' }, 'Add key'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fe.reset();
    try {
      const { key } = await api.post('/v1/keys', { name: name.value.trim(), public_key: line.value });
      announce(`Key ${key.name} added: ${key.fingerprint}`);
      form.reset();
      await load();
    } catch (err) {
      if (!fe.show(err)) showError(err);
    }
  });
  await load();
  return {
    title: 'SSH keys',
    node: h('section', {}, h('h1', {}, 'My SSH keys'),
      h('table', { id: 'ssh-keys' }, h('caption', { className: 'sr-only' }, 'Your SSH keys'),
        h('thead', {}, h('tr', {}, ['Name', 'Type', 'Fingerprint', 'Comment', 'Added', ''].map((c) => h('th', { scope: 'col' }, c)))),
        tbody),
      form),
  };
}
