// The Berth portal: a single page over the REST API (/v1) and the live events (/v1/events).
// Screens are addressed by the URL's fragment (#/vms, #/vm/<id>, ...); each renders into
// <main>, and the live events patch what is on screen in place (no polling, no reload).
import * as api from './api.js';
import { h, svg, clear, fill, badge, when, mb, usageBar, confirmDialog } from './dom.js';
import { state, showError, showNotice, announce, isPlatform, groupRoles, managesAny, readsAudit, groupName,
  money, hours } from './ui.js';
import { chargebackScreen, chargebackGroups } from './chargeback.js';
import { imagesScreen } from './images.js';
import { keysScreen } from './keys.js';
import { networksScreen } from './networks.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

// ---- session --------------------------------------------------------------------------

const USER_KEY = 'berth_user';

async function loadMe(name) {
  const { user } = await api.get('/v1/users/' + encodeURIComponent(name));
  state.me = user;
  const groups = await api.all('/v1/groups', 'groups');
  state.groups = new Map(groups.map((g) => [g.id, g.name]));
}

function renderChrome() {
  clear(nav);
  clear(who);
  if (!state.me) { nav.hidden = true; return; }
  const links = [['#/catalog', 'Catalog'], ['#/requests', 'My requests'], ['#/vms', 'My VMs']];
  if (managesAny()) links.push(['#/approvals', 'Approvals']);
  links.push(['#/groups', 'Groups'], ['#/usage', 'Usage']);
  if (chargebackGroups().length) links.push(['#/chargeback', 'Chargeback']);
  links.push(['#/images', 'Images'], ['#/networks', 'Networks']);
  if (isPlatform()) links.push(['#/hosts', 'Hosts'], ['#/report', 'All VMs']);
  if (state.me.role === 'admin') links.push(['#/users', 'Users']);
  if (readsAudit()) links.push(['#/audit', 'Audit']);
  for (const [href, text] of links) nav.append(h('a', { href }, text));
  nav.hidden = false;
  who.append(h('span', {}, `${state.me.username} (${state.me.role})`),
    h('a', { href: '#/keys' }, 'SSH keys'),
    h('button', { type: 'button', onclick: logout }, 'Sign out'));
  markCurrent();
}

