// The portal's stories in a real browser (Debian's chromium, headless, driven by
// playwright-core), each in its own browser context with a screenshot per step under BERTH_OUT:
//   1. a member signs in, requests a VM from the catalog (first with a name the server refuses,
//      shown next to the field), watches it reach ACTIVE live without a reload, stops it after
//      confirming, starts it, extends its lease, disposes of it;
//   2. a request that needs approval: the member submits, an admin approves in the inbox, the
//      member's page updates without a reload;
//   3. an admin puts a host in maintenance and exports the all-VMs report as CSV;
//   4. a user of another group sees none of the first group's VMs;
//   6. a provisioning on the slow host (host-3, the only one out of maintenance then) is
//      aborted from VM detail and ends ABORTED, naming who aborted it; an admin sets eng's
//      lease policy, and extending big1 beyond it is sent for approval (a link to the request);
//      an admin makes cat a manager of eng, who sets its webhook (the secret is not shown back)
//      and asks for a reservation;
//   7. with a rate card in force, eng's manager reads its chargeback (the total the API's, a bar
//      per day with charges, by VM, user and day, as CSV) and sets a budget (a bad amount
//      refused next to its field; its thresholds reached, shown) then removes it; the member
//      sees what big1 cost so far, adds an SSH key (a bad line refused) and requests a VM with
//      it; an admin imports an image (a file outside the import directory refused next to its
//      field first) and deletes it, and is refused the deletion of one a
//      template uses (409 shown), then stages that one (its staged image ends READY beside
//      it), and uploads one from this computer (one with a backing file refused next to its
//      field first); a VM of the reservation-based group lab shows 0 and why,
//      and lab's chargeback labels the group's own reserved/beyond rows;
//   9. a member describes a custom build: the scheduler's verdict and suggestions show as
//      the fields change (RAM below the need, an application with no build for the OS), a
//      suggestion's Apply fixes the field, and the build reaches ACTIVE;
//   5. the CSP header holds (an injected inline script does not run), a state-changing call
//      with the session cookie but without the anti-CSRF header is refused, sign-out revokes
//      the session (the old cookie gets 401); and no console error happens anywhere.
//
// Run by run_browser.py, which starts the platform: node portal.test.mjs with BERTH_URL,
// BERTH_USER/BERTH_PASSWORD (a member of group eng), BERTH_OTHER (a user of another group,
// same password), BERTH_MANAGER (a user in no group, same password), host-3 in maintenance
// with slow libvirt commands, BERTH_ADMIN_USER/BERTH_ADMIN_PASSWORD and BERTH_OUT in the
// environment.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs/promises';
import { execFileSync } from 'node:child_process';

const URL = process.env.BERTH_URL;
const USER = process.env.BERTH_USER;
const PASSWORD = process.env.BERTH_PASSWORD;
const OTHER = process.env.BERTH_OTHER;
const MANAGER = process.env.BERTH_MANAGER;
const RESERVED_USER = process.env.BERTH_RESERVED_USER;
const ADMIN = process.env.BERTH_ADMIN_USER;
const ADMIN_PASSWORD = process.env.BERTH_ADMIN_PASSWORD;
const OUT = process.env.BERTH_OUT || '.';
const IMPORT_DIR = process.env.BERTH_IMPORT_DIR;
const TIMEOUT = 90_000;

