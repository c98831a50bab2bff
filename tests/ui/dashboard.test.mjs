// The /ui dashboard in a real browser: headless Chromium (the Debian package) driven by playwright-core,
// against the local stack that run.sh starts (moto's Cognito, the fake Bedrock, the local API).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests/ui/run.sh, which starts the stack and sets it`);
  return value;
}

const BASE = required('UI_BASE_URL');
const OUTPUT_DIR = required('OUTPUT_DIR');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TENANT = { user: required('TENANT_USER'), password: required('TENANT_PASSWORD'), tenant: required('TENANT_ID') };
const ADMIN = { user: required('ADMIN_USER'), password: required('ADMIN_PASSWORD') };
const OTHER_TENANT = required('OTHER_TENANT_ID');
const TOKEN_KEY = 'bedrock-usage.idToken';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let context;
let userDataDir;

before(async () => {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  userDataDir = mkdtempSync(path.join(tmpdir(), 'bm-ui-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1200, height: 1000 },
  });
});

after(async () => {
  await context?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
});

/** A fresh tab (its own sessionStorage) that records every script error and console error, CSP included. */
async function newPage() {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console error: ${message.text()}`);
  });
  return page;
}

async function signIn(page, { user, password }) {
  await page.goto(`${BASE}/ui`);
  await page.waitForSelector('body[data-state="signed-out"]');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#sign-in-button');
}

async function waitReady(page) {
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]');
  const state = await page.getAttribute('body', 'data-state');
  if (state !== 'ready') assert.fail(`the page shows an error: ${await page.textContent('[data-testid=error]')}`);
}

async function api(page, apiPath) {
  const token = await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY);
  assert.ok(token, 'the page keeps the IdToken for its API calls');
  const response = await fetch(`${BASE}${apiPath}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(response.status, 200, `${apiPath}: ${await response.clone().text()}`);
  return response.json();
}

const value = (page, testId) => page.getAttribute(`[data-testid=${testId}]`, 'data-value');

/** The summary figures and every bar of the chart equal the API's report. */
async function assertPageShows(page, report) {
  assert.equal(await value(page, 'report-tenant'), report.tenant_id);
  const summary = report.summary;
  assert.equal(await value(page, 'total-input-tokens'), String(summary.total_input_tokens));
  assert.equal(await value(page, 'total-output-tokens'), String(summary.total_output_tokens));
  assert.equal(await value(page, 'total-tokens'), String(summary.total_tokens));
  assert.equal(await value(page, 'total-requests'), String(summary.total_requests));
  assert.equal(await value(page, 'estimated-cost'), summary.estimated_cost_usd === null ? '' : String(summary.estimated_cost_usd));
  const bars = await page.$$eval('[data-testid=daily-chart] g.day', (groups) => groups.map((g) => ({
    day: g.dataset.day, input: Number(g.dataset.input), output: Number(g.dataset.output), requests: Number(g.dataset.requests),
  })));
  const expected = Object.entries(report.daily_stats).map(([day, stats]) => ({
    day, input: stats.input_tokens, output: stats.output_tokens, requests: stats.requests,
  }));
  assert.deepEqual(bars, expected, 'one bar per day of the period, with the API numbers');
}