function markCurrent() {
  const here = location.hash.split('/').slice(0, 2).join('/');
  for (const a of [...nav.querySelectorAll('a'), ...who.querySelectorAll('a')]) {
    if (a.getAttribute('href') === here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function logout() {
  try {
    await api.logout();
  } catch (err) {
    if (err.status !== 401) { showError(err); return; }
  }
  stopEvents();
  localStorage.removeItem(USER_KEY);
  state.me = null;
  renderChrome();
  if (location.hash === '#/login') route(); else location.hash = '#/login';
  announce('Signed out');
}

function loginScreen() {
  const userId = 'login-user', pwId = 'login-password';
  const msg = h('p', { className: 'field-error', id: 'login-error', role: 'alert' });
  const form = h('form', { className: 'card login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in to Berth'),
    h('div', { className: 'field' }, h('label', { for: userId }, 'User name'),
      h('input', { id: userId, name: 'username', autocomplete: 'username', required: true })),
    h('div', { className: 'field' }, h('label', { for: pwId }, 'Password'),
      h('input', { id: pwId, name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    msg,
    h('button', { type: 'submit', className: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    const username = form.username.value.trim();
    try {
      await api.login(username, form.password.value);
      localStorage.setItem(USER_KEY, username);
      await loadMe(username);
      renderChrome();
      startEvents();
      if (location.hash === '#/catalog') route(); else location.hash = '#/catalog';
      announce('Signed in as ' + username);
    } catch (err) {
      msg.textContent = err.message + (err.requestId ? ` (request id ${err.requestId})` : '');
      form.password.focus();
    }
  });
  return { title: 'Sign in', node: form, focus: () => document.getElementById(userId).focus() };
}

// ---- live events ----------------------------------------------------------------------

const EVENT_TYPES = ['vm.state', 'vm.power', 'vm.provisioned', 'vm.lease.notice', 'vm.lease.extended',
  'vm.lease.expired', 'task.state', 'request.state', 'request.step', 'host.state',
  'group.member', 'group.updated', 'budget.set', 'budget.cleared', 'budget.threshold'];

function startEvents() {
  stopEvents();
  // Same origin: the session cookie goes with it. The browser reconnects by itself and
  // sends Last-Event-ID, so nothing is missed across a drop.
  const es = new EventSource('/v1/events');
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      if (state.onEvent) state.onEvent(data);
    });
  }
  es.addEventListener('stream.end', (ev) => {
    const reason = (() => { try { return JSON.parse(ev.data).reason; } catch { return ''; } })();
    if (/revoked|expired|disabled/.test(reason)) {
      es.close();
      state.me = null;
      renderChrome();
      location.hash = '#/login';
    }
  });
  state.events = es;
}

function stopEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

// ---- 1. catalog -----------------------------------------------------------------------

// An admin sets how many VMs of a template its pool keeps built ahead (0: none).
function poolForm(t) {
  const size = h('input', { type: 'number', min: '0', max: '20', value: String(t.pool_size || 0),
    'aria-label': `Pool size of ${t.name}`, className: 'narrow' });
  const form = h('form', { className: 'inline' }, size,
    h('button', { type: 'submit' }, 'Set pool'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const { pool } = await api.put(`/v1/templates/${t.id}/pool`, { size: Number(size.value) });
      announce(`Pool of ${pool.name}: ${pool.size} (${pool.ready} ready, ${pool.building} building)`);
      route();
    } catch (err) { showError(err); }
  });
  return form;
}

async function catalogScreen() {
  const { templates } = await api.get('/v1/templates');
  state.templates = new Map(templates.map((t) => [t.id, t]));
  const rows = templates.map((t) => h('tr', {},
    h('th', { scope: 'row' }, t.name),
    h('td', {}, `${t.vcpus} vCPU, ${mb(t.ram_mb)} RAM, ${t.disk_gb} GB disk`),
    h('td', {}, t.os || '—'),
    h('td', {}, t.lease_days ? `${t.lease_days} days` : 'no limit'),
    h('td', {}, t.requires_approval || (t.approval_policy && t.approval_policy !== 'auto')
      ? `Yes (${t.approval_policy})` : 'No'),
    // Instant deploy: VMs of it kept built ahead, resumed at once when asked for.
    h('td', {}, t.pool_size ? `Yes (${t.pool_size} kept ready)` : 'No',
      state.me && state.me.role === 'admin' ? poolForm(t) : ''),
    h('td', {}, h('a', { className: 'button primary', href: '#/request/' + t.id,
      'aria-label': 'Request ' + t.name }, 'Request'))));
  return {
    title: 'Catalog',
    node: h('section', {},
      h('h1', {}, 'Catalog'),
      templates.length ? h('table', {},
        h('caption', { className: 'sr-only' }, 'Templates you may request'),
        h('thead', {}, h('tr', {}, ['Template', 'Size', 'OS', 'Lease', 'Approval needed', 'Instant deploy', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, rows)) : h('p', {}, 'No templates yet.')),
  };
}

// ---- 2. request form ------------------------------------------------------------------

async function requestScreen(templateId) {
  const { templates } = await api.get('/v1/templates');
  state.templates = new Map(templates.map((t) => [t.id, t]));
  const memberGroups = groupRoles().filter((m) => m.role !== 'auditor');
  const fieldIds = {};
  const errors = {};
  const field = (name, label, control, hint) => {
    const id = 'req-' + name;
    fieldIds[name] = id;
    control.id = id;
    control.name = name;
    const err = h('div', { className: 'field-error', id: id + '-error' });
    errors[name] = err;
    const hintEl = hint ? h('div', { className: 'hint', id: id + '-hint' }, hint) : null;
    control.setAttribute('aria-describedby', [hintEl ? id + '-hint' : '', id + '-error'].join(' ').trim());
    return h('div', { className: 'field' }, h('label', { for: id }, label), control, hintEl, err);
  };
  const tplSelect = h('select', {}, templates.map((t) => h('option', { value: t.id, selected: t.id === templateId }, t.name)));
  const nameInput = h('input', { autocomplete: 'off', required: true, maxlength: 63 });
  const countInput = h('input', { type: 'number', min: 1, value: 1, required: true });
  // Where several VMs go relative to each other (placement: a hard rule the scheduler keeps).
  const placementSelect = h('select', {},
    h('option', { value: '' }, 'Any hosts'),
    h('option', { value: 'affinity' }, 'All on one host (affinity)'),
    h('option', { value: 'anti-affinity' }, 'Each on a different host (anti-affinity)'));
  const groupSelect = h('select', {}, memberGroups.length
    ? memberGroups.map((m) => h('option', { value: m.group }, groupName(m.group)))
    : h('option', { value: '' }, '(your default group)'));
  // The user's SSH keys, to install in the VMs (ssh_keys: their names).
  let keys = [];
  try { keys = (await api.get('/v1/keys')).keys; } catch (err) { showError(err); }
  const keySelect = h('select', { multiple: true, size: Math.min(5, Math.max(2, keys.length)) },
    keys.map((k) => h('option', { value: k.name, title: k.fingerprint }, `${k.name} (${k.fingerprint.slice(0, 19)}…)`)));
  // The networks the chosen group may use (networks: one or several, in the list's order,
  // instead of the template's; none chosen: the template's).
  let networks = [];
  try { networks = (await api.get('/v1/networks')).networks; } catch (err) { showError(err); }
  const netSelect = h('select', { multiple: true, size: 3 });
  function refreshNetworks() {
    const gid = groupSelect.value;
    const usable = networks.filter((n) => !n.groups.length || (gid && n.groups.includes(gid)));
    fill(netSelect, usable.map((n) => h('option', { value: n.name },
        `${n.name} (${n.cidr}, ${n.addresses - n.allocated} addresses free)`)));
  }
  refreshNetworks();
  const lease = h('p', { className: 'hint', id: 'req-lease' });
  const tplNote = h('p', { className: 'hint', id: 'req-templates', 'aria-live': 'polite' });
  const quota = h('div', { className: 'card', 'aria-live': 'polite', id: 'quota-left' });

  // The templates the chosen group offers (GET /v1/templates?group=): a group may restrict
  // what its members request, and offering one it refuses would only end in a 403.
  async function refreshTemplates() {
    const gid = groupSelect.value;
    const want = tplSelect.value || templateId;
    let offered = templates;
    if (gid) {
      try {
        offered = (await api.get('/v1/templates?group=' + encodeURIComponent(gid))).templates;
      } catch (err) {
        showError(err);
        return;
      }
    }
    for (const t of offered) state.templates.set(t.id, t);
    fill(tplSelect, offered.map((t) => h('option', { value: t.id, selected: t.id === want }, t.name)));
    tplNote.textContent = offered.length ? '' : 'This group offers no template.';
  }

  function resources(r) {
    return `${r.vcpus} vCPU, ${mb(r.ram_mb)} RAM, ${r.disk_gb} GB disk`;
  }

  // Quota left and what the hosts could give the group now, both from one answer
  // (GET /v1/groups/{id}/capacity), so the figures agree with each other.
  async function refreshQuota() {
    const t = state.templates.get(tplSelect.value);
    clear(lease).append(t ? `Lease: ${t.lease_days ? t.lease_days + ' days' : 'no limit'} (from the template)` +
      (t.requires_approval ? '; needs approval' : '') : '');
    clear(quota).append(h('h2', {}, 'Quota left'));
    const gid = groupSelect.value;
    if (!gid) { quota.append(h('p', {}, 'Shown once you belong to a group.')); return; }
    try {
      const { capacity } = await api.get(`/v1/groups/${encodeURIComponent(gid)}/capacity`);
      const q = capacity.quota, left = capacity.left;
      const n = Math.max(1, parseInt(countInput.value, 10) || 1);
      const need = t ? { vms: n, vcpus: n * t.vcpus, ram_mb: n * t.ram_mb, disk_gb: n * t.disk_gb } : null;
      if (!q || !left) quota.append(h('p', {}, 'This group has no quota limit.'));
      else {
        const rows = [['VMs', 'vms', ''], ['vCPUs', 'vcpus', ''], ['RAM', 'ram_mb', ' MB'], ['Disk', 'disk_gb', ' GB']];
        quota.append(h('dl', { className: 'stack' }, rows.map(([label, k, unit]) => {
          const limited = (q[k] || 0) > 0;
          const over = limited && need && need[k] > (left[k] || 0);
          return [h('dt', {}, label), h('dd', { className: over ? 'fault' : '' },
            (limited ? `${left[k] || 0}${unit} left of ${q[k]}${unit}` : 'no limit') +
            (need ? `; this request takes ${need[k]}${unit}` : '') + (over ? ' — over quota' : ''))];
        })));
      }
      const fits = t && capacity.largest.vcpus >= t.vcpus && capacity.largest.ram_mb >= t.ram_mb &&
        capacity.largest.disk_gb >= t.disk_gb;
      quota.append(h('h3', {}, 'On the hosts now'),
        h('dl', { className: 'stack', id: 'capacity-figures' },
          h('dt', {}, 'Free on the hosts'), h('dd', { id: 'cap-free' }, `${resources(capacity.free)} (${capacity.hosts} host${capacity.hosts === 1 ? '' : 's'})`),
          h('dt', {}, 'Largest VM one host could take'), h('dd', { id: 'cap-largest', className: t && !fits ? 'fault' : '' },
            resources(capacity.largest) + (t && !fits ? ' — this template does not fit now' : '')),
          h('dt', {}, 'Usable within the quota'), h('dd', { id: 'cap-usable' }, resources(capacity.usable))));
    } catch (err) {
      quota.append(h('p', { className: 'muted' }, `Quota not readable: ${err.message}` +
        (err.requestId ? ` (request id ${err.requestId})` : '')));
    }
  }
  tplSelect.addEventListener('change', refreshQuota);
  groupSelect.addEventListener('change', () => { refreshNetworks(); refreshTemplates().then(refreshQuota); });
  countInput.addEventListener('change', refreshQuota);

  // A custom build: the machine described (OS, version, applications, size) instead of a
  // template. The scheduler's verdict (a dry run, POST /v1/requests?validate_only=true) is
  // shown as the user types: the image it would use, the applications installed at first
  // boot, each rule broken and suggestions, which a button applies.
  let images = [];
  try { images = (await api.get('/v1/images')).images.filter((i) => i.state === 'READY'); } catch (err) { showError(err); }
  const oses = [...new Set(images.map((i) => i.os).filter(Boolean))].sort();
  const kindTemplate = h('input', { type: 'radio', name: 'kind', value: 'template', id: 'req-kind-template', checked: true });
  const kindCustom = h('input', { type: 'radio', name: 'kind', value: 'custom', id: 'req-kind-custom' });
  const kindField = h('fieldset', { className: 'field' }, h('legend', {}, 'Machine'),
    h('label', { for: 'req-kind-template', className: 'check' }, kindTemplate, ' From a template'),
    h('label', { for: 'req-kind-custom', className: 'check' }, kindCustom, ' Custom build'));
  const osSelect = h('select', {}, oses.map((o) => h('option', { value: o }, o)));
  const versionInput = h('input', { autocomplete: 'off', maxlength: 64, placeholder: 'any' });
  const appsInput = h('input', { autocomplete: 'off', placeholder: 'nginx, redis' });
  const vcpusInput = h('input', { type: 'number', min: 1, value: 1 });
  const ramInput = h('input', { type: 'number', min: 64, value: 1024 });
  const diskInput = h('input', { type: 'number', min: 1, value: 10 });
  const verdict = h('div', { className: 'card', id: 'build-verdict', 'aria-live': 'polite' });
  const custom = h('div', { id: 'req-custom', hidden: true },
    field('os', 'OS', osSelect),
    field('os_version', 'OS version', versionInput, 'Empty: any version of the OS.'),
    field('applications', 'Applications', appsInput, 'Names, separated by commas; what the image lacks is installed at first boot.'),
    field('vcpus', 'vCPUs', vcpusInput),
    field('ram_mb', 'RAM (MB)', ramInput),
    field('disk_gb', 'Disk (GB)', diskInput),
    verdict);
  const isCustom = () => kindCustom.checked;
  function machine() {
    const apps = appsInput.value.split(',').map((a) => a.trim()).filter(Boolean);
    const num = (el) => (el.value === '' ? undefined : Number(el.value));
    const body = { os: osSelect.value, applications: apps, vcpus: num(vcpusInput), ram_mb: num(ramInput), disk_gb: num(diskInput) };
    if (versionInput.value.trim()) body.os_version = versionInput.value.trim();
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    return body;
  }
  // What a suggestion changes in the form (an allocation, a request of its own, is only shown).
  function apply(s) {
    if (s.kind === 'ram_mb') ramInput.value = s.value;
    else if (s.kind === 'vcpus') vcpusInput.value = s.value;
    else if (s.kind === 'count') countInput.value = s.value;
    else if (s.kind === 'disk_gb') diskInput.value = s.value;
    else if (s.kind === 'drop_application') {
      appsInput.value = appsInput.value.split(',').map((a) => a.trim())
        .filter((a) => a && a.toLowerCase() !== s.value.toLowerCase()).join(', ');
    } else if (s.kind === 'os_version') {
      const [o, v] = s.value.includes(' ') ? s.value.split(' ') : [osSelect.value, s.value];
      osSelect.value = o;
      versionInput.value = v;
    } else if (s.kind === 'os') osSelect.value = s.value;
    else if (s.kind === 'template') {
      const t = [...state.templates.values()].find((x) => x.name === s.value);
      if (t) { kindTemplate.checked = true; tplSelect.value = t.id; showKind(); return; }
    } else if (s.kind === 'size') {
      const fit = Object.fromEntries(s.value.split(',').map((kv) => kv.split('=')));
      vcpusInput.value = fit.vcpus; ramInput.value = fit.ram_mb; diskInput.value = fit.disk_gb;
    }
    checkBuild();
  }
  function showVerdict(v) {
    clear(verdict).append(h('h2', {}, v.ok ? 'This machine can be built' : 'This machine cannot work'),
      h('dl', { className: 'stack' },
        h('dt', {}, 'Image'), h('dd', { id: 'build-image' }, v.image ? `${v.image.name} (${v.image.os} ${v.image.os_version})` : 'none'),
        h('dt', {}, 'With the image'), h('dd', { id: 'build-from-image' }, v.applications.from_image.join(', ') || '—'),
        h('dt', {}, 'Installed at first boot'), h('dd', { id: 'build-first-boot' }, v.applications.first_boot.join(', ') || '—'),
        h('dt', {}, 'Needs'), h('dd', {}, `${mb(v.need.ram_mb)} RAM, ${v.need.disk_gb} GB disk`)),
      v.violations.length ? h('ul', { id: 'build-violations' }, v.violations.map((x) => h('li', { className: 'fault' }, x.message))) : null,
      v.suggestions.length ? h('ul', { id: 'build-suggestions' }, v.suggestions.map((x) => h('li', {}, x.message, ' ',
        x.kind === 'allocation' ? null // a request of its own, made from the group's page
          : h('button', { type: 'button', dataset: { kind: x.kind }, onclick: () => apply(x) }, 'Apply')))) : null);
  }
  let checking = 0;
  let timer = null;
  async function checkBuild() {
    if (!isCustom()) return;
    const mine = ++checking;
    const body = machine();
    if (groupSelect.value) body.group = groupSelect.value;
    const n = Number(countInput.value);
    if (Number.isFinite(n) && n > 0) body.count = n;
    try {
      const v = await api.post('/v1/requests?validate_only=true', body);
      if (mine === checking) showVerdict(v);
    } catch (err) {
      if (mine === checking) clear(verdict).append(h('p', { className: 'fault', id: 'build-error' }, err.message));
    }
  }
  const soon = () => { clearTimeout(timer); timer = setTimeout(checkBuild, 250); };
  for (const el of [osSelect, versionInput, appsInput, vcpusInput, ramInput, diskInput, countInput, groupSelect]) {
    el.addEventListener('input', soon);
    el.addEventListener('change', soon);
  }
  const tplField = field('template', 'Template', tplSelect);
  function showKind() {
    custom.hidden = !isCustom();
    tplField.hidden = isCustom();
    tplNote.hidden = lease.hidden = isCustom();
    if (isCustom()) checkBuild();
  }
  kindTemplate.addEventListener('change', showKind);
  kindCustom.addEventListener('change', showKind);

  const form = h('form', { className: 'card', novalidate: true },
    kindField,
    tplField,
    custom,
    tplNote,
    lease,
    field('name', 'Name', nameInput, 'Letters, digits and dashes; several VMs get -1, -2, ...'),
    field('count', 'Count', countInput),
    field('placement', 'Placement', placementSelect, 'For several VMs: the same host, or one host each.'),
    field('group', 'Group', groupSelect),
    field('ssh_keys', 'SSH keys', keySelect, keys.length ? 'Installed in the VMs; Ctrl or Shift to choose several.'
      : h('span', {}, 'You have none: ', h('a', { href: '#/keys' }, 'add one'), '.')),
    field('network', 'Networks', netSelect,
      "Where the VMs get their addresses, one on each chosen; none chosen: the template's."),
    h('button', { type: 'submit', className: 'primary' }, 'Submit request'));

  // The Idempotency-Key of a submission whose answer was lost or refused with 503 (a failover,
  // a service restarting): submitting the same form again sends the same key, so the request
  // is made once. Any change to the form makes it another request.
  let pendingKey = null;
  form.addEventListener('input', () => { pendingKey = null; });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    for (const [name, el] of Object.entries(errors)) {
      el.textContent = '';
      document.getElementById(fieldIds[name]).removeAttribute('aria-invalid');
    }
    // The server decides what is valid; its message is shown next to its field.
    const body = isCustom() ? Object.assign(machine(), { name: nameInput.value })
      : { template: tplSelect.value, name: nameInput.value };
    const count = Number(countInput.value);
    body.count = Number.isFinite(count) && countInput.value !== '' ? count : countInput.value;
    if (groupSelect.value) body.group = groupSelect.value;
    if (placementSelect.value) body.placement = placementSelect.value;
    const chosen = [...keySelect.selectedOptions].map((o) => o.value);
    if (chosen.length) body.ssh_keys = chosen;
    const nets = [...netSelect.selectedOptions].map((o) => o.value);
    if (nets.length === 1) body.network = nets[0];
    if (nets.length > 1) body.networks = nets;
    pendingKey = pendingKey || crypto.randomUUID();
    try {
      const { request } = await api.post('/v1/requests', body, { 'Idempotency-Key': pendingKey });
      pendingKey = null;
      announce(`Request for ${request.name} submitted: ${request.state}`);
      location.hash = '#/vms';
    } catch (err) {
      if (err.status !== undefined && err.status !== 503) pendingKey = null; // answered: done
      // A network of several (networks[i]) is shown at the Network field.
      const f = err.details && err.details.field && err.details.field.replace(/^networks(\[\d+\])?$/, 'network');
      if (err.code === 'BUILD_REFUSED') {
        checkBuild(); // the verdict with its suggestions, next to the fields
        showError(err);
      } else if (f && errors[f]) {
        errors[f].textContent = err.message;
        const input = document.getElementById(fieldIds[f]);
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      } else {
        showError(err);
      }
    }
  });
  await refreshTemplates();
  refreshQuota();
  return {
    title: 'Request a VM',
    node: h('section', {}, h('h1', {}, 'Request a VM'), h('div', { className: 'grid' }, form, quota)),
    focus: () => nameInput.focus(),
  };
}

// ---- 3. my requests -------------------------------------------------------------------

function stepsView(r) {
  if (!r.steps || !r.steps.length) {
    return r.state === 'PENDING_APPROVAL' ? `waiting for ${r.awaiting || 'approval'}` : '—';
  }
  return h('ol', {}, r.steps.map((s) => h('li', {},
    `${s.level || 'approval'}: ${s.decision || 'pending'}` + (s.decided_by ? ` by ${s.decided_by}` : '') +
    (s.reason ? ` — “${s.reason}”` : '') + (s.at ? ` (${when(s.at)})` : ''))),
  r.state === 'PENDING_APPROVAL' && r.awaiting ? h('li', {}, `${r.awaiting}: pending`) : null);
}

function requestRow(r, current) {
  return h('tr', { dataset: { request: r.id }, className: r.id === current ? 'current' : null,
    'aria-current': r.id === current ? 'true' : null },
    h('td', {}, when(r.created_at)),
    h('th', { scope: 'row' }, r.name || r.kind, r.kind && r.kind !== 'vm' ? h('span', { className: 'muted' }, ` (${r.kind})`) : null),
    h('td', {}, (state.templates.get(r.template) || {}).name || r.template || '—'),
    h('td', {}, String(r.count)),
    h('td', {}, groupName(r.group)),
    h('td', {}, badge(r.state)),
    h('td', {}, stepsView(r)),
    h('td', {}, r.reason || ''));
}

async function requestsScreen(current) {
  const [requests, tpl] = await Promise.all([api.all('/v1/requests', 'requests'), api.get('/v1/templates')]);
  state.templates = new Map(tpl.templates.map((t) => [t.id, t]));
  const mine = requests.filter((r) => r.owner === state.me.username);
  const tbody = h('tbody', {}, mine.map((r) => requestRow(r, current)));
  state.onEvent = async (ev) => {
    if (!ev.request) return;
    try {
      const { request } = await api.get('/v1/requests/' + ev.request);
      if (request.owner !== state.me.username) return;
      const row = requestRow(request, current);
      const old = tbody.querySelector(`tr[data-request="${CSS.escape(request.id)}"]`);
      if (old) old.replaceWith(row); else tbody.prepend(row);
      announce(`Request ${request.name}: ${request.state}`);
    } catch { /* gone or not readable: nothing to show */ }
  };
  return {
    title: 'My requests',
    node: h('section', {}, h('h1', {}, 'My requests'),
      h('table', {}, h('caption', { className: 'sr-only' }, 'Your requests, newest first'),
        h('thead', {}, h('tr', {}, ['Created', 'Name', 'Template', 'Count', 'Group', 'State', 'Approval steps', 'Reason']
          .map((c) => h('th', { scope: 'col' }, c)))),
        tbody)),
  };
}

// ---- 4. my VMs ------------------------------------------------------------------------

const DESTRUCTIVE = new Set(['stop', 'reboot', 'shelve', 'suspend', 'dispose']);

// detail: the VM's own page, which also offers to capture a stopped VM as an image.
function vmActions(vm, detail = false) {
  const s = vm.state, p = vm.power_state;
  const live = s === 'ACTIVE' || s === 'EXPIRING';
  const acts = [];
  if (live && (p === 'STOPPED' || p === 'SHUTOFF' || p === 'CRASHED')) acts.push('start');
  if (live && p === 'SUSPENDED') acts.push('resume');
  if (live && p === 'RUNNING') acts.push('stop', 'reboot', 'suspend');
  if (live) acts.push('shelve');
  if (detail && s === 'ACTIVE' && p === 'STOPPED') acts.push('capture');
  if (s === 'SHELVED') acts.push('unshelve');
  if (live || s === 'EXPIRED') acts.push('extend');
  if (!['DISPOSED', 'DISPOSING', 'REJECTED'].includes(s)) acts.push('dispose');
  return acts;
}

const ACTION_LABEL = { start: 'Start', stop: 'Stop', reboot: 'Reboot', suspend: 'Suspend', resume: 'Resume',
  shelve: 'Shelve', unshelve: 'Unshelve', extend: 'Extend lease', dispose: 'Dispose',
  capture: 'Capture image' };

async function runAction(vm, action) {
  showError(null);
  let fields = null;
  if (action === 'capture') {
    fields = await confirmDialog({ title: `Capture ${vm.name} as an image`, confirm: 'Capture',
      message: 'Its disk becomes a new model image; the VM stays stopped until the capture ends.',
      fields: [{ name: 'name', label: 'Image name (a-z, 0-9, . _ -)', required: true }] });
    if (!fields) return;
  } else if (action === 'extend') {
    fields = await confirmDialog({ title: `Extend the lease of ${vm.name}`, confirm: 'Extend',
      fields: [{ name: 'days', label: 'Days to add', type: 'number', required: true, min: 1, value: 7 }] });
    if (!fields) return;
  } else if (DESTRUCTIVE.has(action)) {
    const ok = await confirmDialog({ title: `${ACTION_LABEL[action]} ${vm.name}?`, danger: true,
      message: action === 'dispose' ? 'The VM and its disks are deleted. This cannot be undone.'
        : `The VM will ${action === 'stop' ? 'be powered off' : action === 'reboot' ? 'restart' : 'stop running'}.`,
      confirm: ACTION_LABEL[action] });
    if (!ok) return;
  }
  try {
    if (action === 'dispose') await api.del('/v1/vms/' + vm.id);
    else if (action === 'capture') await api.post(`/v1/vms/${vm.id}/capture`, { name: fields.name });
    else if (action === 'extend') {
      // Within the group's lease policy the lease is extended at once (200, the VM); beyond
      // it the ask becomes a request of kind extension (202) that someone has to approve.
      const answer = await api.post(`/v1/vms/${vm.id}/lease`, { days: Number(fields.days) });
      if (answer && answer.request) {
        const r = answer.request;
        const pending = r.state === 'PENDING_APPROVAL';
        showNotice(`Extending the lease of ${vm.name} goes beyond the group's lease policy: ` +
          (pending ? 'sent for approval' : `request ${r.state}`) + '. ',
          h('a', { href: '#/requests/' + encodeURIComponent(r.id) }, 'See the request'));
        announce(`Lease extension of ${vm.name}: ${pending ? 'sent for approval' : r.state}`);
        return;
      }
    } else await api.post(`/v1/vms/${vm.id}/actions`, { action });
    announce(`${ACTION_LABEL[action]} ${vm.name}: accepted`);
  } catch (err) {
    showError(err);
  }
}

function vmRow(vm) {
  return h('tr', { dataset: { vm: vm.id } },
    h('th', { scope: 'row' }, h('a', { href: '#/vm/' + vm.id }, vm.name)),
    h('td', {}, badge(vm.state)),
    h('td', {}, badge(vm.power_state)),
    h('td', {}, when(vm.lease && vm.lease.expires_at)),
    h('td', {}, groupName(vm.group)),
    h('td', {}, h('div', { className: 'actions' }, vmActions(vm).map((a) =>
      h('button', { type: 'button', className: a === 'dispose' ? 'danger' : '',
        'aria-label': `${ACTION_LABEL[a]} ${vm.name}`, onclick: () => runAction(vm, a) }, ACTION_LABEL[a])))));
}

async function vmsScreen() {
  const all = await api.all('/v1/vms?owner=' + encodeURIComponent(state.me.username), 'vms');
  const vms = new Map(all.map((v) => [v.id, v]));
  const search = h('input', { id: 'vm-search', type: 'search', placeholder: 'name contains' });
  const stateSel = h('select', { id: 'vm-state' },
    h('option', { value: '' }, 'Any but disposed'),
    ['PENDING_APPROVAL', 'PROVISIONING', 'ACTIVE', 'EXPIRING', 'EXPIRED', 'ERROR', 'DISPOSED']
      .map((s) => h('option', { value: s }, s)));
  const groupSel = h('select', { id: 'vm-group' }, h('option', { value: '' }, 'Any group'),
    [...state.groups].map(([id, name]) => h('option', { value: id }, name)));
  const tbody = h('tbody', {});
  const count = h('p', { className: 'muted', 'aria-live': 'polite' });

  function matches(vm) {
    const q = search.value.trim().toLowerCase();
    if (q && !vm.name.toLowerCase().includes(q)) return false;
    if (stateSel.value ? vm.state !== stateSel.value : vm.state === 'DISPOSED') return false;
    if (groupSel.value && vm.group !== groupSel.value) return false;
    return true;
  }
  function render() {
    clear(tbody);
    const shown = [...vms.values()].filter(matches).sort((a, b) => a.name.localeCompare(b.name));
    tbody.append(...shown.map(vmRow));
    count.textContent = `${shown.length} VM${shown.length === 1 ? '' : 's'} shown`;
  }
  for (const el of [search, stateSel, groupSel]) el.addEventListener('input', render);

  state.onEvent = async (ev) => {
    const id = ev.vm;
    if (!id) return;
    try {
      const { vm } = await api.get('/v1/vms/' + id);
      if (vm.owner !== state.me.username) return;
      const before = vms.get(id);
      vms.set(id, vm);
      const old = tbody.querySelector(`tr[data-vm="${CSS.escape(id)}"]`);
      const focused = old && old.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') : null;
      if (old && matches(vm)) old.replaceWith(vmRow(vm));
      else render();
      if (focused) {
        const again = tbody.querySelector(`[aria-label="${CSS.escape(focused)}"]`);
        if (again) again.focus();
      }
      if (!before || before.state !== vm.state || before.power_state !== vm.power_state) {
        announce(`${vm.name}: ${vm.state}, power ${vm.power_state || 'unknown'}`);
      }
    } catch { /* not readable (another's, or gone) */ }
  };
  render();
  return {
    title: 'My VMs',
    node: h('section', {}, h('h1', {}, 'My VMs'),
      h('div', { className: 'filters', role: 'search' },
        h('div', {}, h('label', { for: 'vm-search' }, 'Search'), search),
        h('div', {}, h('label', { for: 'vm-state' }, 'State'), stateSel),
        h('div', {}, h('label', { for: 'vm-group' }, 'Group'), groupSel)),
      count,
      h('table', {}, h('caption', { className: 'sr-only' }, 'Your VMs'),
        h('thead', {}, h('tr', {}, ['Name', 'State', 'Power', 'Lease expires', 'Group', 'Actions']
          .map((c) => h('th', { scope: 'col' }, c)))),
        tbody)),
  };
}

// ---- 5. VM detail ---------------------------------------------------------------------

// What a task's state lets one do with it (POST /v1/tasks/{id}/abort, retry, force-fail):
// abort while it has not finished (the owner too), retry a FAILED one and force-fail a stuck
// one (admins and operators). The server decides in the end; its refusal is shown.
const TASK_LIVE = new Set(['QUEUED', 'RUNNING']);

async function taskVerb(task, vm, verb, done) {
  showError(null);
  const label = { abort: 'Abort', retry: 'Retry', 'force-fail': 'Force-fail' }[verb];
  if (verb !== 'retry') {
    const ok = await confirmDialog({ title: `${label} the ${task.kind.toLowerCase()} of ${vm.name}?`, danger: true,
      confirm: label,
      message: verb === 'abort'
        ? 'The task stops at its next stage and undoes what it did.'
        : 'The task ends FAILED now and nothing is undone; its VM ends in ERROR.' });
    if (!ok) return;
  }
  try {
    const { task: after } = await api.post(`/v1/tasks/${task.id}/${verb}`);
    announce(`${label} ${vm.name}: task ${after ? after.state : 'accepted'}`);
    await done();
  } catch (err) { showError(err); }
}

function taskSummary(task) {
  const parts = [];
  if (task.state === 'QUEUED' && task.queue_position) {
    parts.push(` — queued #${task.queue_position}${task.class ? ', ' + task.class : ''}`);
  } else if (task.stage) parts.push(` — stage ${task.stage}`);
  return parts.join('');
}

// What the VM cost this UTC month so far (GET /v1/vms/{id}/charges), per day. A VM of a
// reservation-based group has its hours at 0: its group pays for the capacity it reserved.
async function chargesView(vm) {
  let c;
  try {
    c = (await api.get(`/v1/vms/${encodeURIComponent(vm.id)}/charges`)).charges;
  } catch (err) {
    return h('p', { className: 'muted' }, `Cost not readable: ${err.message}`);
  }
  const reserved = c.charging_model === 'reservation';
  return h('div', { className: 'card', id: 'vm-cost' },
    h('p', {}, h('strong', {}, 'Total: '), h('span', { id: 'vm-cost-total', dataset: { amount: String(c.total) } }, money(c.total, c.currency)),
      ` since ${when(c.from)}`),
    reserved ? h('p', { className: 'hint', id: 'vm-cost-note' },
      `${groupName(vm.group)} is charged for the capacity it reserved, not per VM: this VM's hours are shown with 0.`) : null,
    c.days.length ? h('table', {}, h('caption', { className: 'sr-only' }, 'Cost per day'),
      h('thead', {}, h('tr', {}, ['Day (UTC)', 'Amount', 'Compute time', 'Disk time'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, c.days.map((d) => h('tr', {}, h('th', { scope: 'row' }, d.day), h('td', {}, money(d.amount, c.currency)),
        h('td', {}, hours(d.compute_ms)), h('td', {}, hours(d.disk_ms))))))
      : h('p', { className: 'muted' }, 'Nothing billed this month.'));
}

async function vmDetailScreen(id) {
  const section = h('section', {});
  let taskId = null;
  async function render() {
    const { vm } = await api.get('/v1/vms/' + id);
    let task = null;
    if (vm.task) {
      try { task = (await api.get('/v1/tasks/' + vm.task)).task; } catch { task = null; }
    }
    taskId = task && task.id;
    // A forced disposal is for a VM whose host is gone: offered only when its host is DOWN.
    let hostDown = false;
    if (isPlatform() && vm.host && !['DISPOSED', 'DISPOSING'].includes(vm.state)) {
      try {
        const { hosts } = await api.get('/v1/hosts');
        const host = hosts.find((x) => x.id === vm.host || x.name === vm.host);
        hostDown = !!host && host.state === 'DOWN';
      } catch { hostDown = false; }
    }
    const again = () => render();
    const taskActions = task ? [
      TASK_LIVE.has(task.state) ? h('button', { type: 'button', className: 'danger',
        onclick: () => taskVerb(task, vm, 'abort', again) }, 'Abort') : null,
      isPlatform() && task.state === 'FAILED' ? h('button', { type: 'button',
        onclick: () => taskVerb(task, vm, 'retry', again) }, 'Retry') : null,
      isPlatform() && (TASK_LIVE.has(task.state) || task.state === 'ABORTING') ? h('button', { type: 'button',
        className: 'danger', onclick: () => taskVerb(task, vm, 'force-fail', again) }, 'Force-fail') : null,
    ].filter(Boolean) : [];
    const cost = await chargesView(vm);
    let audit = null;
    if (readsAudit()) {
      try { audit = (await api.get('/v1/audit?target=' + encodeURIComponent(id) + '&limit=100')).records; }
      catch { audit = null; }
    }
    fill(section,
      h('h1', {}, `VM ${vm.name}`),
      h('div', { className: 'actions' }, vmActions(vm, true).map((a) =>
        h('button', { type: 'button', className: a === 'dispose' ? 'danger' : '', onclick: () => runAction(vm, a) }, ACTION_LABEL[a])),
        hostDown ? h('button', { type: 'button', className: 'danger', onclick: async () => {
          showError(null);
          const ok = await confirmDialog({ title: `Dispose of ${vm.name} without its host?`, danger: true,
            confirm: 'Force dispose',
            message: `Its host ${vm.host} is DOWN: the host is not asked, the VM's claim and quota are released and it ends DISPOSED. Whatever is left on the host is not cleaned up.` });
          if (!ok) return;
          try {
            await api.del(`/v1/vms/${encodeURIComponent(vm.id)}?force=true`);
            announce(`Forced disposal of ${vm.name}: accepted`);
            await render();
          } catch (err) { showError(err); }
        } }, 'Force dispose') : null),
      h('h2', {}, 'Properties'),
      h('dl', { className: 'props card' },
        [['State', badge(vm.state)], ['Power', badge(vm.power_state)], ['Owner', vm.owner], ['Group', groupName(vm.group)],
          ['Template', (state.templates.get(vm.template) || {}).name || vm.template], ['Host', vm.host || '—'],
          ['Size', `${vm.flavor.vcpus} vCPU, ${mb(vm.flavor.ram_mb)}, ${vm.flavor.disk_gb} GB`], ['OS', vm.os || '—'],
          ...(vm.networks && vm.networks.length ? vm.networks : vm.network ? [vm.network] : []).map((n, i, all) =>
            [all.length > 1 ? `Address ${i + 1}` : 'Address', n.ip
              ? `${n.ip}/${n.prefix} on ${n.name} (MAC ${n.mac})`
              : `on ${n.name}, allocated when placed`]),
          ['Id', h('code', {}, vm.id)]].map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      vm.fault ? [h('h2', {}, 'Fault'), h('p', { className: 'fault', role: 'alert' }, vm.fault)] : null,
      h('h2', {}, 'Task'),
      task ? h('div', { className: 'card' },
        h('p', { id: 'task-state' }, `${task.kind}: `, badge(task.state), taskSummary(task)),
        task.aborted_by ? h('p', { id: 'task-aborted-by' },
          `${task.state === 'FAILED' ? 'Force-failed' : 'Aborted'} by ${task.aborted_by}`) : null,
        taskActions.length ? h('div', { className: 'actions' }, taskActions) : null,
        h('div', { className: 'bar' }, h('span', { id: 'task-all' }, 'Overall'),
          h('progress', { max: 100, value: task.percent, 'aria-labelledby': 'task-all' }), `${task.percent}%`),
        h('ol', {}, task.steps.map((s, i) => {
          const pct = s.state === 'SUCCEEDED' ? 100 : s.state === 'RUNNING' ? null : 0;
          const lid = 'step-' + i;
          return h('li', { className: 'bar' }, h('span', { id: lid }, s.name),
            pct === null ? h('progress', { max: 100, 'aria-labelledby': lid })
              : h('progress', { max: 100, value: pct, 'aria-labelledby': lid }),
            badge(s.state), s.result ? h('span', { className: s.state === 'FAILED' ? 'fault' : 'muted' }, s.result) : null);
        })),
        task.fault ? h('p', { className: 'fault' }, task.fault) : null)
        : h('p', { className: 'muted' }, 'No task.'),
      h('h2', {}, 'Cost this month'),
      cost,
      h('h2', {}, 'Lease'),
      h('ol', { className: 'timeline' },
        h('li', {}, `Created ${when(vm.created_at)}`),
        vm.lease && vm.lease.expires_at ? h('li', {}, `Lease ends ${when(vm.lease.expires_at)}` +
          (vm.lease.extensions ? ` (extended ${vm.lease.extensions} time${vm.lease.extensions > 1 ? 's' : ''})` : '')) : h('li', {}, 'No lease end'),
        vm.lease && vm.lease.tombstone_until ? h('li', {}, `Kept until ${when(vm.lease.tombstone_until)}, then disposed`) : null),
      h('h2', {}, 'Audit'),
      audit === null ? h('p', { className: 'muted' }, 'The audit trail is for managers, auditors and admins.')
        : audit.length ? h('table', {}, h('thead', {}, h('tr', {}, ['When', 'Who', 'Action', 'Result'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, audit.map((a) => h('tr', {}, h('td', {}, when(a.at)), h('td', {}, a.actor || '—'),
            h('td', {}, a.action), h('td', {}, String(a.result ?? '')))))) : h('p', {}, 'No entries.'));
  }
  await render();
  state.onEvent = (ev) => {
    if (ev.vm === id || (taskId && ev.task === taskId)) render().catch(showError);
  };
  return { title: 'VM', node: section };
}

// ---- 6. approvals inbox ---------------------------------------------------------------

async function approvalsScreen() {
  const tbody = h('tbody', {});
  async function load() {
    const pending = await api.all('/v1/requests?state=PENDING_APPROVAL', 'requests');
    clear(tbody).append(...pending.map((r) => h('tr', { dataset: { request: r.id } },
      h('td', {}, when(r.created_at)), h('th', { scope: 'row' }, r.name || r.kind), h('td', {}, r.kind),
      h('td', {}, r.owner),
      h('td', {}, groupName(r.group)), h('td', {}, String(r.count)), h('td', {}, r.awaiting || ''),
      h('td', {}, h('div', { className: 'actions' },
        h('button', { type: 'button', className: 'primary', 'aria-label': `Approve ${r.name}`,
          onclick: () => decide(r, true) }, 'Approve'),
        h('button', { type: 'button', className: 'danger', 'aria-label': `Reject ${r.name}`,
          onclick: () => decide(r, false) }, 'Reject'))))));
    if (!pending.length) tbody.append(h('tr', {}, h('td', { colspan: 8 }, 'Nothing waits for a decision.')));
  }
  async function decide(r, approve) {
    showError(null);
    let body = {};
    if (!approve) {
      const f = await confirmDialog({ title: `Reject ${r.name}?`, danger: true, confirm: 'Reject',
        fields: [{ name: 'reason', label: 'Reason', type: 'textarea', required: true }] });
      if (!f) return;
      body = { reason: f.reason };
    }
    try {
      await api.post(`/v1/requests/${r.id}/${approve ? 'approve' : 'reject'}`, body);
      announce(`${r.name} ${approve ? 'approved' : 'rejected'}`);
      await load();
    } catch (err) { showError(err); }
  }
  await load();
  state.onEvent = (ev) => { if (ev.request) load().catch(showError); };
  return {
    title: 'Approvals',
    node: h('section', {}, h('h1', {}, 'Approvals'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Created', 'Request', 'Kind', 'Owner', 'Group', 'Count', 'Awaiting', 'Decision']
        .map((c) => h('th', { scope: 'col' }, c)))), tbody)),
  };
}

// ---- 7. groups ------------------------------------------------------------------------

async function groupsScreen(id) {
  if (!id) {
    const groups = await api.all('/v1/groups', 'groups');
    // Onboarding: anyone may ask for a new group; an admin decides (approvals inbox) and
    // the asker becomes its manager. The server's message goes next to its field.
    const dims = [['vms', 'VMs'], ['vcpus', 'vCPUs'], ['ram_mb', 'RAM (MB)'], ['disk_gb', 'Disk (GB)']];
    const errors = {};
    const fieldOf = (name, label, control) => {
      control.id = 'onb-' + name;
      control.name = name;
      errors[name] = h('div', { className: 'field-error', id: `onb-${name}-error` });
      control.setAttribute('aria-describedby', `onb-${name}-error`);
      return h('div', { className: 'field' }, h('label', { for: control.id }, label), control, errors[name]);
    };
    const form = h('form', { className: 'card', novalidate: true },
      h('h2', {}, 'Ask for a new group'),
      fieldOf('name', 'Group name', h('input', { required: true })),
      fieldOf('justification', 'Justification', h('textarea', { rows: 2, required: true })),
      h('div', { className: 'filters' }, dims.map(([k, label]) => h('div', {},
        h('label', { for: 'onb-q-' + k }, `Quota: ${label}`), h('input', { id: 'onb-q-' + k, name: 'q_' + k, type: 'number', min: 0, value: 0 })))),
      errors.quota = h('div', { className: 'field-error', id: 'onb-quota-error' }),
      h('button', { type: 'submit' }, 'Ask'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError(null);
      for (const el of Object.values(errors)) el.textContent = '';
      const quota = {};
      for (const [k] of dims) quota[k] = Number(form.elements.namedItem('q_' + k).value) || 0;
      try {
        const name = form.elements.namedItem('name').value;
        await api.post('/v1/onboarding', { name, justification: form.elements.namedItem('justification').value, quota });
        announce(`Asked for group ${name}; an admin decides`);
        form.reset();
      } catch (err) {
        const f = err.details && err.details.field;
        if (f && errors[f]) {
          errors[f].textContent = err.message;
          const input = document.getElementById('onb-' + f);
          if (input) input.focus();
        } else showError(err);
      }
    });
    return {
      title: 'Groups',
      node: h('section', {}, h('h1', {}, 'Groups'),
        groups.length ? h('ul', {}, groups.map((g) => h('li', {}, h('a', { href: '#/groups/' + g.id }, g.name),
          g.description ? ` — ${g.description}` : ''))) : h('p', {}, 'You belong to no group.'),
        form),
    };
  }
  const section = h('section', {});
  const gid = encodeURIComponent(id);
  const manages = state.me.role === 'admin' ||
    groupRoles().some((m) => m.group === id && m.role === 'manager');
  const ROLES = ['member', 'manager', 'auditor'];

  async function change(method, path, body, done) {
    showError(null);
    try {
      await api.call(method, path, body);
      announce(done);
      await render();
    } catch (err) { showError(err); }
  }

  const isAdmin = state.me.role === 'admin';

  // The group's capacity (its members, operators and admins may read it; others are told so).
  async function capacityView() {
    try {
      const { capacity: c } = await api.get(`/v1/groups/${gid}/capacity`);
      const res = (r) => `${r.vcpus} vCPU, ${mb(r.ram_mb)} RAM, ${r.disk_gb} GB disk`;
      // A quota value of 0 limits nothing of that kind: only the limited ones have a "left".
      const dims = [['vms', ' VMs'], ['vcpus', ' vCPU'], ['ram_mb', ''], ['disk_gb', ' GB disk']];
      const limited = c.quota && c.left ? dims.filter(([k]) => (c.quota[k] || 0) > 0) : [];
      return h('dl', { className: 'props card', id: 'group-capacity' },
        h('dt', {}, 'Left in the quota'), h('dd', {}, !c.quota || !c.left ? 'no quota limit'
          : limited.length ? limited.map(([k, unit]) => (k === 'ram_mb' ? mb(c.left[k] || 0) + ' RAM' : `${c.left[k] || 0}${unit}`)).join(', ')
            : 'no limit of any kind'),
        h('dt', {}, 'Free on the hosts'), h('dd', {}, `${res(c.free)} (${c.hosts} host${c.hosts === 1 ? '' : 's'})`),
        h('dt', {}, 'Largest VM one host could take'), h('dd', {}, res(c.largest)),
        h('dt', {}, 'Usable within the quota'), h('dd', {}, res(c.usable)));
    } catch (err) {
      return h('p', { className: 'muted' }, `Capacity not readable: ${err.message}` +
        (err.requestId ? ` (request id ${err.requestId})` : ''));
    }
  }

  // Webhook: the URL and whether a signing secret is set (the secret itself is never shown).
  function webhookView(group) {
    const hook = group.webhook;
    const shown = h('dl', { className: 'props', id: 'webhook-current' },
      h('dt', {}, 'URL'), h('dd', {}, hook ? h('code', {}, hook.url) : 'none set'),
      hook ? [h('dt', {}, 'Signing secret'), h('dd', {}, hook.secret_set ? 'set (not shown)' : 'not set'),
        h('dt', {}, 'Changed'), h('dd', {}, `${when(hook.updated_at)}${hook.updated_by ? ' by ' + hook.updated_by : ''}`)] : null);
    if (!manages) return h('div', { className: 'card' }, shown);
    const errors = { url: h('div', { className: 'field-error', id: 'hook-url-error' }),
      secret: h('div', { className: 'field-error', id: 'hook-secret-error' }) };
    const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'hook-title' },
      h('h3', { id: 'hook-title', className: 'sr-only' }, 'Set the webhook'),
      shown,
      h('div', { className: 'field' }, h('label', { for: 'hook-url' }, 'Webhook URL'),
        h('input', { id: 'hook-url', name: 'url', type: 'url', value: hook ? hook.url : '', required: true,
          'aria-describedby': 'hook-url-error' }), errors.url),
      h('div', { className: 'field' }, h('label', { for: 'hook-secret' }, 'Signing secret'),
        h('input', { id: 'hook-secret', name: 'secret', type: 'password', autocomplete: 'new-password',
          minlength: 16, 'aria-describedby': 'hook-secret-hint hook-secret-error' }),
        h('div', { className: 'hint', id: 'hook-secret-hint' }, hook && hook.secret_set
          ? 'Leave empty to keep the secret set.' : 'At least 16 characters; notices are signed with it.'),
        errors.secret),
      h('div', { className: 'actions' },
        h('button', { type: 'submit', className: 'primary' }, 'Save webhook'),
        hook ? h('button', { type: 'button', className: 'danger', onclick: async () => {
          if (await confirmDialog({ title: `Remove the webhook of ${group.name}?`, danger: true, confirm: 'Remove',
            message: 'No more notices are sent to it.' })) {
            await change('DELETE', `/v1/groups/${gid}/webhook`, undefined, 'Webhook removed');
          }
        } }, 'Remove webhook') : null));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError(null);
      for (const el of Object.values(errors)) el.textContent = '';
      for (const input of [form.url, form.secret]) input.removeAttribute('aria-invalid');
      const body = { url: form.url.value.trim() };
      if (form.secret.value) body.secret = form.secret.value;
      try {
        await api.call('PUT', `/v1/groups/${gid}/webhook`, body);
        form.secret.value = '';
        announce('Webhook saved');
        await render();
      } catch (err) {
        const f = err.details && err.details.field;
        if (f && errors[f]) {
          errors[f].textContent = err.message + (err.requestId ? ` (request id ${err.requestId})` : '');
          const input = document.getElementById('hook-' + f);
          input.setAttribute('aria-invalid', 'true');
          input.focus();
        } else showError(err);
      }
    });
    return form;
  }

  // The lease policy and the templates the group offers (0 and [] mean the platform's
  // settings and every template); admins change them with PATCH /v1/groups/{id}.
  async function policyView(group) {
    const policy = [['max_lease_days', 'Longest lease (days after creation)'],
      ['max_extensions', 'Extensions without approval'], ['lease_notice_hours', 'Notice before a lease ends (hours)']];
    const offered = group.templates || [];
    const shown = h('dl', { className: 'props', id: 'group-policy' },
      policy.map(([k, label]) => [h('dt', {}, label), h('dd', {}, group[k] ? String(group[k]) : 'platform setting')]),
      h('dt', {}, 'Templates offered'), h('dd', {}, offered.length ? offered.join(', ') : 'every template'));
    if (!isAdmin) return h('div', { className: 'card' }, shown);
    let all = [];
    try { all = (await api.get('/v1/templates')).templates; } catch (err) { showError(err); }
    const form = h('form', { className: 'card', novalidate: true },
      shown,
      h('div', { className: 'filters' }, policy.map(([k, label]) => h('div', {},
        h('label', { for: 'pol-' + k }, label),
        h('input', { id: 'pol-' + k, name: k, type: 'number', min: 0, value: group[k] || 0 })))),
      h('fieldset', {}, h('legend', {}, 'Templates offered (none ticked: every template)'),
        all.map((t) => h('label', { className: 'check' },
          h('input', { type: 'checkbox', name: 'tpl', value: t.name, checked: offered.includes(t.name) }), ` ${t.name}`))),
      h('button', { type: 'submit' }, 'Save policy'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const body = { version: group.version };
      for (const [k] of policy) body[k] = Number(form.elements.namedItem(k).value) || 0;
      body.templates = [...form.querySelectorAll('input[name="tpl"]:checked')].map((c) => c.value);
      change('PATCH', `/v1/groups/${gid}`, body, 'Group policy saved');
    });
    return form;
  }

  // A reservation asked for by a manager: an allocation request whose reservations replace
  // the group's (granted at once within auto_growth_max and free capacity, else an admin).
  function reservationForm(group) {
    const dims = [['vcpus', 'vCPUs'], ['ram_mb', 'RAM (MB)'], ['disk_gb', 'Disk (GB)']];
    const form = h('form', { className: 'card' },
      h('p', { className: 'hint' }, 'Ask for capacity held for this group on a host (or on any host). The group keeps its other reservations; one already on that host is replaced.'),
      h('div', { className: 'filters' },
        h('div', {}, h('label', { for: 'resv-host' }, 'Host (empty: any host)'), h('input', { id: 'resv-host', name: 'host' })),
        dims.map(([k, label]) => h('div', {}, h('label', { for: 'resv-' + k }, label),
          h('input', { id: 'resv-' + k, name: k, type: 'number', min: 0, value: 0 })))),
      h('div', { className: 'field' }, h('label', { for: 'resv-why' }, 'Justification'),
        h('textarea', { id: 'resv-why', name: 'justification', rows: 2 })),
      h('button', { type: 'submit' }, 'Ask for the reservation'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      showError(null);
      const asked = {};
      if (form.host.value.trim()) asked.host = form.host.value.trim();
      for (const [k] of dims) asked[k] = Number(form.elements.namedItem(k).value) || 0;
      // The request's reservations replace the group's: the others are sent along unchanged.
      const kept = (group.reservations || []).filter((r) => (r.host || null) !== (asked.host || null))
        .map((r) => ({ host: r.host || null, vcpus: r.vcpus, ram_mb: r.ram_mb, disk_gb: r.disk_gb }));
      const body = { reservations: [...kept, asked] };
      if (form.justification.value.trim()) body.justification = form.justification.value.trim();
      try {
        const { request } = await api.post(`/v1/groups/${gid}/allocations`, body);
        const pending = request.state === 'PENDING_APPROVAL';
        showNotice(`Reservation for ${group.name}: ${pending ? 'sent for approval' : request.state}. `,
          h('a', { href: '#/requests/' + encodeURIComponent(request.id) }, 'See the request'));
        announce(`Reservation ${pending ? 'sent for approval' : request.state}`);
        await render();
      } catch (err) { showError(err); }
    });
    return form;
  }

  async function render() {
    const { group } = await api.get('/v1/groups/' + gid);
    const members = await api.all(`/v1/groups/${gid}/members`, 'members');
    const [capacity, policy] = await Promise.all([capacityView(), policyView(group)]);
    const q = group.quota, u = group.usage || {};
    const memberRows = members.map((m) => h('tr', {}, h('th', { scope: 'row' }, m.user),
      h('td', {}, manages
        ? h('select', { 'aria-label': `Role of ${m.user}`,
          onchange: (ev) => change('PUT', `/v1/groups/${gid}/members/${encodeURIComponent(m.user)}`,
            { role: ev.target.value }, `${m.user} is now ${ev.target.value}`) },
        ROLES.map((r) => h('option', { value: r, selected: r === m.role }, r)))
        : m.role),
      manages ? h('td', {}, h('button', { type: 'button', className: 'danger', 'aria-label': `Remove ${m.user}`,
        onclick: async () => {
          if (await confirmDialog({ title: `Remove ${m.user} from ${group.name}?`, danger: true, confirm: 'Remove' })) {
            await change('DELETE', `/v1/groups/${gid}/members/${encodeURIComponent(m.user)}`, undefined, `${m.user} removed`);
          }
        } }, 'Remove')) : null));
    let addForm = null, allocForm = null;
    if (manages) {
      addForm = h('form', { className: 'filters' },
        h('div', {}, h('label', { for: 'add-user' }, 'User'), h('input', { id: 'add-user', name: 'user', required: true })),
        h('div', {}, h('label', { for: 'add-role' }, 'Role'), h('select', { id: 'add-role', name: 'role' },
          ROLES.map((r) => h('option', { value: r }, r)))),
        h('button', { type: 'submit' }, 'Add member'));
      addForm.addEventListener('submit', (ev) => {
        ev.preventDefault();
        change('POST', `/v1/groups/${gid}/members`, { user: addForm.user.value.trim(), role: addForm.role.value },
          `${addForm.user.value.trim()} added`);
      });
      const dims = [['vms', 'VMs'], ['vcpus', 'vCPUs'], ['ram_mb', 'RAM (MB)'], ['disk_gb', 'Disk (GB)']];
      allocForm = h('form', { className: 'card' },
        h('p', { className: 'hint' }, 'Ask for more quota: granted at once within the group\'s automatic growth and free capacity, else an admin decides.'),
        h('div', { className: 'filters' }, dims.map(([k, label]) => h('div', {},
          h('label', { for: 'alloc-' + k }, label), h('input', { id: 'alloc-' + k, name: k, type: 'number', min: 0, value: 0 })))),
        h('div', { className: 'field' }, h('label', { for: 'alloc-why' }, 'Justification'),
          h('textarea', { id: 'alloc-why', name: 'justification', rows: 2 })),
        h('button', { type: 'submit' }, 'Ask for more quota'));
      allocForm.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const delta = {};
        for (const [k] of dims) {
          const n = Number(allocForm[k].value);
          if (n > 0) delta[k] = n;
        }
        const body = { delta };
        if (allocForm.justification.value.trim()) body.justification = allocForm.justification.value.trim();
        change('POST', `/v1/groups/${gid}/allocations`, body, 'Allocation asked for');
      });
    }
    fill(section, h('h1', {}, `Group ${group.name}`),
      chargebackGroups().includes(id) ? h('p', {}, h('a', { href: '#/chargeback/' + gid }, 'Chargeback and budget')) : null,
      h('h2', {}, 'Quota use'),
      q ? h('div', { className: 'card' },
        usageBar('VMs', u.vms || 0, q.vms), usageBar('vCPUs', u.vcpus || 0, q.vcpus),
        usageBar('RAM', u.ram_mb || 0, q.ram_mb, ' MB'), usageBar('Disk', u.disk_gb || 0, q.disk_gb, ' GB'))
        : h('p', {}, 'No quota limit.'),
      allocForm,
      h('h2', {}, 'Capacity'),
      capacity,
      h('h2', {}, 'Lease policy and templates'),
      policy,
      h('h2', {}, 'Webhook'),
      webhookView(group),
      h('h2', {}, 'Members'),
      h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'Role'),
        manages ? h('th', { scope: 'col' }, '') : null)), h('tbody', {}, memberRows)),
      addForm,
      h('h2', {}, 'Reservations'),
      group.reservations && group.reservations.length ? h('ul', {}, group.reservations.map((r) =>
        h('li', {}, `${r.host || 'any host'}: ${r.vcpus} vCPU, ${mb(r.ram_mb)}, ${r.disk_gb} GB` +
          (r.used ? ` (in use: ${r.used.vcpus} vCPU, ${mb(r.used.ram_mb)}, ${r.used.disk_gb} GB)` : '')))) : h('p', {}, 'None.'),
      manages ? reservationForm(group) : null);
  }
  await render();
  state.onEvent = (ev) => { if (ev.group === id && ev.type && ev.type.startsWith('group.')) render().catch(showError); };
  return { title: 'Group', node: section };
}

