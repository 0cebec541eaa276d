// The dashboard in a real browser: Debian's Chromium, headless, driven by puppeteer-core,
// opens the page midge-http serves and uses it as a person would.
//
//   node dashboard_browser.js URL TOKEN CLIENT_ID RETAINED_TOPIC SCREENSHOT_DIR
//
// Steps, each reported on stdout as one JSON line:
//   {"event":"ready","browser":...}              the page is loaded and asks for a token
//   {"event":"refused","message":...}            a wrong token gives the 401 message
//   {"event":"rates","in":..,"out":..,"bytes_in":..,"bytes_out":..,"points":..}
//                                                 the charts show non-zero rates
//   {"event":"listed","client_ids":[...]}        the clients table has CLIENT_ID (text intact)
//   {"event":"kicked","dialog":...}              its Kick button clicked, the confirmation accepted
//   {"event":"row-gone"}                         its row left the table (then the figures
//                                                 show one client connected)
//   {"event":"retained-listed","topics":[...]}   the retained table has RETAINED_TOPIC
//   {"event":"retained-deleted"}                 its Delete button clicked and the row gone
//   {"event":"error","error":...}
//   {"event":"done","ok":true|false}             last line; the exit status agrees
//   {"event":"page-state",...}                  after an error: what the page showed
// Screenshots: SCREENSHOT_DIR/{login-refused,before-kick,after-kick}.png, and failure.png
// after an error. Chromium's console and page errors go to stderr. Every wait is bounded.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const puppeteer = require('puppeteer-core');

const CHROMIUM = process.env.MIDGE_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = 15000;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let browser = null;
let profile = null;
let page = null;
let shots = null;

async function finish(ok, error) {
  if (error !== undefined) {
    emit({ event: 'error', error: String(error) });
    // What the page showed then, for the failure message and a person.
    try {
      emit({ event: 'page-state', ...(await page.evaluate(() => ({
        status: document.getElementById('status').textContent,
        auth_error: document.getElementById('auth-error').textContent,
        rates: ['rate-in', 'rate-out', 'rate-bytes-in', 'rate-bytes-out']
          .map((id) => document.getElementById(id).dataset.value),
        points: [...document.querySelectorAll('.chart polyline')].map((l) => l.points.length),
        clients: [...document.querySelectorAll('#clients tbody tr')].map((r) => r.dataset.clientId),
        retained: [...document.querySelectorAll('#retained tbody tr')].map((r) => r.dataset.topic),
      }))) });
      await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true });
    } catch (_) {
      // No page yet, or it is gone.
    }
  }
  emit({ event: 'done', ok });
  try {
    if (browser) await browser.close();
  } catch (_) {
    // Already gone.
  }
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
}

setTimeout(() => finish(false, 'overall timeout'), 90000).unref();

/// The row of `table` (#clients or #retained) whose data attribute `key` is `value`, found by
/// comparing strings in the page, not by a CSS selector built from attacker-like text.
function rowLookup(table, key, value) {
  return [...document.querySelectorAll(`#${table} tbody tr`)].find((r) => r.dataset[key] === value) || null;
}

