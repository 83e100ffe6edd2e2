// Images (GET /v1/images, /v1/images/{id}): everyone reads them; admins and operators
// upload a model from a file of their own (POST /v1/images, application/octet-stream) or
// import one from a file under the stager's import directory (POST /v1/images), stage a
// model (POST /v1/images/{id}/stage: a staged image, its identity stripped, whose stage and
// percent show while it runs) and delete an image nothing uses (DELETE; a 409 names what
// uses it).
import * as api from './api.js';
import { h, clear, fill, badge, when, mb, confirmDialog } from './dom.js';
import { showError, announce, isPlatform, fieldErrors } from './ui.js';

function apps(image) {
  return (image.applications || []).map((a) => (a.version ? `${a.name} ${a.version}` : a.name)).join(', ') || '—';
}

function size(bytes) {
  if (!bytes) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, n = bytes;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function os(image) {
  return [image.os, image.os_version].filter(Boolean).join(' ') || '—';
}

// While an import or a staging runs (no live event tells its end) the screen reads the image
// again every two seconds, as long as it is on screen.
function whileImporting(node, images, again) {
  if (!images.some((i) => i.state === 'IMPORTING' || i.state === 'STAGING')) return;
  setTimeout(() => { if (node.isConnected) again().catch(showError); }, 2000);
}

// Its state, and while STAGING the stage it is in and how far.
function state(image) {
  const b = badge(image.state);
  if (image.state !== 'STAGING' || !image.stage) return b;
  return h('span', {}, b, ' ', h('span', { className: 'hint' }, `${image.stage} ${image.percent || 0}%`));
}

// The model a staged image came from, as a link (by name when the list holds it).
function modelLink(image, byId) {
  if (image.kind !== 'staged' || !image.model) return '—';
  const name = (byId && byId[image.model]) || image.model;
  return h('a', { href: '#/images/' + encodeURIComponent(image.model) }, name);
}

async function stageImage(image, done) {
  showError(null);
  try {
    const { image: staged } = await api.post('/v1/images/' + encodeURIComponent(image.id || image.name) + '/stage', {});
    announce(`Staging ${image.name} as ${staged.name}`);
    await done();
  } catch (err) {
    showError(err);
  }
}

// "nginx 1.22, postgresql 15" -> [{name, version}]
function parseApps(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean).map((t) => {
    const [name, ...rest] = t.split(/\s+/);
    return rest.length ? { name, version: rest.join(' ') } : { name };
  });
}

function importForm(done) {
  const fe = fieldErrors('img');
  const num = () => h('input', { type: 'number', min: 0, value: 0 });
  const inputs = {
    path: h('input', { required: true, autocomplete: 'off' }),
    name: h('input', { required: true, autocomplete: 'off' }),
    os: h('input', { required: true }),
    os_version: h('input', {}),
    arch: h('input', { value: 'x86_64' }),
    applications: h('input', { autocomplete: 'off' }),
    min_ram_mb: num(),
    min_disk_gb: num(),
    kernel: h('input', { autocomplete: 'off' }),
    initrd: h('input', { autocomplete: 'off' }),
    cmdline: h('input', { autocomplete: 'off' }),
  };
  const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'img-import-title' },
    h('h2', { id: 'img-import-title' }, 'Import an image'),
    fe.field('path', 'File', inputs.path, 'Relative to the stager\'s import directory; qcow2, inspected before anything is stored.'),
    fe.field('name', 'Name', inputs.name, 'Lower case letters, digits, dots, dashes and underscores.'),
    h('div', { className: 'filters' },
      fe.field('os', 'OS', inputs.os),
      fe.field('os_version', 'OS version', inputs.os_version),
      fe.field('arch', 'Architecture', inputs.arch)),
    fe.field('applications', 'Applications', inputs.applications, 'Comma separated, each "name version" (e.g. nginx 1.22, postgresql 15).'),
    h('div', { className: 'filters' },
      fe.field('min_ram_mb', 'Minimum RAM (MB)', inputs.min_ram_mb),
      fe.field('min_disk_gb', 'Minimum disk (GB)', inputs.min_disk_gb)),
    h('details', {}, h('summary', {}, 'Direct boot (optional)'),
      h('p', { className: 'hint' }, 'The image boots this kernel and initrd (files under the import directory, both or neither) instead of the disk\'s boot loader.'),
      h('div', { className: 'filters' },
        fe.field('kernel', 'Kernel', inputs.kernel),
        fe.field('initrd', 'Initrd', inputs.initrd),
        fe.field('cmdline', 'Kernel command line', inputs.cmdline))),
    h('button', { type: 'submit', className: 'primary' }, 'Import'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fe.reset();
    const body = { path: inputs.path.value.trim(), name: inputs.name.value.trim(), os: inputs.os.value.trim() };
    for (const k of ['os_version', 'arch', 'kernel', 'initrd', 'cmdline']) if (inputs[k].value.trim()) body[k] = inputs[k].value.trim();
    const list = parseApps(inputs.applications.value);
    if (list.length) body.applications = list;
    for (const k of ['min_ram_mb', 'min_disk_gb']) {
      const n = Number(inputs[k].value);
      body[k] = inputs[k].value !== '' && Number.isInteger(n) ? n : inputs[k].value;
    }
    try {
      const { image } = await api.post('/v1/images', body);
      announce(`Image ${image.name}: ${image.state}`);
      form.reset();
      await done();
    } catch (err) {
      // A file the stager refuses names path (details.reason says why).
      if (err.details && err.details.reason) err.message += ` (${err.details.reason})`;
      if (!fe.show(err)) showError(err);
    }
  });
  return form;
}