const browser = await chromium.launch({
  executablePath: process.env.BERTH_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
let step = 'start';
// Refusals a step provokes on purpose (the browser logs each as a failed load).
let expectedStatus = null;
// Every API call the pages made and its answer, for run_browser.py to hold to
// docs/openapi.yaml (the live event stream left out: it does not end).
const apiCalls = [];
const recording = [];

function record(response) {
  const request = response.request();
  const url = new globalThis.URL(request.url());
  if (!url.pathname.startsWith('/v1/') || url.pathname === '/v1/events') return;
  recording.push((async () => {
    let body = request.postData();
    // A sign-in's password is not written out (its length kept, for the schema).
    if (url.pathname === '/v1/auth/tokens' && body) {
      try {
        const b = JSON.parse(body);
        if (typeof b.password === 'string') b.password = 'x'.repeat(b.password.length);
        body = JSON.stringify(b);
      } catch { /* sent as it was */ }
    }
    apiCalls.push({ step, method: request.method(), path: url.pathname + url.search,
      headers: await request.allHeaders(), body, status: response.status(),
      response_headers: await response.allHeaders(), response_body: (await response.body()).toString('utf8') });
  })().catch(() => { /* the page went away before its answer was read */ }));
}

// The page opened last: on a failure, its screenshot and its error message tell what it showed.
let lastPage = null;

async function open(story) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  lastPage = page;
  page.setDefaultTimeout(TIMEOUT);
  // The refusals answered while one was expected: the browser's console line for such a load
  // may come after the step has moved on (the page showed the answer first).
  const refused = new Set();
  page.on('response', (r) => {
    if (expectedStatus && r.status() === expectedStatus) refused.add(`${r.status()} ${r.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (expectedStatus && m.text().includes(`status of ${expectedStatus}`)) return;
    const failed = /status of (\d+)/.exec(m.text());
    if (failed && refused.has(`${failed[1]} ${m.location().url}`)) return;
    problems.push(`console error during "${step}": ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error during "${step}": ${e.message}`));
  page.on('response', record);
  let n = 0;
  const shot = (name) => page.screenshot({ path: path.join(OUT, `${story}-${++n}-${name}.png`), fullPage: true });
  return { context, page, shot };
}

async function signIn(page, user, password) {
  const response = await page.goto(URL + '/');
  assert.equal(response.status(), 200);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Catalog' }).waitFor();
  return response;
}

const vmRow = (page, name) =>
  page.locator('tbody tr', { has: page.getByRole('link', { name, exact: true }) });

async function story1() {
  const { context, page, shot } = await open('story1');
  step = 'story 1: sign in';
  const response = await signIn(page, USER, PASSWORD);
  const csp = response.headers()['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'(;|$)/, `CSP: ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const session = (await context.cookies()).find((c) => c.name === 'berth_session');
  assert.ok(session, 'berth_session cookie set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('berth_session')), false,
    'the page cannot read the session cookie');
  await shot('catalog');

  step = 'story 1: a server validation message next to its field';
  await page.getByRole('link', { name: 'Request small' }).click();
  await page.getByRole('heading', { name: 'Request a VM' }).waitFor();
  await page.locator('#quota-left').getByText(/left of|no quota limit/i).first().waitFor();

  step = "story 1: the group's capacity next to the form";
  const gid = await page.getByLabel('Group', { exact: true }).inputValue();
  const cap = await page.evaluate(async (g) => (await (await fetch(`/v1/groups/${g}/capacity`)).json()).capacity, gid);
  assert.ok(cap.free.vcpus > 0, JSON.stringify(cap));
  await page.locator('#cap-free').filter({ hasText: `${cap.free.vcpus} vCPU` }).waitFor();
  await page.locator('#cap-free').filter({ hasText: `(${cap.hosts} host` }).waitFor();
  await page.locator('#cap-largest').filter({ hasText: `${cap.largest.vcpus} vCPU` }).waitFor();
  await page.locator('#cap-usable').filter({ hasText: `${cap.usable.vcpus} vCPU` }).waitFor();
  const name = page.getByLabel('Name', { exact: true });
  await name.fill('Bad Name!');
  expectedStatus = 400;
  await page.getByRole('button', { name: 'Submit request' }).click();
  await page.locator('#req-name-error').filter({ hasText: /hostname/ }).waitFor();
  expectedStatus = null;
  assert.equal(await name.getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'req-name');
  await shot('request-invalid');

  step = 'story 1: request a VM and see it reach ACTIVE live';
  await name.fill('web1');
  const posted = page.waitForRequest((r) => r.method() === 'POST' && new globalThis.URL(r.url()).pathname === '/v1/requests');
  await page.getByRole('button', { name: 'Submit request' }).click();
  // Sent with a key of its own, so that submitting it again after a lost answer makes it once.
  assert.match((await posted).headers()['idempotency-key'] || '', /^[0-9a-f-]{36}$/);
  await page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await page.evaluate(() => { window.berthNoReload = 1; }); // a reload would lose it
  const row = vmRow(page, 'web1');
  await row.locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
  await row.locator('.badge', { hasText: /^RUNNING$/ }).waitFor();
  await shot('vm-active');

  step = 'story 1: stop it, after a confirmation';
  await row.getByRole('button', { name: 'Stop web1' }).click();
  const dialog = page.getByRole('dialog', { name: 'Stop web1?' });
  await dialog.waitFor();
  await shot('confirm-stop');
  await dialog.getByRole('button', { name: 'Stop' }).click();
  await row.locator('.badge', { hasText: /^STOPPED$/ }).waitFor();
  await shot('vm-stopped');

  step = 'story 1: start it';
  await row.getByRole('button', { name: 'Start web1' }).click();
  await row.locator('.badge', { hasText: /^RUNNING$/ }).waitFor();

  step = 'story 1: extend its lease';
  const expiry = row.locator('td').nth(2);
  const before = await expiry.textContent();
  await row.getByRole('button', { name: 'Extend lease web1' }).click();
  const extend = page.getByRole('dialog', { name: 'Extend the lease of web1' });
  await extend.getByLabel('Days to add').fill('3');
  await extend.getByRole('button', { name: 'Extend' }).click();
  await page.waitForFunction(([cell, old]) => {
    const el = [...document.querySelectorAll('tbody tr')].find((r) => r.querySelector('a')?.textContent === cell);
    return el && el.querySelectorAll('td')[2].textContent !== old;
  }, ['web1', before]);
  await shot('lease-extended');

  step = 'story 1: VM detail';
  await row.getByRole('link', { name: 'web1' }).click();
  await page.getByRole('heading', { name: 'VM web1' }).waitFor();
  await page.getByText(/extended 1 time/).waitFor();
  await shot('vm-detail');

  step = 'story 1: dispose of it, after a confirmation';
  await page.getByRole('link', { name: 'My VMs' }).click();
  await page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await vmRow(page, 'web1').getByRole('button', { name: 'Dispose web1' }).click();
  const dispose = page.getByRole('dialog', { name: 'Dispose web1?' });
  await dispose.getByRole('button', { name: 'Dispose' }).click();
  await vmRow(page, 'web1').waitFor({ state: 'detached' }); // disposed VMs are filtered out
  await page.getByLabel('State').selectOption('DISPOSED');
  await vmRow(page, 'web1').locator('.badge', { hasText: /^DISPOSED$/ }).waitFor();
  await shot('vm-disposed');
  assert.equal(await page.evaluate(() => window.berthNoReload), 1, 'updated without a reload');
  await context.close();
}

async function story2() {
  step = 'story 2: the member submits a request that needs approval';
  const member = await open('story2-member');
  await signIn(member.page, USER, PASSWORD);
  await member.page.getByRole('link', { name: 'Request large' }).click();
  await member.page.getByLabel('Name', { exact: true }).fill('big1');
  await member.page.getByRole('button', { name: 'Submit request' }).click();
  await member.page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await member.page.getByRole('link', { name: 'My requests' }).click();
  const req = member.page.locator('tbody tr', { hasText: 'big1' });
  await req.locator('.badge', { hasText: /^PENDING_APPROVAL$/ }).waitFor();
  await member.page.evaluate(() => { window.berthNoReload = 1; });
  await member.shot('pending');

  step = 'story 2: an admin approves it in the inbox';
  const admin = await open('story2-admin');
  await signIn(admin.page, ADMIN, ADMIN_PASSWORD);
  await admin.page.getByRole('link', { name: 'Approvals' }).click();
  await admin.page.getByRole('heading', { name: 'Approvals' }).waitFor();
  await admin.shot('inbox');
  await admin.page.getByRole('button', { name: 'Approve big1' }).click();
  await admin.page.getByText('Nothing waits for a decision.').waitFor();
  await admin.shot('approved');

  step = "story 2: the member's page updates without a reload";
  await req.locator('.badge', { hasText: /^(APPROVED|FULFILLED|PROVISIONING|DONE|COMPLETED)$/ }).waitFor();
  await req.getByText(/by admin/).waitFor();
  assert.equal(await member.page.evaluate(() => window.berthNoReload), 1, 'updated without a reload');
  await member.shot('member-sees-approval');
  await member.context.close();
  await admin.context.close();
}

async function story3() {
  step = 'story 3: an admin puts a host in maintenance';
  const { context, page, shot } = await open('story3');
  await signIn(page, ADMIN, ADMIN_PASSWORD);
  await page.getByRole('link', { name: 'Hosts' }).click();
  const toggle = page.getByRole('button', { name: 'Maintenance of host-1' });
  await toggle.waitFor();
  assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
  await toggle.click();
  await page.locator('button[aria-label="Maintenance of host-1"][aria-pressed="true"]').waitFor();
  await shot('maintenance');
  await page.getByRole('button', { name: 'Maintenance of host-1' }).click();
  await page.locator('button[aria-label="Maintenance of host-1"][aria-pressed="false"]').waitFor();

  step = 'story 3: users and a group';
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('heading', { name: 'Users' }).waitFor();
  await page.getByRole('button', { name: `Disable ${OTHER}` }).waitFor();
  await page.getByRole('link', { name: 'Groups' }).click();
  await page.getByRole('link', { name: 'eng' }).click();
  await page.getByRole('heading', { name: 'Group eng' }).waitFor();
  assert.equal(await page.getByLabel(`Role of ${USER}`).inputValue(), 'member');
  await shot('group');

  step = 'story 3: usage per day, for everyone';
  await page.getByRole('link', { name: 'Usage' }).click();
  await page.getByRole('heading', { name: 'Usage, last 14 days' }).waitFor();
  await page.getByLabel('Scope').selectOption('all');
  await page.getByRole('img', { name: 'VM-hours per day' }).waitFor();
  await page.getByText('The numbers').click();
  assert.equal(await page.locator('details tbody tr').count(), 14);
  await shot('usage');

  step = 'story 3: the all-VMs report as CSV';
  await page.getByRole('link', { name: 'All VMs' }).click();
  await page.getByRole('heading', { name: 'All VMs' }).waitFor();
  await page.getByLabel('Owner').fill(USER);
  await vmRow(page, 'big1').waitFor();
  await shot('report');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Export CSV' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'berth-vms.csv');
  const file = path.join(OUT, 'story3-berth-vms.csv');
  await download.saveAs(file);
  const lines = (await fs.readFile(file, 'utf8')).trim().split(/\r\n/);
  assert.equal(lines[0], '"Name","State","Power","Lease expires","Owner","Group","Host"');
  assert.ok(lines.some((l) => l.startsWith('"big1",') && l.includes(`"${USER}","eng"`)), lines.join('\n'));
  assert.ok(lines.slice(1).every((l) => l.includes(`"${USER}"`)), 'only the filtered owner');
  await context.close();
}

async function story4() {
  step = "story 4: a user of another group sees none of the first group's VMs";
  const { context, page, shot } = await open('story4');
  await signIn(page, OTHER, PASSWORD);
  step = 'story 4: onboarding, a new group asked for (a bad name refused next to its field)';
  await page.getByRole('link', { name: 'Groups' }).click();
  await page.getByRole('heading', { name: 'Ask for a new group' }).waitFor();
  await page.getByLabel('Justification').fill('a team of our own');
  await page.getByLabel('Group name').fill('x'.repeat(300));
  expectedStatus = 400;
  await page.getByRole('button', { name: 'Ask' }).click();
  await page.locator('#onb-name-error').filter({ hasText: /name/ }).waitFor();
  expectedStatus = null;
  await page.getByLabel('Group name').fill('ops-two');
  await page.getByRole('button', { name: 'Ask' }).click();
  await page.locator('#status').filter({ hasText: 'Asked for group ops-two' }).waitFor({ state: 'attached' });

  await page.getByRole('link', { name: 'My VMs' }).click();
  await page.getByText('0 VMs shown').waitFor();
  const seen = await page.evaluate(async () => (await (await fetch('/v1/vms')).json()).vms.length);
  assert.equal(seen, 0, 'the API lists none of them either');
  assert.equal(await page.getByRole('link', { name: 'All VMs' }).count(), 0);
  await shot('no-vms');
  await context.close();
}

// The Hosts screen's maintenance toggle of host, set to on (true) or off.
async function maintenance(page, host, on) {
  const toggle = page.locator(`button[aria-label="Maintenance of ${host}"]`);
  if ((await toggle.getAttribute('aria-pressed')) !== String(on)) await toggle.click();
  await page.locator(`button[aria-label="Maintenance of ${host}"][aria-pressed="${on}"]`).waitFor();
}

async function story6() {
  step = 'story 6: only the slow host takes placements';
  const admin = await open('story6-admin');
  await signIn(admin.page, ADMIN, ADMIN_PASSWORD);
  await admin.page.getByRole('link', { name: 'Hosts' }).click();
  await admin.page.getByRole('button', { name: 'Maintenance of host-3' }).waitFor();
  await maintenance(admin.page, 'host-1', true);
  await maintenance(admin.page, 'host-2', true);
  await maintenance(admin.page, 'host-3', false);

  step = 'story 6: the member aborts a running provisioning from VM detail';
  const member = await open('story6-member');
  await signIn(member.page, USER, PASSWORD);
  await member.page.getByRole('link', { name: 'Request small' }).click();
  await member.page.getByLabel('Name', { exact: true }).fill('slow1');
  await member.page.getByRole('button', { name: 'Submit request' }).click();
  await member.page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await vmRow(member.page, 'slow1').getByRole('link', { name: 'slow1' }).click();
  await member.page.getByRole('heading', { name: 'VM slow1' }).waitFor();
  const task = member.page.locator('#task-state');
  await task.locator('.badge', { hasText: /^RUNNING$/ }).waitFor();
  await member.shot('provisioning');
  await member.page.getByRole('button', { name: 'Abort', exact: true }).click();
  const confirm = member.page.getByRole('dialog', { name: 'Abort the provision of slow1?' });
  await confirm.getByRole('button', { name: 'Abort' }).click();
  await task.locator('.badge', { hasText: /^ABORTED$/ }).waitFor();
  await member.page.locator('#task-aborted-by').filter({ hasText: `Aborted by ${USER}` }).waitFor();
  assert.equal(await member.page.getByRole('button', { name: 'Abort', exact: true }).count(), 0,
    'no Abort for a finished task');
  await member.shot('aborted');

  step = 'story 6: the hosts as they were';
  await maintenance(admin.page, 'host-3', true);
  await maintenance(admin.page, 'host-1', false);
  await maintenance(admin.page, 'host-2', false);

  step = "story 6: an admin sets eng's lease policy";
  await admin.page.getByRole('link', { name: 'Groups' }).click();
  await admin.page.getByRole('link', { name: 'eng' }).click();
  await admin.page.getByRole('heading', { name: 'Group eng' }).waitFor();
  await admin.page.getByLabel('Longest lease (days after creation)').fill('1');
  await admin.page.getByRole('button', { name: 'Save policy' }).click();
  await admin.page.locator('#group-policy dd').first().filter({ hasText: /^1$/ }).waitFor();

  step = 'story 6: an extension beyond the policy is sent for approval';
  await member.page.getByRole('link', { name: 'My VMs' }).click();
  await member.page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await vmRow(member.page, 'big1').getByRole('button', { name: 'Extend lease big1' }).click();
  const extend = member.page.getByRole('dialog', { name: 'Extend the lease of big1' });
  await extend.getByLabel('Days to add').fill('5');
  await extend.getByRole('button', { name: 'Extend' }).click();
  await member.page.locator('#notice').filter({ hasText: /big1 .*(sent for approval|request APPROVED)/ }).waitFor();
  await member.shot('extension-asked');
  await member.page.locator('#notice').getByRole('link', { name: 'See the request' }).click();
  await member.page.getByRole('heading', { name: 'My requests' }).waitFor();
  await member.page.locator('tr[aria-current="true"]').filter({ hasText: 'extension' }).waitFor();
  await member.context.close();

  step = 'story 6: an admin makes cat a manager of eng';
  await admin.page.getByLabel('User', { exact: true }).fill(MANAGER);
  await admin.page.getByLabel('Role', { exact: true }).selectOption('manager');
  await admin.page.getByRole('button', { name: 'Add member' }).click();
  await admin.page.getByLabel(`Role of ${MANAGER}`).waitFor();
  assert.equal(await admin.page.getByLabel(`Role of ${MANAGER}`).inputValue(), 'manager');
  await admin.context.close();

  step = "story 6: the manager sets the group's webhook";
  const manager = await open('story6-manager');
  await signIn(manager.page, MANAGER, PASSWORD);
  await manager.page.getByRole('link', { name: 'Groups' }).click();
  await manager.page.getByRole('link', { name: 'eng' }).click();
  await manager.page.getByRole('heading', { name: 'Group eng' }).waitFor();
  await manager.page.locator('#group-capacity').getByText('Free on the hosts').waitFor();
  await manager.page.locator('#webhook-current').getByText('none set').waitFor();
  const hookUrl = 'http://127.0.0.1:9/berth-notices';
  const secret = 'portal-webhook-secret-0123';
  await manager.page.getByLabel('Webhook URL').fill(hookUrl);
  await manager.page.getByLabel('Signing secret').fill(secret);
  await manager.page.getByRole('button', { name: 'Save webhook' }).click();
  await manager.page.locator('#webhook-current').getByText(hookUrl).waitFor();
  await manager.page.locator('#webhook-current').getByText('set (not shown)').waitFor();
  assert.equal(await manager.page.getByLabel('Signing secret').inputValue(), '');
  assert.ok(!(await manager.page.content()).includes(secret), 'the secret is not shown back');
  await manager.shot('webhook');

  step = 'story 6: the manager asks for a reservation';
  await manager.page.locator('#resv-vcpus').fill('2');
  await manager.page.locator('#resv-ram_mb').fill('2048');
  await manager.page.getByRole('button', { name: 'Ask for the reservation' }).click();
  await manager.page.locator('#notice').filter({ hasText: /Reservation for eng: (sent for approval|APPROVED)/ }).waitFor();
  await manager.context.close();
}

// A call to the API from the page, as the portal makes it (the anti-CSRF header included).
function apiCall(page, method, url, body) {
  return page.evaluate(async ([m, u, b]) => {
    const csrf = decodeURIComponent((document.cookie.match(/(?:^|;\s*)berth_csrf=([^;]*)/) || [])[1] || '');
    const r = await fetch(u, { method: m, headers: { Accept: 'application/json', 'Content-Type': 'application/json',
      'X-CSRF-Token': csrf }, body: b === undefined ? undefined : JSON.stringify(b) });
    return { status: r.status, body: await r.json() };
  }, [method, url, body]);
}

async function story7() {
  step = "story 7: eng's manager opens its chargeback (a rate card is in force, big1 runs)";
  const manager = await open('story7-manager');
  const { page } = manager;
  await signIn(page, MANAGER, PASSWORD);
  const daily = page.waitForResponse((r) => r.url().includes('/v1/chargeback?') && r.url().includes('by=day'));
  await page.getByRole('link', { name: 'Chargeback', exact: true }).click();
  await page.getByRole('heading', { name: 'Chargeback', exact: true }).waitFor();
  expectedStatus = 404; // GET /v1/groups/{id}/budget: eng has no budget yet
  await page.getByRole('link', { name: 'eng', exact: true }).click();
  await page.getByRole('heading', { name: 'Chargeback of eng' }).waitFor();
  await page.locator('#budget-current').getByText('No budget.').waitFor();
  expectedStatus = null;
  const report = await (await daily).json();
  assert.equal(report.currency, 'EUR');
  assert.equal(report.charging_model, 'allocation');
  assert.ok(report.total > 0, `eng's charges: ${JSON.stringify(report)}`);
  const total = page.locator('#cb-total');
  assert.equal(await total.getAttribute('data-amount'), String(report.total), 'the total shown is the API\'s');
  assert.match(await total.textContent(), /€|EUR/);
  const charged = report.rows.filter((r) => r.amount > 0).map((r) => r.day).sort();
  assert.ok(charged.length >= 1);
  const bars = await page.locator('#cost-chart rect.chart-bar').evaluateAll((els) => els.map((e) => e.dataset.day).sort());
  assert.deepEqual(bars, charged, 'one bar per day with charges');
  // Charges only grow: the API asked now reports at least what the page shows.
  const gid = report.group;
  const again = await apiCall(page, 'GET', `/v1/chargeback?group=${gid}&by=day`);
  assert.ok(again.body.total >= report.total, JSON.stringify(again.body));

  step = 'story 7: the breakdown by VM, user and day';
  const table = page.locator('#chargeback-table');
  const big = table.locator('tbody tr', { has: page.getByRole('link', { name: 'big1', exact: true }) });
  await big.waitFor();
  await big.getByText(USER, { exact: true }).waitFor();
  await big.getByText('large', { exact: true }).waitFor();
  await manager.shot('chargeback-by-vm');
  const byUser = page.waitForResponse((r) => r.url().includes('/v1/chargeback?') && r.url().includes('by=user'));
  await page.getByLabel('Breakdown by').selectOption('user');
  const users = (await (await byUser).json()).rows;
  const annRow = table.locator('tbody tr', { has: page.locator('th', { hasText: USER }) });
  await annRow.waitFor();
  const annVms = users.find((r) => r.user === USER).vms;
  assert.ok(annVms >= 1, JSON.stringify(users));
  assert.equal(await annRow.locator('td').first().textContent(), String(annVms), "ann's VMs billed");
  await page.getByLabel('Breakdown by').selectOption('day');
  await table.locator('tbody th', { hasText: charged[charged.length - 1] }).waitFor();
  assert.equal(await page.getByLabel('Month', { exact: true }).inputValue(), new Date().toISOString().slice(0, 7));

  step = 'story 7: the chargeback as CSV';
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Export CSV' }).click(),
  ]);
  const month = new Date().toISOString().slice(0, 7);
  assert.equal(download.suggestedFilename(), `berth-chargeback-eng-${month}-day.csv`);
  const file = path.join(OUT, 'story7-chargeback.csv');
  await download.saveAs(file);
  const lines = (await fs.readFile(file, 'utf8')).trim().split(/\r\n/);
  assert.equal(lines[0], 'day,currency,amount,compute_ms,disk_ms');
  assert.match(lines[lines.length - 1], /^total,EUR,[1-9][0-9]*,,$/);
  assert.ok(lines.some((l) => l.startsWith(charged[0] + ',EUR,')), lines.join('\n'));

  step = 'story 7: last month (before any rate card): no charges, no bars';
  const first = new Date();
  first.setUTCDate(1);
  const lastMonth = new Date(first.getTime() - 86400000).toISOString().slice(0, 7);
  await page.getByLabel('Month', { exact: true }).fill(lastMonth);
  await page.locator('#cost-chart figcaption').filter({ hasText: `Cost per day, ${lastMonth} (UTC); no charges` }).waitFor();
  assert.equal(await page.locator('#cost-chart rect.chart-bar').count(), 0);
  assert.equal(await page.locator('#cb-total').getAttribute('data-amount'), '0');
  await table.getByText('No charges.').waitFor();
  await page.getByLabel('Month', { exact: true }).fill(month);
  await page.locator('#cost-chart figcaption').filter({ hasText: `Cost per day, ${month} (UTC); highest day` }).waitFor();

  step = 'story 7: the manager sets a budget (a bad amount refused next to its field)';
  const amount = page.getByLabel('Amount a month (EUR)');
  await amount.fill('0');
  await page.getByLabel('Thresholds (percent, comma separated)').fill('50, 100');
  expectedStatus = 400;
  await page.getByRole('button', { name: 'Save budget' }).click();
  await page.locator('#budget-amount-error').filter({ hasText: /amount/ }).waitFor();
  expectedStatus = null;
  assert.equal(await amount.getAttribute('aria-invalid'), 'true');
  await manager.shot('budget-invalid');
  // One euro: the month's charges are past it, so both thresholds are reached at once.
  await amount.fill('1');
  await page.getByRole('button', { name: 'Save budget' }).click();
  await page.locator('#budget-current').getByText(/€1\.00|EUR.?1\.00/).first().waitFor();
  await page.locator('#budget-alerts li', { hasText: '100% reached' }).waitFor();
  await page.locator('#budget-alerts li', { hasText: '50% reached' }).waitFor();
  assert.equal(await page.locator('#budget-blocked').textContent(), 'allowed', 'no hard stop: requests allowed');
  const budget = (await apiCall(page, 'GET', `/v1/groups/${gid}/budget`)).body.budget;
  assert.equal(budget.amount, 100);
  assert.deepEqual(budget.thresholds, [50, 100]);
  assert.equal(budget.alerts.length, 2);
  await manager.shot('budget');

  step = 'story 7: the manager removes the budget';
  await page.getByRole('button', { name: 'Remove budget' }).click();
  expectedStatus = 404;
  await page.getByRole('dialog', { name: 'Remove the budget of eng?' }).getByRole('button', { name: 'Remove' }).click();
  await page.locator('#budget-current').getByText('No budget.').waitFor();
  expectedStatus = null;
  await manager.context.close();

  step = 'story 7: the member sees what big1 cost so far';
  const member = await open('story7-member');
  await signIn(member.page, USER, PASSWORD);
  await member.page.getByRole('link', { name: 'My VMs' }).click();
  await vmRow(member.page, 'big1').getByRole('link', { name: 'big1' }).click();
  await member.page.getByRole('heading', { name: 'VM big1' }).waitFor();
  const cost = member.page.locator('#vm-cost-total');
  await cost.waitFor();
  const shown = Number(await cost.getAttribute('data-amount'));
  assert.ok(shown > 0, 'big1 cost something');
  const big1 = (await apiCall(member.page, 'GET', `/v1/vms?owner=${USER}&name=big1`)).body.vms[0];
  const charges = (await apiCall(member.page, 'GET', `/v1/vms/${big1.id}/charges`)).body.charges;
  assert.ok(charges.total >= shown, JSON.stringify(charges));
  await member.page.locator('#vm-cost tbody th', { hasText: charged[charged.length - 1] }).waitFor();
  assert.equal(await member.page.locator('#vm-cost-note').count(), 0, 'eng is allocation-based');
  await member.shot('vm-cost');

  step = 'story 7: the member adds an SSH key (a bad line refused next to its field)';
  const keyFile = path.join(OUT, 'story7-id_ed25519');
  await fs.rm(keyFile, { force: true });
  await fs.rm(keyFile + '.pub', { force: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ann@portal', '-f', keyFile]);
  const pub = (await fs.readFile(keyFile + '.pub', 'utf8')).trim();
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', keyFile + '.pub']).toString().split(' ')[1];
  await member.page.getByRole('link', { name: 'SSH keys' }).click();
  await member.page.getByRole('heading', { name: 'My SSH keys' }).waitFor();
  await member.page.getByText('No SSH keys yet.').waitFor();
  await member.page.getByLabel('Key name').fill('laptop');
  await member.page.getByLabel('Public key').fill('ssh-ed25519 not-a-key ann@portal');
  expectedStatus = 400;
  await member.page.getByRole('button', { name: 'Add key' }).click();
  await member.page.locator('#key-public_key-error').filter({ hasText: /./ }).waitFor();
  expectedStatus = null;
  assert.equal(await member.page.getByLabel('Public key').getAttribute('aria-invalid'), 'true');
  await member.shot('key-invalid');
  await member.page.getByLabel('Public key').fill(pub + '\n');
  await member.page.getByRole('button', { name: 'Add key' }).click();
  const keyRow = member.page.locator('#ssh-keys tr[data-key="laptop"]');
  await keyRow.getByText(fingerprint, { exact: true }).waitFor();
  await keyRow.getByText('ann@portal', { exact: true }).waitFor();
  await member.shot('keys');

  step = 'story 7: a request with the key';
  await member.page.getByRole('link', { name: 'Catalog' }).click();
  await member.page.getByRole('link', { name: 'Request small' }).click();
  await member.page.getByLabel('Name', { exact: true }).fill('keyed1');
  await member.page.getByLabel('SSH keys').selectOption(['laptop']);
  await member.shot('request-with-key');
  await member.page.getByRole('button', { name: 'Submit request' }).click();
  await member.page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await vmRow(member.page, 'keyed1').locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
  const keyed = (await apiCall(member.page, 'GET', `/v1/vms?owner=${USER}&name=keyed1`)).body.vms[0];
  const vmKeys = (await apiCall(member.page, 'GET', `/v1/vms/${keyed.id}`)).body.vm.ssh_keys || [];
  assert.deepEqual(vmKeys.map((k) => [k.name, k.fingerprint]), [['laptop', fingerprint]], JSON.stringify(vmKeys));
  await member.context.close();

  step = 'story 7: an admin imports an image';
  const admin = await open('story7-admin');
  await signIn(admin.page, ADMIN, ADMIN_PASSWORD);
  await admin.page.getByRole('link', { name: 'Images' }).click();
  await admin.page.getByRole('heading', { name: 'Images' }).waitFor();
  async function importImage(file, name) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(IMPORT_DIR, file), '64M']);
    await admin.page.getByLabel('File').fill(file);
    await admin.page.getByLabel('Name', { exact: true }).fill(name);
    await admin.page.getByLabel('OS', { exact: true }).fill('debian');
    await admin.page.getByLabel('OS version').fill('12');
    await admin.page.getByLabel('Applications').fill('nginx 1.22, postgresql 15');
    await admin.page.getByLabel('Minimum RAM (MB)').fill('512');
    await admin.page.getByLabel('Minimum disk (GB)').fill('2');
    await admin.page.getByRole('button', { name: 'Import' }).click();
    const row = admin.page.locator(`#images tr[data-image="${name}"]`);
    await row.locator('.badge', { hasText: /^READY$/ }).waitFor();
    return row;
  }
  // A file outside the import directory is refused, next to the File field.
  await admin.page.getByLabel('File').fill('../../outside.qcow2');
  await admin.page.getByLabel('Name', { exact: true }).fill('outside');
  await admin.page.getByLabel('OS', { exact: true }).fill('debian');
  expectedStatus = 400;
  await admin.page.getByRole('button', { name: 'Import' }).click();
  await admin.page.locator('#img-path-error').filter({ hasText: /./ }).waitFor();
  expectedStatus = null;
  assert.equal(await admin.page.getByLabel('File').getAttribute('aria-invalid'), 'true');
  await admin.shot('import-invalid');
  const imgRow = await importImage('portal.qcow2', 'portal-img');
  await imgRow.getByText('debian 12').waitFor();
  await imgRow.getByText('nginx 1.22, postgresql 15').waitFor();
  await imgRow.getByText('512 MB').waitFor();
  await admin.shot('images');
  await imgRow.getByRole('link', { name: 'portal-img' }).click();
  await admin.page.getByRole('heading', { name: 'Image portal-img' }).waitFor();
  await admin.page.locator('#image-props').getByText(/^[0-9a-f]{64}$/).waitFor();
  await admin.shot('image-detail');

  step = 'story 7: the admin deletes it, after a confirmation';
  await admin.page.getByRole('button', { name: 'Delete image' }).click();
  await admin.page.getByRole('dialog', { name: 'Delete the image portal-img?' }).getByRole('button', { name: 'Delete' }).click();
  await admin.page.getByRole('heading', { name: 'Images' }).waitFor();
  await imgRow.waitFor({ state: 'detached' });
  expectedStatus = 404;
  assert.equal((await apiCall(admin.page, 'GET', '/v1/images/portal-img')).status, 404);
  expectedStatus = null;

  step = 'story 7: an image a template uses is not deleted (the 409 shown)';
  const usedRow = await importImage('used.qcow2', 'portal-used');
  const tpl = await apiCall(admin.page, 'POST', '/v1/templates', { name: 'portal-tpl', vcpus: 1, ram_mb: 512,
    disk_gb: 2, os: 'debian', image: 'portal-used', lease_days: 1, requires_approval: false });
  assert.equal(tpl.status, 201, JSON.stringify(tpl.body));
  await usedRow.getByRole('button', { name: 'Delete portal-used' }).click();
  expectedStatus = 409;
  await admin.page.getByRole('dialog', { name: 'Delete the image portal-used?' }).getByRole('button', { name: 'Delete' }).click();
  await admin.page.locator('#error').filter({ hasText: /portal-used is in use/ }).waitFor();
  expectedStatus = null;
  await admin.page.locator('#error').getByText(/portal-tpl/).waitFor();
  await usedRow.locator('.badge', { hasText: /^READY$/ }).waitFor();
  await admin.shot('image-in-use');

  step = 'story 7: the admin stages the image; the staged image ends READY beside its model';
  await usedRow.getByRole('button', { name: 'Stage portal-used' }).click();
  const stagedRow = admin.page.locator('#images tr[data-kind="staged"]').filter({ hasText: 'portal-used-staged-' });
  await stagedRow.getByRole('link', { name: 'portal-used', exact: true }).waitFor();
  await stagedRow.locator('.badge', { hasText: /^READY$/ }).waitFor();
  assert.equal(await stagedRow.getByRole('button', { name: /^Stage / }).count(), 0);
  await admin.shot('image-staged');

  step = 'story 7: the admin uploads an image from this computer (one with a backing file refused next to its field)';
  await admin.page.getByRole('button', { name: 'From this computer' }).click();
  await admin.page.getByRole('heading', { name: 'Upload an image' }).waitFor();
  const backed = path.join(OUT, 'upload-backed.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', backed, '1M']);
  await admin.page.getByLabel('File').setInputFiles(backed);
  await admin.page.getByLabel('Name', { exact: true }).fill('portal-upload-backed');
  await admin.page.getByLabel('OS', { exact: true }).fill('debian');
  expectedStatus = 400;
  await admin.page.getByRole('button', { name: 'Upload' }).click();
  await admin.page.locator('#up-file-error').filter({ hasText: /backing_file/ }).waitFor();
  expectedStatus = null;
  assert.equal(await admin.page.getByLabel('File').getAttribute('aria-invalid'), 'true');
  await admin.shot('upload-refused');
  const local = path.join(OUT, 'upload.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', local, '64M']);
  await admin.page.getByLabel('File').setInputFiles(local);
  await admin.page.getByLabel('Name', { exact: true }).fill('portal-uploaded');
  await admin.page.getByLabel('OS', { exact: true }).fill('debian');
  await admin.page.getByLabel('OS version').fill('12');
  await admin.page.getByLabel('Applications').fill('nginx 1.22');
  await admin.page.getByRole('button', { name: 'Upload' }).click();
  const upRow = admin.page.locator('#images tr[data-image="portal-uploaded"]');
  await upRow.locator('.badge', { hasText: /^READY$/ }).waitFor();
  await upRow.getByText('nginx 1.22').waitFor();
  expectedStatus = 404;
  assert.equal((await apiCall(admin.page, 'GET', '/v1/images/portal-upload-backed')).status, 404);
  expectedStatus = null;
  await admin.shot('uploaded');
  await admin.page.getByRole('button', { name: 'From the server' }).click();

  step = "story 7: a VM of a reservation-based group costs 0: its group pays for what it reserved";
  const dan = await open('story7-reserved');
  await signIn(dan.page, RESERVED_USER, PASSWORD);
  await dan.page.getByRole('link', { name: 'Request small' }).click();
  await dan.page.getByLabel('Name', { exact: true }).fill('lab1');
  await dan.page.getByRole('button', { name: 'Submit request' }).click();
  await vmRow(dan.page, 'lab1').locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
  await vmRow(dan.page, 'lab1').getByRole('link', { name: 'lab1' }).click();
  await dan.page.getByRole('heading', { name: 'VM lab1' }).waitFor();
  await dan.page.locator('#vm-cost-note').filter({ hasText: /lab is charged for the capacity it reserved/ }).waitFor();
  assert.equal(await dan.page.locator('#vm-cost-total').getAttribute('data-amount'), '0');
  await dan.shot('vm-cost-reserved');
  await dan.context.close();

  step = "story 7: the admin reads lab's chargeback: the group's own charges labelled";
  const byVm = admin.page.waitForResponse((r) => r.url().includes('/v1/chargeback?') && r.url().includes('by=vm'));
  await admin.page.getByRole('link', { name: 'Chargeback', exact: true }).click();
  expectedStatus = 404; // lab has no budget
  await admin.page.getByRole('link', { name: 'lab', exact: true }).click();
  await admin.page.getByRole('heading', { name: 'Chargeback of lab' }).waitFor();
  await admin.page.locator('#budget-current').getByText('No budget.').waitFor();
  expectedStatus = null;
  const lab = await (await byVm).json();
  assert.equal(lab.charging_model, 'reservation');
  await admin.page.locator('#cb-model').getByText(/^reservation/).waitFor();
  const kinds = lab.rows.filter((r) => r.kind).map((r) => r.kind).sort();
  assert.ok(kinds.includes('reserved'), JSON.stringify(lab.rows));
  const labelled = await admin.page.locator('#chargeback-table tr.group-charge')
    .evaluateAll((els) => els.map((e) => e.dataset.kind).sort());
  assert.deepEqual(labelled, kinds);
  await admin.page.locator('#chargeback-table tr[data-kind="reserved"]').getByText('Reserved capacity (the group)').waitFor();
  const lab1 = admin.page.locator('#chargeback-table tbody tr', { has: admin.page.getByRole('link', { name: 'lab1', exact: true }) });
  assert.equal(lab.rows.find((r) => r.vm && r.owner === RESERVED_USER).amount, 0);
  await lab1.getByText(RESERVED_USER, { exact: true }).waitFor();
  await admin.shot('chargeback-reserved');
  await admin.context.close();
}

