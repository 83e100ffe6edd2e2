// What every screen shares: the signed-in user and the names the portal knows (state), the
// messages above <main> (errors, notices, screen reader announcements), the user's roles, and
// the server's field errors shown next to their fields.
import { h, clear, fill } from './dom.js';

export const state = {
  me: null,            // {username, role, groups: [{group, role}]} (GET /v1/users/{name})
  groups: new Map(),   // group id -> name
  templates: new Map(),// template id -> template
  events: null,        // the EventSource
  onEvent: null,       // the current screen's event handler
};

const errorBox = document.getElementById('error');
const status = document.getElementById('status');
const notice = document.getElementById('notice');

export function showError(err) {
  clear(errorBox);
  if (!err) { errorBox.hidden = true; return; }
  errorBox.append(h('strong', {}, 'Error: '), err.message || String(err));
  if (err.requestId) errorBox.append(' (request id ', h('code', {}, err.requestId), ')');
  errorBox.hidden = false;
}

// A message that stays on screen until the next navigation (with an optional link), for an
// outcome the user has to act on or follow up, not just hear once.
export function showNotice(...children) {
  fill(notice, ...children);
  notice.hidden = children.length === 0;
}

export function announce(text) {
  status.textContent = '';
  // A new text node after the clear: screen readers announce each message, even a repeat.
  setTimeout(() => { status.textContent = text; }, 30);
}

export function isPlatform() {
  return state.me && (state.me.role === 'admin' || state.me.role === 'operator');
}

export function groupRoles() {
  return (state.me && state.me.groups) || [];
}

export function managesAny() {
  return state.me.role === 'admin' || groupRoles().some((m) => m.role === 'manager');
}

export function readsAudit() {
  return state.me.role === 'admin' || groupRoles().some((m) => m.role === 'manager' || m.role === 'auditor');
}

// The user's role in group id ('' when none).
export function roleIn(id) {
  const m = groupRoles().find((x) => x.group === id);
  return m ? m.role : '';
}

export function groupName(id) {
  return (id && state.groups.get(id)) || id || '—';
}

// A form's fields with the server's refusals next to them: field(name, label, control, hint)
// gives the labelled field (ids prefix-name, prefix-name-error); show(err) puts an error that
// names one of them next to it (and focuses it) and answers true, or answers false.
export function fieldErrors(prefix) {
  const errors = {};
  const controls = {};
  return {
    field(name, label, control, hint) {
      const id = `${prefix}-${name}`;
      control.id = id;
      if (!control.name) control.name = name;
      controls[name] = control;
      errors[name] = h('div', { className: 'field-error', id: id + '-error' });
      const hintEl = hint ? h('div', { className: 'hint', id: id + '-hint' }, hint) : null;
      control.setAttribute('aria-describedby', [hintEl ? id + '-hint' : '', id + '-error'].join(' ').trim());
      return h('div', { className: 'field' }, h('label', { for: id }, label), control, hintEl, errors[name]);
    },
    reset() {
      for (const [name, el] of Object.entries(errors)) {
        el.textContent = '';
        controls[name].removeAttribute('aria-invalid');
      }
    },
    show(err) {
      const f = err.details && err.details.field;
      if (!f || !errors[f]) return false;
      errors[f].textContent = err.message + (err.requestId ? ` (request id ${err.requestId})` : '');
      controls[f].setAttribute('aria-invalid', 'true');
      const folded = controls[f].closest('details');
      if (folded) folded.open = true;
      controls[f].focus();
      return true;
    },
  };
}

// Money in minor units of an ISO 4217 currency, with the currency's own decimals ("" when no
// rate card was in force: the bare number).
export function money(minor, currency) {
  if (!currency) return `${minor} (no rate card)`;
  const digits = currencyDigits(currency);
  return new Intl.NumberFormat(undefined, { style: 'currency', currency, minimumFractionDigits: digits,
    maximumFractionDigits: digits }).format(minor / 10 ** digits);
}

export function currencyDigits(currency) {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

// Billed time: hours with two decimals, or minutes under an hour.
export function hours(ms) {
  if (ms > 0 && ms < 3600000) return (ms / 60000).toFixed(1) + ' min';
  return (ms / 3600000).toFixed(2) + ' h';
}