// Upload a model from a file on the user's machine (POST /v1/images, the file as the body,
// the metadata as query parameters): the browser streams it, a bar shows how far, and the
// stager inspects it before the image is recorded (READY at once, or refused naming `file`).
function uploadForm(done) {
  const fe = fieldErrors('up');
  const num = () => h('input', { type: 'number', min: 0, value: 0 });
  const inputs = {
    file: h('input', { type: 'file', required: true }),
    name: h('input', { required: true, autocomplete: 'off' }),
    os: h('input', { required: true }),
    os_version: h('input', {}),
    arch: h('input', { value: 'x86_64' }),
    applications: h('input', { autocomplete: 'off' }),
    min_ram_mb: num(),
    min_disk_gb: num(),
  };
  const bar = h('progress', { max: 100, value: 0, hidden: true, id: 'image-upload-progress' });
  const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'img-upload-title', id: 'image-upload' },
    h('h2', { id: 'img-upload-title' }, 'Upload an image'),
    fe.field('file', 'File', inputs.file, 'A qcow2 file on this computer; inspected before anything is stored.'),
    fe.field('name', 'Name', inputs.name, 'Lower case letters, digits, dots, dashes and underscores.'),
    h('div', { className: 'filters' },
      fe.field('os', 'OS', inputs.os),
      fe.field('os_version', 'OS version', inputs.os_version),
      fe.field('arch', 'Architecture', inputs.arch)),
    fe.field('applications', 'Applications', inputs.applications, 'Comma separated, each "name version" (e.g. nginx 1.22, postgresql 15).'),
    h('div', { className: 'filters' },
      fe.field('min_ram_mb', 'Minimum RAM (MB)', inputs.min_ram_mb),
      fe.field('min_disk_gb', 'Minimum disk (GB)', inputs.min_disk_gb)),
    bar,
    h('button', { type: 'submit', className: 'primary' }, 'Upload'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fe.reset();
    const file = inputs.file.files[0];
    if (!file) {
      fe.show({ details: { field: 'file' }, message: 'Choose a file to upload.' });
      return;
    }
    const q = new URLSearchParams({ name: inputs.name.value.trim(), os: inputs.os.value.trim() });
    for (const k of ['os_version', 'arch', 'min_ram_mb', 'min_disk_gb']) if (inputs[k].value.trim()) q.set(k, inputs[k].value.trim());
    const list = parseApps(inputs.applications.value);
    if (list.length) q.set('applications', list.map((a) => (a.version ? `${a.name}=${a.version}` : a.name)).join(','));
    bar.hidden = false;
    bar.value = 0;
    try {
      const { image } = await api.upload('/v1/images?' + q.toString(), file,
        (sent, total) => { bar.value = total ? Math.floor((sent * 100) / total) : 0; });
      announce(`Image ${image.name}: ${image.state}`);
      form.reset();
      await done();
    } catch (err) {
      if (err.details && err.details.reason) err.message += ` (${err.details.reason})`;
      if (!fe.show(err)) showError(err);
    } finally {
      bar.hidden = true;
    }
  });
  return form;
}

// The two ways to add a model, one form shown at a time: a file under the stager's import
// directory (the default) or a file of this computer, uploaded.
function addForms(done) {
  const box = h('div', { id: 'image-add' });
  const pick = (upload) => {
    fill(box, h('div', { className: 'actions', role: 'group', 'aria-label': 'Add an image from' },
      h('button', { type: 'button', 'aria-pressed': String(!upload), onclick: () => pick(false) }, 'From the server'),
      h('button', { type: 'button', 'aria-pressed': String(upload), onclick: () => pick(true) }, 'From this computer')),
    upload ? uploadForm(done) : importForm(done));
  };
  pick(false);
  return box;
}