// ---- 8. users (admins) ----------------------------------------------------------------

async function usersScreen() {
  const tbody = h('tbody', {});
  async function load() {
    const users = await api.all('/v1/users', 'users');
    clear(tbody).append(...users.map((u) => h('tr', {},
      h('th', { scope: 'row' }, u.username), h('td', {}, u.display_name || ''), h('td', {}, u.email || ''),
      h('td', {}, u.role), h('td', {}, badge(u.state)),
      h('td', {}, u.username === state.me.username ? '' : h('button', { type: 'button',
        className: u.state === 'ACTIVE' ? 'danger' : '', 'aria-label': `${u.state === 'ACTIVE' ? 'Disable' : 'Enable'} ${u.username}`,
        onclick: async () => {
          const disable = u.state === 'ACTIVE';
          if (disable && !(await confirmDialog({ title: `Disable ${u.username}?`, danger: true, confirm: 'Disable',
            message: 'They can no longer sign in, and their sessions and tokens stop working.' }))) return;
          try {
            await api.call('PATCH', '/v1/users/' + encodeURIComponent(u.username), { state: disable ? 'DISABLED' : 'ACTIVE' });
            announce(`${u.username} ${disable ? 'disabled' : 'enabled'}`);
            await load();
          } catch (err) { showError(err); }
        } }, u.state === 'ACTIVE' ? 'Disable' : 'Enable')))));
  }
  await load();
  return {
    title: 'Users',
    node: h('section', {}, h('h1', {}, 'Users'),
      h('table', {}, h('thead', {}, h('tr', {}, ['User', 'Name', 'Email', 'Role', 'State', '']
        .map((c) => h('th', { scope: 'col' }, c)))), tbody)),
  };
}

