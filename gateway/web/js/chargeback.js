// A group's chargeback (GET /v1/chargeback) and its monthly budget (/v1/groups/{id}/budget):
// for the group's managers and auditors, and admins. The cost per day is an SVG bar chart
// built node by node (the CSP allows no inline script or style); the breakdown table is by
// VM, user or day; a manager or an admin sets and removes the budget.
import * as api from './api.js';
import { h, svg, clear, fill, when, confirmDialog } from './dom.js';
import { state, showError, announce, groupName, roleIn, fieldErrors, money, currencyDigits, hours } from './ui.js';

// The groups whose chargeback the user may read: every group for an admin, else the ones
// they manage or audit.
export function chargebackGroups() {
  if (!state.me) return [];
  if (state.me.role === 'admin') return [...state.groups.keys()];
  return (state.me.groups || []).filter((m) => m.role === 'manager' || m.role === 'auditor').map((m) => m.group);
}

function thisMonth() {
  return new Date().toISOString().slice(0, 7);
}

// [from, to) of a UTC month 'YYYY-MM'; the current month runs to now (to left out).
function monthWindow(month) {
  const [y, m] = month.split('-').map(Number);
  const from = new Date(Date.UTC(y, m - 1, 1));
  const next = new Date(Date.UTC(y, m, 1));
  return { from: from.toISOString(), to: month === thisMonth() ? null : next.toISOString(), days: (next - from) / 86400000 };
}

function query(gid, month, by) {
  const w = monthWindow(month);
  return `/v1/chargeback?group=${encodeURIComponent(gid)}&from=${encodeURIComponent(w.from)}` +
    (w.to ? `&to=${encodeURIComponent(w.to)}` : '') + `&by=${by}`;
}

// Cost per day of the month: one bar per day with charges, its amount in its <title>.
function costChart(month, rows, currency) {
  const W = 640, H = 170, padL = 8, padR = 8, padB = 24, padT = 10;
  const { days } = monthWindow(month);
  const amounts = new Map(rows.filter((r) => r.amount > 0).map((r) => [r.day, r.amount]));
  const max = Math.max(1, ...amounts.values());
  const bw = (W - padL - padR) / days;
  const parts = [svg('line', { x1: padL, y1: H - padB, x2: W - padR, y2: H - padB, class: 'chart-axis' })];
  for (let i = 0; i < days; i++) {
    const day = `${month}-${String(i + 1).padStart(2, '0')}`;
    const x = padL + i * bw;
    const amount = amounts.get(day);
    if (amount) {
      const bh = Math.max(1, (amount / max) * (H - padB - padT));
      parts.push(svg('rect', { x: x + 1, y: H - padB - bh, width: Math.max(1, bw - 2), height: bh, class: 'chart-bar',
        'data-day': day }, svg('title', {}, document.createTextNode(`${day}: ${money(amount, currency)}`))));
    }
    if (i % 3 === 0) {
      parts.push(svg('text', { x: x + bw / 2, y: H - 8, 'text-anchor': 'middle', class: 'chart-label' },
        document.createTextNode(String(i + 1))));
    }
  }
  return h('figure', { className: 'card', id: 'cost-chart' },
    h('figcaption', {}, `Cost per day, ${month} (UTC)` + (amounts.size ? `; highest day ${money(max, currency)}` : '; no charges')),
    svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', 'aria-label': `Cost per day of ${month}` }, ...parts));
}

// A reservation-based group's own charges (their vm or user is "").
const KIND_LABEL = { reserved: 'Reserved capacity (the group)', beyond: 'Use beyond the reservation (the group)' };

function breakdownTable(by, rows, currency, vmNames) {
  const head = {
    vm: ['VM', 'Owner', 'Template', 'Amount', 'Compute time', 'Disk time'],
    user: ['User', 'VMs', 'Amount', 'Compute time', 'Disk time'],
    day: ['Day (UTC)', 'Amount', 'Compute time', 'Disk time'],
  }[by];
  const tpl = (t) => (state.templates.get(t) || {}).name || t || '—';
  const body = rows.map((r) => {
    const figures = [h('td', {}, money(r.amount, currency)), h('td', {}, hours(r.compute_ms)), h('td', {}, hours(r.disk_ms))];
    // A late charge of a closed month, booked in this window (possibly negative).
    const late = r.kind === 'adjustment'
      ? [' ', h('span', { className: 'badge', title: 'A late charge of a closed month, booked on the day it was found' }, 'adjustment')] : null;
    if (KIND_LABEL[r.kind]) {
      const label = h('th', { scope: 'row' }, h('span', { className: 'badge' }, r.kind), ' ', KIND_LABEL[r.kind] || r.kind);
      return h('tr', { className: 'group-charge', dataset: { kind: r.kind } }, label,
        by === 'vm' ? [h('td', {}, '—'), h('td', {}, '—')] : null, by === 'user' ? h('td', {}, '—') : null, figures);
    }
    if (by === 'vm') {
      const name = vmNames.get(r.vm);
      return h('tr', { dataset: { vm: r.vm } }, h('th', { scope: 'row' }, name ? h('a', { href: '#/vm/' + r.vm }, name) : h('code', {}, r.vm), late),
        h('td', {}, r.owner || '—'), h('td', {}, tpl(r.template)), figures);
    }
    if (by === 'user') {
      return h('tr', {}, h('th', { scope: 'row' }, r.user || '—', late), h('td', {}, r.vms === undefined ? '—' : String(r.vms)), figures);
    }
    return h('tr', {}, h('th', { scope: 'row' }, r.day), figures);
  });
  return h('table', { id: 'chargeback-table' },
    h('caption', { className: 'sr-only' }, `Charges by ${by}`),
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, body.length ? body : h('tr', {}, h('td', { colspan: head.length }, 'No charges.'))));
}

