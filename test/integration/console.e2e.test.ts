import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createApiServer } from '../../src/api/api-server.js';
import { tokenDigest } from '../../src/api/api-tokens.js';
import { createHttpSender } from '../../src/delivery/http-sender.js';
import type { Config } from '../../src/config/config.js';
import type { RelayContext } from '../../src/context/relay-context.js';
import type { DeadLetterRecord } from '../../src/queue/outcome-writer.js';
import { removePrefixKeys, startReceiver, startTestWorker, testConfig, testContext, waitFor, type Receiver } from '../support/harness.js';

/*
 * The console in a real browser: Debian's chromium, headless, driven by playwright-core. Every
 * screen is saved as a PNG: to docs/console/ (which docs/console.md shows) with
 * ACTION_RELAY_UPDATE_SCREENSHOTS=1, otherwise to a temporary folder, so that a test run leaves
 * the checkout as it was.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOTS =
  process.env.ACTION_RELAY_UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/console') : join(tmpdir(), `ar-console-shots-${process.pid}`);
const TOKEN = 'console-admin-token-0123456789';
/** A token of API_TOKENS_FILE with the read scope only. */
const READER = 'console-reader-token-0123456789';

let config: Config;
let ctx: RelayContext;
let api: FastifyInstance;
let base: string;
let receiver: Receiver;
let worker: Awaited<ReturnType<typeof startTestWorker>>;
let browser: BrowserContext;
let profile: string;

beforeAll(async () => {
  // `npm ci` builds the console (prepare -> build); a checkout that has not been built gets it here.
  if (!existsSync(join(ROOT, 'dist/console/index.html'))) {
    const { build } = await import('vite');
    await build({ configFile: join(ROOT, 'console/vite.config.ts'), logLevel: 'warn' });
  }
  receiver = await startReceiver();
  profile = await mkdtemp(join(tmpdir(), 'console-chromium-'));
  const tokensFile = join(profile, 'tokens.yaml');
  await writeFile(tokensFile, `tokens:\n  - { name: dashboards, sha256: ${tokenDigest(READER)}, scopes: [read] }\n`);
  config = testConfig({ ADMIN_TOKEN: TOKEN, API_TOKENS_FILE: tokensFile });
  ctx = await testContext(config);
  api = await createApiServer({ ctx, sender: createHttpSender({ guard: ctx.egress }) });
  base = await api.listen({ port: 0, host: '127.0.0.1' });
  worker = await startTestWorker(config);
  browser = await chromium.launchPersistentContext(join(profile, 'user-data'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport: { width: 1280, height: 860 },
  });
  // A step that cannot happen fails with its own message, well before the test's timeout.
  browser.setDefaultTimeout(10_000);
  browser.on('page', (page) => page.on('pageerror', (err) => console.error(`page error: ${err.message}`)));
  await mkdir(SHOTS, { recursive: true });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  if (!SHOTS.startsWith(ROOT)) await rm(SHOTS, { recursive: true, force: true });
  await worker?.stop();
  await api?.close();
  await ctx?.close();
  await receiver?.close();
  if (config) await removePrefixKeys(config);
});

const shot = (page: Page, name: string, fullPage = false) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });

async function signIn(page: Page, token = TOKEN, screenshot = false) {
  await page.goto(`${base}/console`);
  // No session yet: the console sends the browser to its sign-in page.
  await page.waitForURL(`${base}/console/login`);
  await page.getByLabel('API token').fill(token);
  if (screenshot) await shot(page, 'sign-in');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/console`);
}

const v1 = (method: string, path: string, body?: unknown) =>
  fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });

describe('the action console', () => {
  it('journey: create an action, fix a validation error, preview, test, filter dead letters, replay them after a fix', async () => {
    // The third party refuses large amounts unless the request says it may send them.
    receiver.handler = (req, res) => {
      const body = req.body ? (JSON.parse(req.body) as { amount?: number }) : {};
      if ((body.amount ?? 0) > 100 && req.headers['x-allow-large'] !== 'yes') {
        res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"amount over the limit"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: `r-${receiver.requests.length}` }));
    };
    const page = await browser.newPage();
    await signIn(page, TOKEN, true);
    const cookies = await browser.cookies(base);
    const session = cookies.find((c) => c.name === 'action_relay_admin');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    // Nothing of the session is in the page's reach.
    expect(await page.evaluate('[document.cookie, localStorage.length, sessionStorage.length]')).toEqual(['', 0, 0]);

    await page.getByRole('link', { name: 'New action' }).click();
    await page.getByLabel('Id', { exact: true }).fill('orders_push');
    await page.getByLabel('Name', { exact: true }).fill('Push orders to the shop');
    await page.getByLabel('URL', { exact: true }).fill('not a url');
    // Live validation by the server's schema, shown at its field.
    const urlProblem = page.locator('#field-endpoint_url-problem');
    await expect.poll(() => urlProblem.textContent()).toContain('not a valid URL');
    expect(await page.getByLabel('URL', { exact: true }).getAttribute('aria-invalid')).toBe('true');
    await shot(page, 'editor-validation');
    await page.getByLabel('URL', { exact: true }).fill(receiver.url);
    await page.getByLabel('Path', { exact: true }).fill('/orders/{{params.orderId}}');
    await expect.poll(() => urlProblem.count()).toBe(0);

    await page.getByRole('button', { name: 'Add parameter' }).click();
    await page.getByLabel('Parameter 1 name').fill('orderId');
    await page.locator('#field-parameters_orderId_required').check();
    await page.getByRole('button', { name: 'Add parameter' }).click();
    await page.getByLabel('Parameter 2 name').fill('amount');
    await page.locator('#field-parameters_amount_type').selectOption('integer');
    await page.getByLabel('Body template (JSON)').fill('{ "order": "{{params.orderId}}", "amount": "{{params.amount}}" }');
    await page.getByLabel('Max attempts').fill('2');
    // The YAML tab shows the same definition.
    // Keyboard: the tabs follow the arrow keys.
    await page.getByRole('tab', { name: 'Form' }).focus();
    await page.keyboard.press('ArrowRight');
    expect(await page.getByRole('tab', { name: 'YAML' }).getAttribute('aria-selected')).toBe('true');
    const yaml = await page.getByLabel('Definition as YAML').inputValue();
    expect(yaml).toContain('id: orders_push');
    expect(yaml).toContain('path: /orders/{{params.orderId}}');
    await shot(page, 'editor-yaml');
    await page.getByRole('tab', { name: 'Form' }).click();
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Valid');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved as version 1.').waitFor();
    await page.locator('fieldset', { hasText: 'Parameters' }).first().scrollIntoViewIfNeeded();
    await shot(page, 'editor-form');
    expect((await ctx.store.get('orders_push'))?.definition.endpoint.path).toBe('/orders/{{params.orderId}}');

    // Preview (nothing sent), then a real test request.
    await page.getByLabel('Sample params (JSON)').fill('{ "orderId": "o-1", "amount": 5 }');
    await page.getByRole('button', { name: 'Preview request' }).click();
    await page.getByText('Request that would be sent (nothing sent)').waitFor();
    expect(await page.locator('#try-outcome').textContent()).toContain(`${receiver.url}/orders/o-1`);
    expect(receiver.requests).toHaveLength(0);
    await page.getByRole('button', { name: 'Send test request' }).click();
    await page.getByText(/Answer: 200 in \d+ ms/).waitFor();
    expect(receiver.requests).toHaveLength(1);
    await page.locator('section.try').screenshot({ path: join(SHOTS, 'editor-test.png') });

    // Jobs, some of which die (422 is not retried), and a dead letter of another action.
    const amounts = [10, 500, 20, 700, 30, 900];
    for (const [i, amount] of amounts.entries()) {
      expect((await v1('POST', '/v1/jobs', { actionId: 'orders_push', params: { orderId: `o-${i}`, amount } })).status).toBe(202);
    }
    await ctx.store.put({ id: 'other', name: 'other', endpoint: { url: `${receiver.url}/other`, method: 'POST' }, body: { amount: 1000 } });
    expect((await v1('POST', '/v1/jobs', { actionId: 'other', params: {} })).status).toBe(202);
    await waitFor(async () => (await ctx.deadLetters.list({}, 100)).items.length === 4, 15_000, 'four dead letters');

    // Filter: this action, http_status 422.
    await page.getByRole('link', { name: 'Dead letters', exact: true }).click();
    await page.getByLabel('Action', { exact: true }).selectOption('orders_push');
    await page.getByLabel('Reason').selectOption('http_status');
    await page.getByLabel('HTTP status').fill('422');
    await page.getByRole('button', { name: 'Apply filter' }).click();
    const rows = page.locator('table.dlq tbody tr');
    await expect.poll(() => rows.count()).toBe(3);
    expect(await page.locator('table.dlq tbody').textContent()).not.toContain('other');
    await shot(page, 'dead-letters');

    // One record: its attempt history.
    await rows.first().getByRole('link').click();
    await page.getByText('Attempt 1 ·').waitFor();
    expect(await page.locator('details.attempt').first().textContent()).toContain('amount over the limit');
    await shot(page, 'dead-letter-detail');

    // Fix the action (a header row), then replay what the filter matches.
    await page.goto(`${base}/console#/actions/orders_push`);
    await page.getByRole('button', { name: 'Add header' }).click();
    await page.getByLabel('Headers 1: name').fill('X-Allow-Large');
    await page.getByLabel('Headers 1: value').fill('yes');
    await expect.poll(() => page.getByRole('status').first().textContent()).toContain('Valid');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved as version 2.').waitFor();

    await page.goto(`${base}/console#/dead-letters?actionId=orders_push&reason=http_status&status=422`);
    await expect.poll(() => rows.count()).toBe(3);
    const before = receiver.requests.length;
    await page.getByRole('button', { name: 'Replay all matching' }).click();
    // The dry run's count, and a confirmation.
    const dialog = page.getByRole('dialog');
    await expect.poll(() => dialog.getByRole('heading').textContent()).toBe('Replay 3 dead letters?');
    await shot(page, 'replay-confirm');
    await dialog.getByRole('button', { name: 'Replay 3' }).click();
    const outcome = page.locator('#replay-outcome');
    await expect.poll(() => outcome.textContent(), { timeout: 15_000 }).toContain('3 delivered');
    expect(await outcome.textContent()).toContain('0 dead again');
    await shot(page, 'replay-outcome');
    const replayed = receiver.requests.slice(before);
    expect(replayed.map((r) => JSON.parse(r.body).amount).sort()).toEqual([500, 700, 900]);
    expect(replayed.every((r) => r.headers['x-allow-large'] === 'yes')).toBe(true);
    expect((await ctx.deadLetters.list({ actionId: 'orders_push' }, 100)).items).toHaveLength(0);

    // The list's live counts: 3 + 3 delivered, the 3 dead of the first run; the other action's dead letter.
    await page.getByRole('link', { name: 'Actions', exact: true }).click();
    const row = page.locator('tr[data-action="orders_push"]');
    await expect.poll(() => row.locator('td[data-label="15 min delivered"]').textContent(), { timeout: 10_000 }).toBe('6');
    expect(await row.locator('td[data-label="15 min dead"]').textContent()).toBe('3');
    expect(await page.locator('tr[data-action="other"] td[data-label="1 h dead"]').textContent()).toBe('1');
    await page.getByLabel('Search by id or name').fill('push');
    await expect.poll(() => page.locator('table.actions tbody tr').count()).toBe(1);
    await page.getByLabel('Search by id or name').fill('');
    await shot(page, 'actions');

    // A narrow screen: the page itself never scrolls sideways (wide tables scroll in their own box).
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    await shot(page, 'actions-narrow');
    await page.goto(`${base}/console#/actions/orders_push`);
    await page.getByLabel('URL', { exact: true }).waitFor();
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true);
    await page.close();
  }, 50_000);

  it('keeps a page of 1,000 dead letters responsive: paged, never all rendered', async () => {
    await ctx.store.put({ id: 'bulk', name: 'bulk', endpoint: { url: `${receiver.url}/bulk`, method: 'POST' } });
    const now = Date.now();
    const keys = ctx.keys.partitionFor(`127.0.0.1:${new URL(receiver.url).port}`);
    // Written through the end-of-job path, as a worker writes them.
    const writeDeadLetters = (jobIds: string[], newest = Date.now()) =>
      Promise.all(
        jobIds.map((jobId, n) => {
          const failedAt = new Date(newest - n * 1000).toISOString();
          const dead: DeadLetterRecord = {
            jobId,
            actionId: 'bulk',
            job: { actionId: 'bulk', params: {}, context: {}, enqueuedAt: failedAt },
            reason: 'http_status',
            status: 410,
            failedAt,
            attempts: [],
          };
          return ctx.outcomes.finish(keys, {
            jobId: dead.jobId,
            actionId: 'bulk',
            outcome: 'dead',
            status: 410,
            reason: 'http_status',
            attempts: 1,
            durationMs: 1,
            context: {},
            response: {},
            dead,
          });
        }),
      );
    for (let i = 0; i < 1000; i += 100) {
      await writeDeadLetters(
        Array.from({ length: 100 }, (_, j) => `bulk-${i + j}`),
        now - i * 1000,
      );
    }
    const page = await browser.newPage();
    await page.goto(`${base}/console#/dead-letters?actionId=bulk`);
    if (page.url().includes('/login')) await signIn(page);
    await page.goto(`${base}/console#/dead-letters?actionId=bulk`);
    const rows = page.locator('table.dlq tbody tr');
    await expect.poll(() => rows.count()).toBe(50);
    expect(await rows.first().textContent()).toContain('bulk-0');
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.first().textContent()).toContain('bulk-50');
    expect(await rows.count()).toBe(50);
    await page.getByLabel('Select every dead letter on this page').check();
    await page.getByText('50 selected').waitFor();
    // The whole filter is counted by the server, not by rendering it.
    await page.getByRole('button', { name: 'Replay all matching' }).click();
    await expect.poll(() => page.getByRole('dialog').getByRole('heading').textContent()).toBe('Replay 1000 dead letters?');
    // Keyboard: the confirmation has the focus, and Escape cancels it.
    await page.keyboard.press('Escape');
    expect(await page.getByRole('dialog').count()).toBe(0);
    await shot(page, 'dead-letters-paged');
    expect((await ctx.deadLetters.list({ actionId: 'bulk' }, 1000)).items).toHaveLength(1000);

    // A purge removes what its confirmation counted: dead letters that arrive meanwhile stay.
    await page.getByRole('button', { name: 'Purge all matching' }).click();
    const dialog = page.getByRole('dialog');
    await expect.poll(() => dialog.getByRole('heading').textContent()).toBe('Purge 1000 dead letters?');
    await writeDeadLetters(['late-1', 'late-2']);
    await dialog.getByRole('button', { name: 'Purge 1000' }).click();
    await page.getByText('Purged 1000 dead letters.').waitFor();
    const left = (await ctx.deadLetters.list({ actionId: 'bulk' }, 1000)).items.map((i) => i.jobId);
    expect(left.sort()).toEqual(['late-1', 'late-2']);
    await page.close();
  }, 30_000);

  it('a read token sees the console but cannot save, replay or purge', async () => {
    await ctx.store.put({ id: 'read_only', name: 'Seen, not changed', endpoint: { url: `${receiver.url}/ro`, method: 'POST' } });
    await browser.clearCookies();
    const page = await browser.newPage();
    await signIn(page, READER);
    await page.locator('header .who').getByText('read').waitFor();
    await page.locator('tr[data-action="read_only"]').waitFor();
    expect(await page.getByRole('link', { name: 'New action' }).count()).toBe(0);

    await page.goto(`${base}/console#/actions/read_only`);
    await page.getByText('Your token can read actions but not change them').waitFor();
    await expect.poll(() => page.getByLabel('Name', { exact: true }).inputValue()).toBe('Seen, not changed');
    expect(await page.getByRole('button', { name: 'Save' }).isDisabled()).toBe(true);
    expect(await page.getByRole('button', { name: 'Delete' }).isDisabled()).toBe(true);
    await shot(page, 'read-only');
    // The API refuses it too, whatever the page shows: the same call the Save button makes.
    const status = await page.evaluate(`fetch('/v1/actions/read_only', {
      method: 'PUT', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-action-relay-console': '1' },
      body: JSON.stringify({ name: 'Changed', endpoint: { url: '${receiver.url}/ro', method: 'POST' } }),
    }).then((r) => r.status)`);
    expect(status).toBe(403);
    expect((await ctx.store.get('read_only'))?.definition.name).toBe('Seen, not changed');

    await page.goto(`${base}/console#/dead-letters`);
    await page.getByRole('button', { name: 'Apply filter' }).waitFor();
    for (const name of ['Replay selected', 'Purge selected', 'Replay all matching', 'Purge all matching']) {
      expect(await page.getByRole('button', { name }).isDisabled(), name).toBe(true);
    }
    await page.close();
  }, 30_000);
});