async function deleteImage(image, done) {
  showError(null);
  if (!(await confirmDialog({ title: `Delete the image ${image.name}?`, danger: true, confirm: 'Delete',
    message: 'Its file is deleted from the store. This cannot be undone.' }))) return;
  try {
    await api.del('/v1/images/' + encodeURIComponent(image.id || image.name));
    announce(`Image ${image.name} deleted`);
    await done();
  } catch (err) {
    if (err.status === 409) {
      const d = err.details || {};
      const names = (x) => (Array.isArray(x) ? x.join(', ') : x);
      const users = [d.templates ? `templates ${names(d.templates)}` : '', d.vms ? `VMs ${names(d.vms)}` : '',
        d.staged ? `staged images ${names(d.staged)}` : '']
        .filter(Boolean).join('; ');
      err.message = `${image.name} is in use and stays: ${err.message}` + (users ? ` (${users})` : '');
    }
    showError(err);
  }
}

async function imageDetail(id) {
  const section = h('section', {});
  async function render() {
    const { image } = await api.get('/v1/images/' + encodeURIComponent(id));
    fill(section, h('h1', {}, `Image ${image.name}`),
      h('p', {}, h('a', { href: '#/images' }, 'All images')),
      h('dl', { className: 'props card', id: 'image-props' },
        [['State', state(image)], ['Kind', image.kind || 'model'], ['Model', modelLink(image)],
          ['OS', os(image)], ['Architecture', image.arch || '—'],
          ['Applications', apps(image)], ['Minimum RAM', image.min_ram_mb ? mb(image.min_ram_mb) : '—'],
          ['Minimum disk', image.min_disk_gb ? `${image.min_disk_gb} GB` : '—'], ['Format', image.format || '—'],
          ['Size', size(image.size_bytes)],
          ['Boot', image.direct_boot ? `direct: its own kernel and initrd${image.direct_boot.cmdline ? `, “${image.direct_boot.cmdline}”` : ''}` : 'the disk\'s boot loader'], ['SHA-256', image.sha256 ? h('code', { className: 'wrap' }, image.sha256) : '—'],
          ['Created', when(image.created)], ['Id', h('code', {}, image.id || '—')]]
          .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      image.fault ? h('p', { className: 'fault', role: 'alert' }, image.fault) : null,
      image.sysprep && image.sysprep.operations ? h('section', { className: 'card', id: 'image-sysprep' },
        h('h2', {}, `Identity stripped (${image.sysprep.method})`),
        h('ul', {}, image.sysprep.operations.map((o) => h('li', {}, h('strong', {}, o.operation), ': ',
          o.performed ? 'performed' : ['removed', 'emptied', 'edited']
            .filter((k) => (o[k] || []).length).map((k) => `${k} ${o[k].join(', ')}`).join('; ') || 'nothing to do')))) : null,
      isPlatform() ? h('div', { className: 'actions' },
        image.kind !== 'staged' && image.state === 'READY'
          ? h('button', { type: 'button', onclick: () => stageImage(image, async () => { location.hash = '#/images'; }) }, 'Stage image') : null,
        h('button', { type: 'button', className: 'danger',
          onclick: () => deleteImage(image, async () => { location.hash = '#/images'; }) }, 'Delete image')) : null);
    whileImporting(section, [image], render);
  }
  await render();
  return { title: 'Image', node: section };
}

export async function imagesScreen(id) {
  if (id) return imageDetail(id);
  const tbody = h('tbody', {});
  const section = h('section', {});
  async function load() {
    const { images } = await api.get('/v1/images');
    const byId = Object.fromEntries(images.map((i) => [i.id, i.name]));
    clear(tbody).append(...images.map((i) => h('tr', { dataset: { image: i.name, kind: i.kind || 'model' } },
      h('th', { scope: 'row' }, h('a', { href: '#/images/' + encodeURIComponent(i.id || i.name) }, i.name)),
      h('td', {}, i.kind || 'model'), h('td', {}, modelLink(i, byId)),
      h('td', {}, state(i)), h('td', {}, os(i)), h('td', {}, apps(i)),
      h('td', {}, i.min_ram_mb ? mb(i.min_ram_mb) : '—'), h('td', {}, i.min_disk_gb ? `${i.min_disk_gb} GB` : '—'),
      h('td', {}, size(i.size_bytes)),
      isPlatform() ? h('td', {},
        i.kind !== 'staged' && i.state === 'READY'
          ? h('button', { type: 'button', 'aria-label': `Stage ${i.name}`, onclick: () => stageImage(i, load) }, 'Stage') : null,
        ' ',
        h('button', { type: 'button', className: 'danger', 'aria-label': `Delete ${i.name}`,
          onclick: () => deleteImage(i, load) }, 'Delete')) : null)));
    if (!images.length) tbody.append(h('tr', {}, h('td', { colspan: 10 }, 'No images yet.')));
    whileImporting(section, images, load);
  }
  await load();
  const cols = ['Name', 'Kind', 'Model', 'State', 'OS', 'Applications', 'Min RAM', 'Min disk', 'Size'];
  if (isPlatform()) cols.push('');
  fill(section, h('h1', {}, 'Images'),
    h('table', { id: 'images' }, h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c)))), tbody),
    isPlatform() ? addForms(load) : null);
  return { title: 'Images', node: section };
}