async function main() {
  const [url, token, clientId, retainedTopic, dir] = process.argv.slice(2);
  shots = dir;
  if (!shots) throw new Error('usage: dashboard_browser.js URL TOKEN CLIENT_ID RETAINED_TOPIC SCREENSHOT_DIR');
  fs.mkdirSync(shots, { recursive: true });
  // One from an earlier failed run would mislead.
  fs.rmSync(path.join(shots, 'failure.png'), { force: true });

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-chromium-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // A container's /dev/shm may be small; Chromium then uses /tmp instead.
      '--disable-dev-shm-usage',
      `--user-data-dir=${profile}`,
    ],
    userDataDir: profile,
    timeout: 20000,
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  page.on('console', (m) => process.stderr.write(`[chromium console] ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[chromium page error] ${e}\n`));
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.accept();
  });
  const wait = (fn, ...args) => page.waitForFunction(fn, { timeout: STEP_TIMEOUT, polling: 100 }, ...args);

  await page.goto(url, { waitUntil: 'load', timeout: STEP_TIMEOUT });
  await page.waitForSelector('#login-form', { visible: true, timeout: STEP_TIMEOUT });
  emit({ event: 'ready', browser: await browser.version() });

  // A wrong token: the 401 message, and the form again.
  await page.type('#token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#auth-error', { visible: true, timeout: STEP_TIMEOUT });
  const refused = await page.$eval('#auth-error', (e) => e.textContent);
  if (!refused.includes('401')) throw new Error(`the wrong token's message: ${refused}`);
  await page.screenshot({ path: path.join(shots, 'login-refused.png') });
  emit({ event: 'refused', message: refused });

  // The right one.
  await page.type('#token', token);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#dashboard', { visible: true, timeout: STEP_TIMEOUT });

  // Rates: the page computes them from two polls a second apart, and a line needs two of
  // them, so a few seconds at most.
  await wait(() => ['rate-in', 'rate-out', 'rate-bytes-in', 'rate-bytes-out']
    .every((id) => Number(document.getElementById(id).dataset.value) > 0)
    && [...document.querySelectorAll('.chart polyline')].every((line) => line.points.length >= 2))
    .catch(async (e) => {
      const shown = await page.$$eval('.legend b', (bs) => bs.map((b) => `${b.id} ${b.dataset.value}`));
      throw new Error(`the rates did not all become non-zero: ${shown.join(', ')} (${e.message})`);
    });
  const rates = await page.evaluate(() => {
    const v = (id) => Number(document.getElementById(id).dataset.value);
    const points = (chart, series) => {
      const line = document.querySelector(`#${chart} polyline[data-series="${series}"]`);
      return line ? line.points.length : 0;
    };
    return {
      in: v('rate-in'), out: v('rate-out'), bytes_in: v('rate-bytes-in'), bytes_out: v('rate-bytes-out'),
      points: Math.min(points('chart-messages', 'in'), points('chart-messages', 'out'),
        points('chart-bytes', 'bin'), points('chart-bytes', 'bout')),
    };
  });
  emit({ event: 'rates', ...rates });

  // The client, its id shown as text (it holds markup), and no markup from it in the table.
  await wait(rowLookup, 'clients', 'clientId', clientId);
  const listed = await page.evaluate((id) => {
    const rows = [...document.querySelectorAll('#clients tbody tr')];
    const row = rows.find((r) => r.dataset.clientId === id);
    return {
      client_ids: rows.map((r) => r.dataset.clientId),
      cell: row.querySelector('td.id').textContent,
      injected: document.querySelectorAll('#clients tbody td *:not(button)').length,
    };
  }, clientId);
  if (listed.cell !== clientId) throw new Error(`the id cell shows ${JSON.stringify(listed.cell)}`);
  if (listed.injected) throw new Error('markup from a client id reached the clients table');
  // A few more polls on the charts before the picture.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await page.screenshot({ path: path.join(shots, 'before-kick.png'), fullPage: true });
  emit({ event: 'listed', client_ids: listed.client_ids });

  // Kick it.
  const kick = await page.evaluateHandle(
    (id) => [...document.querySelectorAll('#clients tbody tr')]
      .find((r) => r.dataset.clientId === id).querySelector('button.kick'),
    clientId,
  );
  await kick.click();
  emit({ event: 'kicked', dialog: dialogs[dialogs.length - 1] || null });
  await wait((table, key, value) => ![...document.querySelectorAll(`#${table} tbody tr`)]
    .some((r) => r.dataset[key] === value), 'clients', 'clientId', clientId);
  emit({ event: 'row-gone' });
  // The figures follow within a poll or two: one client connected, the publisher.
  await wait(() => document.getElementById('stat-clients').textContent === '1');
  await page.screenshot({ path: path.join(shots, 'after-kick.png'), fullPage: true });

  // The retained message, listed and deleted.
  await wait(rowLookup, 'retained', 'topic', retainedTopic);
  const topics = await page.$$eval('#retained tbody tr', (rows) => rows.map((r) => r.dataset.topic));
  const retainedInjected = await page.$$eval('#retained tbody td *:not(button)', (els) => els.length);
  if (retainedInjected) throw new Error('markup from a topic or payload reached the retained table');
  emit({ event: 'retained-listed', topics });
  const del = await page.evaluateHandle(
    (topic) => [...document.querySelectorAll('#retained tbody tr')]
      .find((r) => r.dataset.topic === topic).querySelector('button.delete'),
    retainedTopic,
  );
  await del.click();
  await wait((table, key, value) => ![...document.querySelectorAll(`#${table} tbody tr`)]
    .some((r) => r.dataset[key] === value), 'retained', 'topic', retainedTopic);
  emit({ event: 'retained-deleted' });

  const status = await page.$eval('#status', (e) => e.className);
  if (status === 'error') throw new Error('the page shows an error: ' + (await page.$eval('#status', (e) => e.textContent)));
  await finish(true);
}

main().catch((e) => finish(false, e && e.stack ? e.stack : e));