// The VMs' names of the group (the report names VMs by id), disposed ones too.
async function vmNamesOf(gid) {
  const names = new Map();
  const lists = await Promise.all([`/v1/vms?group=${encodeURIComponent(gid)}`,
    `/v1/vms?group=${encodeURIComponent(gid)}&state=DISPOSED`].map((p) => api.all(p, 'vms', 5000).catch(() => [])));
  for (const vm of lists.flat()) names.set(vm.id, vm.name);
  return names;
}

function download(text, filename) {
  const blob = new Blob([text], { type: 'text/csv' });
  const a = h('a', { href: URL.createObjectURL(blob), download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- the budget ---------------------------------------------------------------------------

async function budgetView(gid, manages, currencyHint, rerender) {
  let budget = null;
  try {
    budget = (await api.get(`/v1/groups/${encodeURIComponent(gid)}/budget`)).budget;
  } catch (err) {
    if (err.status !== 404) {
      return h('p', { className: 'muted' }, `Budget not readable: ${err.message}`);
    }
  }
  const currency = (budget && budget.currency) || currencyHint;
  const shown = budget ? h('dl', { className: 'props', id: 'budget-current' },
    h('dt', {}, 'Amount a month'), h('dd', {}, money(budget.amount, currency)),
    h('dt', {}, `Spent in ${budget.month}`), h('dd', {}, h('div', { className: 'bar' },
      h('progress', { id: 'budget-spent', max: budget.amount, value: Math.min(budget.spent, budget.amount),
        'aria-label': 'Spent of the budget' }),
      `${money(budget.spent, currency)} of ${money(budget.amount, currency)} (${Math.round((budget.spent * 100) / budget.amount)}%)`),
    budget.checked ? h('span', { className: 'hint' }, `as of ${when(budget.checked)}`) : null),
    h('dt', {}, 'Thresholds'), h('dd', {}, budget.thresholds.map((t) => t + '%').join(', ') || 'none'),
    h('dt', {}, 'Alerts this month'), h('dd', { id: 'budget-alerts' }, budget.alerts.length
      ? h('ul', {}, budget.alerts.map((a) => h('li', {}, `${a.threshold}% reached ${when(a.at)} (spent ${money(a.spent, currency)})`)))
      : 'none reached'),
    h('dt', {}, 'Hard stop'), h('dd', {}, budget.hard_stop ? 'yes: new VM requests are refused once it is spent' : 'no'),
    h('dt', {}, 'New VM requests'), h('dd', { id: 'budget-blocked', className: budget.blocked ? 'fault' : '' },
      budget.blocked ? 'blocked (the budget is spent)' : 'allowed'),
    h('dt', {}, 'Changed'), h('dd', {}, `${when(budget.updated)}${budget.updated_by ? ' by ' + budget.updated_by : ''}`))
    : h('p', { id: 'budget-current' }, 'No budget.');
  if (!manages) return h('div', { className: 'card' }, shown);

  const digits = currency ? currencyDigits(currency) : 0;
  const fe = fieldErrors('budget');
  const amount = h('input', { type: 'number', min: 0, step: digits ? 1 / 10 ** digits : 1, required: true,
    value: budget ? budget.amount / 10 ** digits : '' });
  const thresholds = h('input', { value: budget ? budget.thresholds.join(', ') : '80, 100', autocomplete: 'off' });
  const hardStop = h('input', { type: 'checkbox', checked: budget ? budget.hard_stop : false });
  const form = h('form', { className: 'card', novalidate: true, 'aria-labelledby': 'budget-title' },
    shown,
    h('h3', { id: 'budget-title' }, budget ? 'Change the budget' : 'Set a budget'),
    h('div', { className: 'filters' },
      fe.field('amount', currency ? `Amount a month (${currency})` : 'Amount a month (minor units)', amount),
      fe.field('thresholds', 'Thresholds (percent, comma separated)', thresholds)),
    fe.field('hard_stop', 'Hard stop: refuse new VM requests once the month\'s budget is spent', hardStop),
    h('div', { className: 'actions' },
      h('button', { type: 'submit', className: 'primary' }, 'Save budget'),
      budget ? h('button', { type: 'button', className: 'danger', onclick: async () => {
        showError(null);
        if (!(await confirmDialog({ title: `Remove the budget of ${groupName(gid)}?`, danger: true, confirm: 'Remove',
          message: 'No alerts and no hard stop from now on.' }))) return;
        try {
          await api.del(`/v1/groups/${encodeURIComponent(gid)}/budget`);
          announce('Budget removed');
          await rerender();
        } catch (err) { showError(err); }
      } }, 'Remove budget') : null));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError(null);
    fe.reset();
    // The server decides what is valid: a figure that is not a number goes as typed.
    const n = Number(amount.value);
    const body = {
      amount: amount.value.trim() !== '' && Number.isFinite(n) ? Math.round(n * 10 ** digits) : amount.value,
      thresholds: thresholds.value.split(',').map((t) => t.trim()).filter(Boolean)
        .map((t) => (/^-?\d+$/.test(t) ? Number(t) : t)),
      hard_stop: hardStop.checked,
    };
    if (budget) body.version = budget.version;
    try {
      await api.put(`/v1/groups/${encodeURIComponent(gid)}/budget`, body);
      announce('Budget saved');
      await rerender();
    } catch (err) {
      if (!fe.show(err)) showError(err);
    }
  });
  return form;
}

// ---- the screen ---------------------------------------------------------------------------

export async function chargebackScreen(id) {
  const readable = chargebackGroups();
  if (!id) {
    return {
      title: 'Chargeback',
      node: h('section', {}, h('h1', {}, 'Chargeback'),
        readable.length ? h('ul', {}, readable.map((g) => h('li', {}, h('a', { href: '#/chargeback/' + encodeURIComponent(g) }, groupName(g)))))
          : h('p', {}, 'Chargeback is for the managers and auditors of a group, and admins.')),
    };
  }
  const gid = id;
  const manages = state.me.role === 'admin' || roleIn(gid) === 'manager';
  const monthInput = h('input', { id: 'cb-month', type: 'month', value: thisMonth(), max: thisMonth() });
  const bySel = h('select', { id: 'cb-by' }, [['vm', 'VM'], ['user', 'User'], ['day', 'Day']]
    .map(([v, l]) => h('option', { value: v }, l)));
  const summary = h('div', { 'aria-live': 'polite' });
  const chart = h('div', {});
  const table = h('div', {});
  const budget = h('div', { id: 'budget' });
  let vmNames = new Map();
  let serial = 0;

  async function load() {
    const mine = ++serial;
    const month = monthInput.value || thisMonth();
    const by = bySel.value;
    const [daily, rows] = await Promise.all([api.get(query(gid, month, 'day')),
      by === 'day' ? null : api.get(query(gid, month, by))]);
    const report = rows || daily;
    if (by === 'vm') vmNames = await vmNamesOf(gid);
    if (mine !== serial) return;
    fill(summary, h('dl', { className: 'props card', id: 'cb-summary' },
      h('dt', {}, 'Total'), h('dd', { id: 'cb-total', dataset: { amount: String(daily.total) } }, money(daily.total, daily.currency)),
      h('dt', {}, 'Currency'), h('dd', {}, daily.currency || 'no rate card in force'),
      h('dt', {}, 'Charging model'), h('dd', { id: 'cb-model' }, daily.charging_model === 'reservation'
        ? 'reservation: the group pays for what it reserved, and its VMs\' use beyond that'
        : 'allocation: the group pays for what its VMs were billed'),
      h('dt', {}, 'Window'), h('dd', {}, `${when(daily.from)} – ${when(daily.to)}`)));
    fill(chart, costChart(month, daily.rows, daily.currency));
    fill(table, breakdownTable(by, report.rows, report.currency, vmNames),
      h('p', { className: 'muted' }, `Total ${money(report.total, report.currency)}`));
    return daily.currency;
  }

  async function loadBudget(currency) {
    fill(budget, await budgetView(gid, manages, currency, () => loadBudget(currency)));
  }

  async function exportCsv() {
    showError(null);
    const month = monthInput.value || thisMonth();
    try {
      const text = await api.csv(query(gid, month, bySel.value));
      download(text, `berth-chargeback-${groupName(gid)}-${month}-${bySel.value}.csv`);
      announce(`Exported the chargeback of ${groupName(gid)} by ${bySel.value} as CSV`);
    } catch (err) { showError(err); }
  }

  const reload = () => load().catch(showError);
  monthInput.addEventListener('change', reload);
  bySel.addEventListener('change', reload);
  const currency = await load();
  await loadBudget(currency);
  // A threshold reached, or the budget set or removed elsewhere, shows at once.
  state.onEvent = (ev) => {
    if (ev.group === gid && ev.type && ev.type.startsWith('budget.')) loadBudget(currency).catch(showError);
  };
  return {
    title: 'Chargeback',
    node: h('section', {}, h('h1', {}, `Chargeback of ${groupName(gid)}`),
      h('div', { className: 'filters' },
        h('div', {}, h('label', { for: 'cb-month' }, 'Month'), monthInput),
        h('div', {}, h('label', { for: 'cb-by' }, 'Breakdown by'), bySel),
        h('button', { type: 'button', onclick: exportCsv }, 'Export CSV')),
      summary, chart,
      h('h2', {}, 'Breakdown'), table,
      h('h2', {}, 'Budget'), budget),
  };
}
