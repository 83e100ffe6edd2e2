// Story 1 of the portal in a real browser (Debian's chromium, headless, driven by
// playwright-core): a member signs in, requests a VM from the catalog (first with a name the
// server refuses, shown next to the field), watches it reach ACTIVE live without a reload,
// stops it after confirming, signs out (the session cookie no longer works); the CSP header
// is there, an injected inline script does not run, and no console error happens.
//
// Run by run_browser.py, which starts the platform: node portal.test.mjs with BERTH_URL,
// BERTH_USER, BERTH_PASSWORD and BERTH_OUT (screenshots) in the environment.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const URL = process.env.BERTH_URL;
const USER = process.env.BERTH_USER;
const PASSWORD = process.env.BERTH_PASSWORD;
const OUT = process.env.BERTH_OUT || '.';
const TIMEOUT = 90_000;

const browser = await chromium.launch({
  executablePath: process.env.BERTH_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
let step = 'start';
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (m) => {
    // The one refusal the story provokes (the invalid name's 400) is logged by the browser
    // itself as a failed load; anything else is a problem.
    if (m.type() !== 'error') return;
    if (step.startsWith('request form') && /status of 400/.test(m.text())) return;
    problems.push(`console error during "${step}": ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const shot = (name) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });

  step = 'open the portal';
  const response = await page.goto(URL + '/');
  assert.equal(response.status(), 200);
  const csp = response.headers()['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'(;|$)/, `CSP: ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);

  step = 'sign in';
  await page.getByLabel('User name').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Catalog' }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'berth_session');
  assert.ok(session, 'berth_session cookie set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('berth_session')), false,
    'the page cannot read the session cookie');
  await shot('1-catalog');

  step = 'request form: a server validation message next to its field';
  await page.getByRole('link', { name: 'Request small' }).click();
  await page.getByRole('heading', { name: 'Request a VM' }).waitFor();
  await page.locator('#quota-left').getByText(/left of|no quota limit/i).first().waitFor();
  const name = page.getByLabel('Name', { exact: true });
  await name.fill('Bad Name!');
  await page.getByRole('button', { name: 'Submit request' }).click();
  const nameError = page.locator('#req-name-error');
  await nameError.filter({ hasText: /hostname|name/ }).waitFor();
  assert.equal(await name.getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'req-name');
  await shot('2-request-invalid');

  step = 'request a VM and see it reach ACTIVE live';
  await name.fill('web1');
  await page.getByRole('button', { name: 'Submit request' }).click();
  await page.getByRole('heading', { name: 'My VMs' }).waitFor();
  // A marker on the window: a reload would lose it.
  await page.evaluate(() => { window.berthNoReload = 1; });
  const row = page.locator('tbody tr', { has: page.getByRole('link', { name: 'web1', exact: true }) });
  await row.locator('.badge', { hasText: /^ACTIVE$/ }).waitFor({ timeout: TIMEOUT });
  await row.locator('.badge', { hasText: /^RUNNING$/ }).waitFor({ timeout: TIMEOUT });
  assert.equal(await page.evaluate(() => window.berthNoReload), 1, 'updated without a reload');
  await shot('3-vm-active');

  step = 'stop it, after a confirmation';
  await row.getByRole('button', { name: 'Stop web1' }).click();
  const dialog = page.getByRole('dialog', { name: 'Stop web1?' });
  await dialog.waitFor();
  await shot('4-confirm-stop');
  await dialog.getByRole('button', { name: 'Stop' }).click();
  await row.locator('.badge', { hasText: /^STOPPED$/ }).waitFor({ timeout: TIMEOUT });
  assert.equal(await page.evaluate(() => window.berthNoReload), 1, 'updated without a reload');
  await shot('5-vm-stopped');

  step = 'VM detail';
  await row.getByRole('link', { name: 'web1' }).click();
  await page.getByRole('heading', { name: 'VM web1' }).waitFor();
  await page.getByRole('heading', { name: 'Lease' }).waitFor();
  await shot('6-vm-detail');

  step = 'sign out: the session is revoked';
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to Berth' }).waitFor();
  const after = await fetch(`${URL}/v1/users/${USER}`, {
    headers: { Cookie: `berth_session=${session.value}` },
  });
  assert.equal(after.status, 401, 'the old session cookie no longer works');
  assert.equal((await context.cookies()).some((c) => c.name === 'berth_session'), false);
  await shot('7-signed-out');

  step = 'no console errors';
  assert.deepEqual(problems, []);

  step = 'CSP: an inline script does not run';
  const ran = await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.berthInline = 1;';
    document.head.append(s);
    return window.berthInline === 1;
  });
  assert.equal(ran, false, 'inline script ran despite the CSP');
  console.log('portal story passed: sign-in, validation, request, live ACTIVE, stop, sign-out, CSP');
} catch (err) {
  console.error(`FAILED at step "${step}": ${err.stack || err}`);
  if (problems.length) console.error('browser problems:\n  ' + problems.join('\n  '));
  process.exitCode = 1;
} finally {
  await browser.close();
}