async function story8() {
  step = 'story 8: an admin adds a network (a bad CIDR refused next to its field)';
  const admin = await open('story8-admin');
  await signIn(admin.page, ADMIN, ADMIN_PASSWORD);
  await admin.page.getByRole('link', { name: 'Networks' }).click();
  await admin.page.getByRole('heading', { name: 'Networks' }).waitFor();
  await admin.page.getByLabel('Name', { exact: true }).fill('portal-net');
  await admin.page.getByLabel('CIDR').fill('10.99.0.1/29');
  await admin.page.getByLabel('Gateway').fill('10.99.0.1');
  await admin.page.getByLabel('DNS servers').fill('10.99.0.1');
  await admin.page.getByLabel('Bridge or network name').fill('br-portal');
  expectedStatus = 400;
  await admin.page.getByRole('button', { name: 'Add network' }).click();
  await admin.page.locator('#net-cidr-error').filter({ hasText: /./ }).waitFor();
  expectedStatus = null;
  assert.equal(await admin.page.getByLabel('CIDR').getAttribute('aria-invalid'), 'true');
  await admin.shot('network-invalid');
  await admin.page.getByLabel('CIDR').fill('10.99.0.0/29');
  await admin.page.getByRole('button', { name: 'Add network' }).click();
  const netRow = admin.page.locator('#networks tr[data-network="portal-net"]');
  await netRow.getByText('10.99.0.0/29', { exact: true }).waitFor();
  await netRow.getByText('bridge br-portal').waitFor();
  await netRow.getByText('0 of 5').waitFor(); // a /29 less its network, broadcast and gateway
  await admin.shot('networks');

  step = 'story 8: the member requests a VM on it and sees its address';
  const member = await open('story8-member');
  await signIn(member.page, USER, PASSWORD);
  await member.page.getByRole('link', { name: 'Request small' }).click();
  await member.page.getByLabel('Name', { exact: true }).fill('netted1');
  await member.page.getByLabel('Networks', { exact: true }).selectOption(['portal-net']);
  await member.page.getByRole('button', { name: 'Submit request' }).click();
  await vmRow(member.page, 'netted1').locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
  const netted = (await apiCall(member.page, 'GET', `/v1/vms?owner=${USER}&name=netted1`)).body.vms[0];
  const vmNet = (await apiCall(member.page, 'GET', `/v1/vms/${netted.id}`)).body.vm.network;
  assert.equal(vmNet.name, 'portal-net', JSON.stringify(vmNet));
  assert.match(vmNet.ip, /^10\.99\.0\.[2-6]$/);
  await vmRow(member.page, 'netted1').getByRole('link', { name: 'netted1' }).click();
  await member.page.getByRole('heading', { name: 'VM netted1' }).waitFor();
  await member.page.getByText(`${vmNet.ip}/29 on portal-net (MAC ${vmNet.mac})`).waitFor();
  await member.shot('vm-address');
  await member.context.close();

  step = 'story 8: a network in use is not deleted (the 409 shown)';
  await admin.page.reload();
  await netRow.getByText('1 of 5').waitFor();
  await netRow.getByRole('button', { name: 'Delete portal-net' }).click();
  expectedStatus = 409;
  await admin.page.getByRole('dialog', { name: 'Delete the network portal-net?' }).getByRole('button', { name: 'Delete' }).click();
  await admin.page.locator('#error').filter({ hasText: /portal-net stays/ }).waitFor();
  expectedStatus = null;
  await netRow.getByText('1 of 5').waitFor();
  await admin.shot('network-in-use');
  await admin.context.close();
}