// ---- 9. hosts (admins, operators) -----------------------------------------------------

async function hostsScreen() {
  const tbody = h('tbody', {});
  async function load() {
    const { hosts } = await api.get('/v1/hosts');
    clear(tbody).append(...hosts.map((host) => h('tr', {},
      h('th', { scope: 'row' }, host.name || host.id), h('td', {}, badge(host.state)),
      h('td', {}, usageBar('vCPU', host.used.vcpus, host.capacity.vcpus),
        usageBar('RAM', host.used.ram_mb, host.capacity.ram_mb, ' MB'),
        usageBar('Disk', host.used.disk_gb, host.capacity.disk_gb, ' GB')),
      h('td', {}, String(host.vms)),
      h('td', {}, h('button', { type: 'button', 'aria-pressed': host.maintenance ? 'true' : 'false',
        'aria-label': `Maintenance of ${host.name || host.id}`,
        onclick: async () => {
          try {
            await api.post(`/v1/hosts/${host.id}/maintenance`, { enabled: !host.maintenance });
            announce(`${host.name}: maintenance ${host.maintenance ? 'ended' : 'started'}`);
            await load();
          } catch (err) { showError(err); }
        } }, host.maintenance ? 'In maintenance: end' : 'Start maintenance')))));
  }
  await load();
  state.onEvent = (ev) => { if (ev.type && ev.type.startsWith('host.')) load().catch(showError); };
  return {
    title: 'Hosts',
    node: h('section', {}, h('h1', {}, 'Hosts'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Host', 'State', 'Utilisation', 'VMs', 'Maintenance']
        .map((c) => h('th', { scope: 'col' }, c)))), tbody)),
  };
}