test('a tenant signs in and sees exactly what the API reports', async () => {
  const page = await newPage();
  await signIn(page, TENANT);
  await waitReady(page);
  assert.equal(await page.textContent('[data-testid=who-tenant]'), TENANT.tenant);

  const week = await api(page, '/v1/usage/me?days=7');
  assert.ok(week.summary.total_requests > 0, 'the seeded tenant has usage');
  await assertPageShows(page, week);
  assert.equal(await page.isVisible('[data-testid=tenant-table]'), false, 'no tenant table for a tenant user');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'tenant-7-days.png'), fullPage: true });

  // The period picker asks the API again.
  await page.selectOption('[data-testid=days]', '30');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=daily-chart] g.day').length === 30);
  await waitReady(page);
  await assertPageShows(page, await api(page, '/v1/usage/me?days=30'));
  await page.selectOption('[data-testid=request-type]', 'anthropic');
  await page.waitForFunction(() => /anthropic/.test(document.querySelector('[data-testid=report-period]').textContent));
  await waitReady(page);
  await assertPageShows(page, await api(page, '/v1/usage/me?days=30&request_type=anthropic'));
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'tenant-30-days-anthropic.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('an admin sees every tenant and can open any of them', async () => {
  const page = await newPage();
  await signIn(page, ADMIN);
  await waitReady(page);
  await page.waitForSelector('[data-testid=tenant-table] tbody tr');

  const list = await api(page, '/v1/usage?days=7&limit=1000');
  assert.equal(list.next, null);
  const rows = await page.$$eval('[data-testid=tenant-table] tbody tr', (trs) => trs.map((tr) => ({
    tenant_id: tr.dataset.tenantId, total_tokens: Number(tr.dataset.totalTokens),
  })));
  assert.deepEqual(rows, list.tenants.map(({ tenant_id, total_tokens }) => ({ tenant_id, total_tokens })),
    'the table lists every tenant, in the API order');
  const listed = rows.map((row) => row.tenant_id);
  assert.ok(listed.includes(TENANT.tenant) && listed.includes(OTHER_TENANT), `both tenants listed: ${listed}`);
  assert.equal(await value(page, 'tenant-count'), String(list.tenant_count));
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'admin-tenants.png'), fullPage: true });

  await page.click(`[data-testid=tenant-table] tr[data-tenant-id="${OTHER_TENANT}"] button`);
  await page.waitForFunction((id) => document.querySelector('[data-testid=report-tenant]').dataset.value === id, OTHER_TENANT);
  await waitReady(page);
  await assertPageShows(page, await api(page, `/v1/usage/${OTHER_TENANT}?days=7`));
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'admin-opens-other-tenant.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('an admin edits a tenant\'s limits and the tenant sees them as progress bars', async () => {
  const admin = await newPage();
  await signIn(admin, ADMIN);
  await waitReady(admin);
  await admin.evaluate((id) => { location.hash = `tenant=${encodeURIComponent(id)}`; }, TENANT.tenant);
  await admin.waitForFunction((id) => document.querySelector('[data-testid=limits-tenant]').textContent === id, TENANT.tenant);
  await waitReady(admin);
  assert.equal(await admin.isVisible('[data-testid=limits-form]'), true, 'admins get the edit form');
  await admin.fill('[data-testid=limit-input-tokens_per_month]', '50000');
  await admin.fill('[data-testid=limit-input-usd_per_month]', '25');
  await admin.fill('[data-testid=limit-input-requests_per_minute]', '');
  await admin.click('[data-testid=limits-save]');
  await admin.waitForSelector('[data-testid=limit-bar-tokens_per_month]');
  const stored = await api(admin, `/v1/limits/${TENANT.tenant}`);
  assert.equal(stored.limits.tokens_per_month.limit, 50000, 'the form PUT the limits');
  assert.equal(stored.limits.usd_per_month.limit, 25);
  assert.equal(stored.limits.requests_per_minute, null);
  await admin.screenshot({ path: path.join(OUTPUT_DIR, 'admin-edits-limits.png'), fullPage: true });
  assert.deepEqual(admin.problems, []);
  await admin.close();

  const page = await newPage();
  await signIn(page, TENANT);
  await waitReady(page);
  await page.waitForSelector('[data-testid=limit-bar-tokens_per_month]');
  const mine = await api(page, '/v1/limits/me');
  for (const kind of ['tokens_per_month', 'usd_per_month']) {
    const limit = mine.limits[kind];
    assert.equal(await page.getAttribute(`[data-testid=limit-bar-${kind}]`, 'data-limit'), String(limit.limit));
    assert.equal(await page.getAttribute(`[data-testid=limit-bar-${kind}]`, 'data-used'), String(limit.used));
    const reset = await page.textContent(`[data-testid=limit-reset-${kind}]`);
    assert.ok(reset.includes(limit.resets_at) && reset.includes(limit.period), `${kind}: ${reset} shows ${limit.resets_at}`);
    const remaining = await page.textContent(`[data-testid=limit-remaining-${kind}]`);
    assert.ok(remaining.replace(/[^0-9.]/g, '').length > 0, `${kind}: remaining shown (${remaining})`);
  }
  assert.equal(await page.isVisible('[data-testid=limit-requests_per_minute]'), false, 'unset kinds have no bar');
  assert.equal(await page.isVisible('[data-testid=limits-form]'), false, 'a tenant user cannot edit');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'tenant-limits.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('errors are shown, not swallowed', async () => {
  const page = await newPage();

  // A wrong password: Cognito's refusal is on the page.
  await signIn(page, { user: TENANT.user, password: 'Wrong-password-1!' });
  await page.waitForSelector('body[data-state="error"]');
  assert.match(await page.textContent('[data-testid=error]'), /Sign-in failed/);

  // A tenant user opening another tenant: the API's 403 is on the page, and no numbers are.
  await signIn(page, TENANT);
  await waitReady(page);
  await page.evaluate((id) => { location.hash = `tenant=${encodeURIComponent(id)}`; }, OTHER_TENANT);
  await page.waitForSelector('body[data-state="error"]');
  assert.match(await page.textContent('[data-testid=error]'), /403/);
  assert.equal(await page.isVisible('#report'), false, 'no stale numbers next to the error');
  await page.screenshot({ path: path.join(OUTPUT_DIR, 'error-403.png'), fullPage: true });

  // A token the API refuses (bad signature): the page says so and asks to sign in again.
  await page.evaluate((key) => {
    const token = sessionStorage.getItem(key);
    sessionStorage.setItem(key, token.slice(0, -6) + (token.endsWith('AAAAAA') ? 'BBBBBB' : 'AAAAAA'));
    location.hash = '';
  }, TOKEN_KEY);
  await page.reload();
  await page.waitForSelector('body[data-state="error"]');
  assert.match(await page.textContent('[data-testid=error]'), /session has expired or is not valid/);
  assert.equal(await page.isVisible('#sign-in'), true);

  // An expired token is caught before the call.
  await page.evaluate((key) => {
    const encode = (object) => btoa(JSON.stringify(object)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
    const claims = { sub: 'x', 'custom:tenant_id': 't', exp: Math.floor(Date.now() / 1000) - 60 };
    sessionStorage.setItem(key, `${encode({ alg: 'RS256' })}.${encode(claims)}.signature`);
  }, TOKEN_KEY);
  await page.reload();
  await page.waitForSelector('body[data-state="error"]');
  assert.match(await page.textContent('[data-testid=error]'), /session expired/i);
  // The browser logs failed requests (401, 403) as console errors; nothing else may appear.
  const unexpected = page.problems.filter((problem) => !/status of (400|401|403)/.test(problem));
  assert.deepEqual(unexpected, []);
  await page.close();
});