async function story9() {
  step = 'story 9: a custom build, its verdict shown as the member types';
  const { context, page, shot } = await open('story9');
  await signIn(page, USER, PASSWORD);
  await page.getByRole('link', { name: 'Request small' }).click();
  await page.getByRole('heading', { name: 'Request a VM' }).waitFor();
  await page.getByLabel('Custom build').check();
  await page.getByLabel('OS', { exact: true }).selectOption('debian');
  await page.getByLabel('RAM (MB)').fill('256');
  const verdict = page.locator('#build-verdict');
  await verdict.getByRole('heading', { name: 'This machine cannot work' }).waitFor();
  await verdict.getByText('raise RAM to 564 MB').waitFor();
  await verdict.getByText(/pick template small/).waitFor();
  await verdict.locator('#build-image').filter({ hasText: 'debian-12' }).waitFor();
  await shot('custom-refused');

  step = 'story 9: a suggestion applied, then an application without a build dropped';
  await verdict.locator('li', { hasText: 'raise RAM to 564 MB' }).getByRole('button', { name: 'Apply' }).click();
  await verdict.getByRole('heading', { name: 'This machine can be built' }).waitFor();
  assert.equal(await page.getByLabel('RAM (MB)').inputValue(), '564');
  await page.getByLabel('Applications').fill('nosuchapp');
  await verdict.getByText(/drop application nosuchapp, which has no build for debian/).waitFor();
  await shot('custom-no-build');
  await verdict.locator('li', { hasText: 'drop application nosuchapp' }).getByRole('button', { name: 'Apply' }).click();
  await verdict.getByRole('heading', { name: 'This machine can be built' }).waitFor();
  assert.equal(await page.getByLabel('Applications').inputValue(), '');

  step = 'story 9: the custom build submitted reaches ACTIVE';
  await page.getByLabel('Name', { exact: true }).fill('custom1');
  await page.getByRole('button', { name: 'Submit request' }).click();
  await page.getByRole('heading', { name: 'My VMs' }).waitFor();
  await vmRow(page, 'custom1').locator('.badge', { hasText: /^ACTIVE$/ }).waitFor();
  const vm = (await apiCall(page, 'GET', `/v1/vms?owner=${USER}&name=custom1`)).body.vms[0];
  assert.equal(vm.template, null);
  assert.deepEqual(vm.flavor, { vcpus: 1, ram_mb: 564, disk_gb: 10 });
  await shot('custom-active');
  await context.close();
}