// ---- 10. the all-VMs report (admins, operators) ----------------------------------------

const REPORT_COLUMNS = [['name', 'Name'], ['state', 'State'], ['power_state', 'Power'],
  ['expires', 'Lease expires'], ['owner', 'Owner'], ['group', 'Group'], ['host', 'Host']];

function reportCells(vm) {
  return { name: vm.name, state: vm.state, power_state: vm.power_state || '', owner: vm.owner || '',
    expires: (vm.lease && vm.lease.expires_at) || '', group: groupName(vm.group), host: vm.host || '' };
}

// RFC 4180: every field quoted, quotes doubled; a leading =, +, - or @ is prefixed with '
// so that a spreadsheet never runs a VM name as a formula.
function csvField(v) {
  let text = String(v ?? '');
  if (/^[=+\-@]/.test(text)) text = "'" + text;
  return '"' + text.replace(/"/g, '""') + '"';
}

async function reportScreen() {
  const all = await api.all('/v1/vms', 'vms', 20000);
  const inputs = {
    state: h('select', { id: 'rep-state' }, h('option', { value: '' }, 'Any'),
      ['PENDING_APPROVAL', 'PROVISIONING', 'ACTIVE', 'EXPIRING', 'EXPIRED', 'ERROR', 'DISPOSED'].map((x) => h('option', { value: x }, x))),
    owner: h('input', { id: 'rep-owner' }),
    group: h('select', { id: 'rep-group' }, h('option', { value: '' }, 'Any'),
      [...state.groups].map(([id, name]) => h('option', { value: id }, name))),
    host: h('input', { id: 'rep-host' }),
  };
  const tbody = h('tbody', {});
  const count = h('p', { className: 'muted', 'aria-live': 'polite' });
  let shown = [];
  function render() {
    const owner = inputs.owner.value.trim(), host = inputs.host.value.trim();
    shown = all.filter((vm) => (!inputs.state.value || vm.state === inputs.state.value) &&
      (!owner || vm.owner === owner) && (!inputs.group.value || vm.group === inputs.group.value) &&
      (!host || vm.host === host)).sort((a, b) => a.name.localeCompare(b.name));
    clear(tbody).append(...shown.map((vm) => {
      const c = reportCells(vm);
      return h('tr', {}, h('th', { scope: 'row' }, h('a', { href: '#/vm/' + vm.id }, c.name)),
        h('td', {}, badge(c.state)), h('td', {}, badge(c.power_state)), h('td', {}, when(c.expires)),
        h('td', {}, c.owner), h('td', {}, c.group), h('td', {}, c.host));
    }));
    count.textContent = `${shown.length} of ${all.length} VMs`;
  }
  function exportCsv() {
    const lines = [REPORT_COLUMNS.map(([, label]) => csvField(label)).join(',')];
    for (const vm of shown) {
      const c = reportCells(vm);
      lines.push(REPORT_COLUMNS.map(([k]) => csvField(c[k])).join(','));
    }
    const blob = new Blob([lines.join('\r\n') + '\r\n'], { type: 'text/csv' });
    const a = h('a', { href: URL.createObjectURL(blob), download: 'berth-vms.csv' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    announce(`Exported ${shown.length} VMs as CSV`);
  }
  for (const el of Object.values(inputs)) el.addEventListener('input', render);
  render();
  return {
    title: 'All VMs',
    node: h('section', {}, h('h1', {}, 'All VMs'),
      h('div', { className: 'filters', role: 'search' },
        h('div', {}, h('label', { for: 'rep-state' }, 'State'), inputs.state),
        h('div', {}, h('label', { for: 'rep-owner' }, 'Owner'), inputs.owner),
        h('div', {}, h('label', { for: 'rep-group' }, 'Group'), inputs.group),
        h('div', {}, h('label', { for: 'rep-host' }, 'Host'), inputs.host),
        h('button', { type: 'button', onclick: exportCsv }, 'Export CSV')),
      count,
      h('table', {}, h('thead', {}, h('tr', {}, REPORT_COLUMNS.map(([, label]) => h('th', { scope: 'col' }, label)))), tbody)),
  };
}

// ---- 11. usage ------------------------------------------------------------------------

// A bar chart of one series (label, value per day) as SVG; the table below it carries the same
// numbers for screen readers and for copying.
function barChart(title, days, values, unit) {
  const W = 640, H = 180, pad = 28, max = Math.max(...values) || 1;
  const bw = (W - pad * 2) / values.length;
  const bars = values.map((v, i) => {
    const bh = (v / max) * (H - pad * 2);
    return svg('rect', { x: pad + i * bw + 2, y: H - pad - bh, width: Math.max(1, bw - 4), height: bh,
      class: 'chart-bar' }, svg('title', {}, document.createTextNode(`${days[i]}: ${v.toFixed(2)} ${unit}`)));
  });
  const labels = days.map((d, i) => (i % 2 === 0 ? svg('text', { x: pad + i * bw + bw / 2, y: H - 8,
    'text-anchor': 'middle', class: 'chart-label' }, document.createTextNode(d.slice(5))) : null));
  return h('figure', { className: 'card' },
    h('figcaption', {}, `${title} (highest day: ${Math.max(...values).toFixed(3)} ${unit})`),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', 'aria-label': `${title} per day` },
      svg('line', { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: 'chart-axis' }), ...bars, ...labels.filter(Boolean)));
}

async function usageScreen() {
  const scopes = [['', 'My VMs']];
  for (const m of groupRoles()) {
    if (m.role === 'manager' || m.role === 'auditor') scopes.push(['group:' + m.group, 'Group ' + groupName(m.group)]);
  }
  if (state.me.role === 'admin') scopes.push(['all', 'Everyone']);
  const scopeSel = h('select', { id: 'usage-scope' }, scopes.map(([v, l]) => h('option', { value: v }, l)));
  const body = h('div', { 'aria-live': 'polite' });
  const DAYS = 14;

  async function load() {
    const today = new Date();
    today.setUTCHours(0, 0, 0, 0);
    const days = [];
    for (let i = DAYS - 1; i >= 0; i--) days.push(new Date(today.getTime() - i * 86400000));
    const scope = scopeSel.value;
    const extra = scope.startsWith('group:') ? '&group=' + encodeURIComponent(scope.slice(6))
      : scope === '' ? '&owner=' + encodeURIComponent(state.me.username) : '';
    // One window per day: the meter answers hours inside [from, to).
    const totals = await Promise.all(days.map(async (d) => {
      const from = d.toISOString(), to = new Date(d.getTime() + 86400000).toISOString();
      const { usage } = await api.get(`/v1/usage?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}${extra}`);
      const sum = { vm: 0, vcpu: 0, ram: 0, disk: 0 };
      for (const u of usage) {
        sum.vm += u.active_hours || 0;
        sum.vcpu += u.vcpu_hours;
        sum.ram += u.ram_gb_hours;
        sum.disk += u.disk_gb_hours;
      }
      return sum;
    }));
    const labels = days.map((d) => d.toISOString().slice(0, 10));
    fill(body,
      barChart('VM-hours', labels, totals.map((t) => t.vm), 'h'),
      barChart('vCPU-hours', labels, totals.map((t) => t.vcpu), 'vCPU·h'),
      barChart('RAM GB-hours', labels, totals.map((t) => t.ram), 'GB·h'),
      barChart('Disk GB-hours', labels, totals.map((t) => t.disk), 'GB·h'),
      h('details', {}, h('summary', {}, 'The numbers'),
        h('table', {}, h('thead', {}, h('tr', {}, ['Day (UTC)', 'VM-hours', 'vCPU-hours', 'RAM GB-hours', 'Disk GB-hours']
          .map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, totals.map((t, i) => h('tr', {}, h('th', { scope: 'row' }, labels[i]),
          [t.vm, t.vcpu, t.ram, t.disk].map((v) => h('td', {}, v.toFixed(3)))))))));
  }
  scopeSel.addEventListener('change', () => load().catch(showError));
  await load();
  return {
    title: 'Usage',
    node: h('section', {}, h('h1', {}, 'Usage, last 14 days'),
      h('div', { className: 'filters' }, h('div', {}, h('label', { for: 'usage-scope' }, 'Scope'), scopeSel)), body),
  };
}

// ---- audit ----------------------------------------------------------------------------

async function auditScreen() {
  const fields = ['actor', 'action', 'target'];
  const inputs = Object.fromEntries(fields.map((f) => [f, h('input', { id: 'audit-' + f, name: f })]));
  const tbody = h('tbody', {});
  async function load() {
    const qs = fields.filter((f) => inputs[f].value.trim())
      .map((f) => `${f}=${encodeURIComponent(inputs[f].value.trim())}`).join('&');
    const { records } = await api.get('/v1/audit?limit=200' + (qs ? '&' + qs : ''));
    clear(tbody).append(...records.map((a) => h('tr', {}, h('td', {}, when(a.at)), h('td', {}, a.actor || '—'),
      h('td', {}, a.action), h('td', {}, a.target || ''), h('td', {}, groupName(a.group)), h('td', {}, String(a.result ?? '')))));
  }
  const form = h('form', { className: 'filters', role: 'search' },
    fields.map((f) => h('div', {}, h('label', { for: 'audit-' + f }, f[0].toUpperCase() + f.slice(1)), inputs[f])),
    h('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load().catch(showError); });
  await load();
  return {
    title: 'Audit',
    node: h('section', {}, h('h1', {}, 'Audit log'), form,
      h('table', {}, h('thead', {}, h('tr', {}, ['When', 'Actor', 'Action', 'Target', 'Group', 'Result']
        .map((c) => h('th', { scope: 'col' }, c)))), tbody)),
  };
}

// ---- router ---------------------------------------------------------------------------

const ROUTES = {
  catalog: () => catalogScreen(),
  request: (id) => requestScreen(id),
  requests: (id) => requestsScreen(id),
  vms: () => vmsScreen(),
  vm: (id) => vmDetailScreen(id),
  approvals: () => approvalsScreen(),
  groups: (id) => groupsScreen(id),
  hosts: () => hostsScreen(),
  report: () => reportScreen(),
  users: () => usersScreen(),
  usage: () => usageScreen(),
  audit: () => auditScreen(),
  chargeback: (id) => chargebackScreen(id),
  images: (id) => imagesScreen(id),
  keys: () => keysScreen(),
  networks: (id) => networksScreen(id),
};

let rendering = 0;

async function route() {
  const serial = ++rendering;
  const [, name = '', arg] = location.hash.split('/');
  // Events that arrive while the screen loads (before it sets its handler) are kept and given
  // to it once it is shown: a VM that turns ACTIVE between the screen's read and its handler
  // would otherwise stay PROVISIONING on screen.
  const early = [];
  const keep = (ev) => early.push(ev);
  state.onEvent = keep;
  showError(null);
  showNotice();
  let screen;
  try {
    if (!state.me || name === 'login') screen = loginScreen();
    else screen = await (ROUTES[name] || ROUTES.catalog)(arg && decodeURIComponent(arg));
  } catch (err) {
    if (err.status === 401) {
      state.me = null;
      stopEvents();
      renderChrome();
      screen = loginScreen();
    } else {
      screen = { title: 'Error', node: h('section', {}, h('h1', {}, 'Something went wrong')) };
      showError(err);
    }
  }
  if (serial !== rendering) return; // a newer navigation won
  clear(main).append(screen.node);
  if (state.onEvent === keep) state.onEvent = null;
  else if (state.onEvent) for (const ev of early) state.onEvent(ev);
  document.title = `${screen.title} · Berth`;
  markCurrent();
  // Focus moves to the new screen so keyboard and screen reader users start there.
  if (screen.focus) screen.focus(); else main.focus();
}

async function boot() {
  const user = localStorage.getItem(USER_KEY);
  if (api.hasSession() && user) {
    try {
      await loadMe(user);
      startEvents();
    } catch (err) {
      if (err.status !== 401) showError(err);
      state.me = null;
    }
  }
  renderChrome();
  window.addEventListener('hashchange', route);
  await route();
}

boot();
