// Building the page: elements are made with h() and text nodes, never from HTML strings, so
// nothing a user typed (a VM name, a reason) can become markup or script.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'className') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

// An SVG element (attributes set as they are: the CSP forbids inline style, not these).
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) if (c) el.append(c);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Replace el's content with children (h()'s rules: null and false are left out, arrays
// flattened; the DOM's own append would print them as text).
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function badge(text) {
  return h('span', { className: 'badge ' + (text || '') }, text || '—');
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

export function mb(n) {
  return n >= 1024 ? (n / 1024).toFixed(n % 1024 ? 1 : 0) + ' GB' : n + ' MB';
}

// A labelled bar of used out of total (a <meter>, which screen readers announce).
export function usageBar(label, used, total, unit = '') {
  const id = 'm' + Math.random().toString(36).slice(2);
  return h('div', { className: 'bar' },
    h('span', { id }, label),
    h('meter', { min: 0, max: total || 1, value: Math.min(used, total || used), 'aria-labelledby': id,
      high: (total || 1) * 0.85, optimum: 0 }),
    h('span', {}, `${used}${unit} of ${total}${unit}`));
}

// A modal confirmation (the native <dialog>: focus moves into it, Escape cancels, and focus
// returns to what opened it). fields: optional inputs [{name, label, type, required, value}].
// Resolves to the fields' values, or null when cancelled.
export function confirmDialog({ title, message, confirm = 'Confirm', danger = false, fields = [] }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const inputs = {};
    const titleId = 'dlg' + Math.random().toString(36).slice(2);
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, title),
      message ? h('p', {}, message) : null,
      fields.map((f) => {
        const id = titleId + '-' + f.name;
        const input = f.type === 'textarea'
          ? h('textarea', { id, name: f.name, required: f.required, rows: 3 })
          : h('input', { id, name: f.name, type: f.type || 'text', required: f.required,
            min: f.min, value: f.value });
        inputs[f.name] = input;
        return h('div', { className: 'field' }, h('label', { for: id }, f.label), input);
      }),
      h('div', { className: 'actions' },
        h('button', { type: 'submit', value: 'ok', className: danger ? 'danger' : 'primary' }, confirm),
        h('button', { type: 'button', value: 'cancel', onclick: () => dlg.close('cancel') }, 'Cancel')));
    const dlg = h('dialog', { 'aria-labelledby': titleId }, form);
    dlg.addEventListener('close', () => {
      const ok = dlg.returnValue === 'ok';
      const values = {};
      for (const [k, el] of Object.entries(inputs)) values[k] = el.value;
      dlg.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(ok ? values : null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}