async function story5() {
  const { context, page, shot } = await open('story5');
  step = 'story 5: sign in';
  await signIn(page, USER, PASSWORD);
  const session = (await context.cookies()).find((c) => c.name === 'berth_session');

  step = 'story 5: a POST with the cookie but no anti-CSRF token is refused';
  expectedStatus = 403;
  const refused = await page.evaluate(async () => {
    const r = await fetch('/v1/requests', { method: 'POST', credentials: 'include',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ template: 'small', name: 'forged' }) });
    return [r.status, (await r.json()).error.code];
  });
  expectedStatus = null;
  assert.deepEqual(refused, [403, 'FORBIDDEN']);

  step = 'story 5: an inline script does not run (CSP)';
  const ran = await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.berthInline = 1;';
    document.head.append(s);
    return window.berthInline === 1;
  });
  assert.equal(ran, false, 'inline script ran despite the CSP');
  // The browser reports the blocked script as a console error: that one is expected.
  const cspErrors = problems.filter((p) => p.includes('Content Security Policy'));
  assert.ok(cspErrors.length >= 1, 'the CSP violation was reported');
  problems.splice(0, problems.length, ...problems.filter((p) => !p.includes('Content Security Policy')));

  step = 'story 5: sign out revokes the session';
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to Berth' }).waitFor();
  const after = await fetch(`${URL}/v1/users/${USER}`, { headers: { Cookie: `berth_session=${session.value}` } });
  assert.equal(after.status, 401, 'the old session cookie no longer works');
  assert.equal((await context.cookies()).some((c) => c.name === 'berth_session'), false);
  await shot('signed-out');
  await context.close();
}

try {
  for (const story of [story1, story2, story3, story4, story6, story7, story8, story9, story5]) {
    await story();
    console.log(`passed: ${step.split(':')[0]}`);
  }
  step = 'no console errors';
  assert.deepEqual(problems, []);
  console.log('portal stories passed: 1 member VM life, 2 approval, 3 maintenance + CSV, 4 isolation, 6 abort + webhook, 7 chargeback + budget + VM cost + SSH keys + images, 8 networks, 9 custom build, 5 CSP/CSRF/sign-out');
} catch (err) {
  console.error(`FAILED at step "${step}": ${err.stack || err}`);
  if (lastPage && !lastPage.isClosed()) {
    try {
      await lastPage.screenshot({ path: path.join(OUT, 'FAILED.png'), fullPage: true });
      const shown = await lastPage.locator('#error').textContent();
      if (shown) console.error(`the page's error message: ${shown}`);
    } catch { /* the page is gone */ }
  }
  if (problems.length) console.error('browser problems:\n  ' + problems.join('\n  '));
  process.exitCode = 1;
} finally {
  await Promise.allSettled(recording);
  await fs.writeFile(path.join(OUT, 'api-calls.json'), JSON.stringify(apiCalls));
  await browser.close();
}
