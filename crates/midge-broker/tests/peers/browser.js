// MQTT over WebSocket from a real browser: Debian's Chromium, headless, driven by
// puppeteer-core, runs MQTT.js's browser bundle (mqtt/dist/mqtt.min.js) in a page.
//
//   node browser.js [--server-cert PEM] URL...
//
// Serves the page from Node's http module on 127.0.0.1 (a free port), opens it in a fresh
// Chromium profile, and in the page, for each ws:// or wss:// URL in turn: connects (MQTT 5),
// subscribes to browser/<n> at QoS 1, and publishes "from-browser-<n>" there at QoS 1. It
// then waits for two messages: its own, and "from-tcp-<n>", which the test publishes from a
// TCP client once this script says the page is subscribed.
//
// Every step is reported on stdout as one JSON line:
//   {"event":"ready","origin":...}               the page is loaded
//   {"event":"subscribed","url":...,"topic":...} publish "from-tcp-<n>" to topic now
//   {"event":"received","url":...,"messages":[{"topic","payload","qos","retain"}]}
//   {"event":"error","url":...,"error":...}
//   {"event":"done","ok":true|false}            last line; the exit status agrees
// Chromium's console and page errors go to stderr. Every wait is bounded.
//
// wss:// trusts the test server certificate by its public key alone
// (--ignore-certificate-errors-spki-list with the SHA-256 of the certificate's
// SubjectPublicKeyInfo, computed here from --server-cert), not by turning certificate checks
// off: any other certificate still fails.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const puppeteer = require('puppeteer-core');

const CHROMIUM = process.env.MIDGE_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = 8000;

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let browser = null;
let profile = null;
let server = null;

async function finish(ok, error) {
  if (error !== undefined) emit({ event: 'error', error: String(error) });
  emit({ event: 'done', ok });
  try {
    if (browser) await browser.close();
  } catch (_) {
    // Already gone.
  }
  if (server) server.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
}

setTimeout(() => finish(false, 'overall timeout'), 40000).unref();

function parseArgs(argv) {
  const out = { urls: [], serverCert: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--server-cert') out.serverCert = argv[++i];
    else out.urls.push(argv[i]);
  }
  if (!out.urls.length) throw new Error('usage: browser.js [--server-cert PEM] URL...');
  return out;
}

/// base64(SHA-256(SubjectPublicKeyInfo)), the form Chromium's SPKI list takes.
function spkiHash(pemPath) {
  const cert = new crypto.X509Certificate(fs.readFileSync(pemPath));
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>midge browser interop</title>
<script src="/mqtt.min.js"></script></head>
<body><script>
// runOne(url, n) resolves with what arrived on browser/<n>, or rejects.
window.runOne = (url, n, stepTimeout) => new Promise((resolve, reject) => {
  const topic = 'browser/' + n;
  const mine = 'from-browser-' + n;
  const theirs = 'from-tcp-' + n;
  const messages = [];
  const timer = setTimeout(() => {
    client.end(true);
    reject(new Error('timeout; got ' + JSON.stringify(messages)));
  }, stepTimeout);
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clientId: 'chromium-' + n + '-' + Math.random().toString(16).slice(2, 10),
    reconnectPeriod: 0,
    connectTimeout: stepTimeout,
  });
  const fail = (e) => {
    clearTimeout(timer);
    client.end(true);
    reject(new Error(String(e && e.message ? e.message : e)));
  };
  client.on('error', fail);
  client.on('close', () => {
    if (messages.length < 2) fail('connection closed; got ' + JSON.stringify(messages));
  });
  client.on('message', (t, payload, packet) => {
    messages.push({ topic: t, payload: new TextDecoder().decode(payload), qos: packet.qos, retain: packet.retain });
    const payloads = messages.map((m) => m.payload);
    if (payloads.includes(mine) && payloads.includes(theirs)) {
      clearTimeout(timer);
      // A moment for anything unexpected (a duplicate) to show up too.
      setTimeout(() => client.end(false, () => resolve(messages)), 200);
    }
  });
  client.on('connect', async () => {
    try {
      const granted = await client.subscribeAsync(topic, { qos: 1 });
      if (!granted.length || granted[0].qos !== 1) throw new Error('SUBACK ' + JSON.stringify(granted));
      await window.report({ event: 'subscribed', url, topic });
      await client.publishAsync(topic, mine, { qos: 1 });
    } catch (e) {
      fail(e);
    }
  });
});
</script></body></html>`;

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const bundle = path.join(path.dirname(require.resolve('mqtt/package.json')), 'dist', 'mqtt.min.js');
  if (!fs.existsSync(bundle)) throw new Error(`no MQTT.js browser bundle at ${bundle}`);

  server = http.createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (req.url === '/mqtt.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      fs.createReadStream(bundle).pipe(res);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const origin = `http://127.0.0.1:${server.address().port}`;

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'midge-chromium-'));
  const flags = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // A container's /dev/shm may be small; Chromium then uses /tmp instead.
    '--disable-dev-shm-usage',
    `--user-data-dir=${profile}`,
  ];
  if (args.serverCert) flags.push(`--ignore-certificate-errors-spki-list=${spkiHash(args.serverCert)}`);
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    args: flags,
    userDataDir: profile,
    timeout: 20000,
  });
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[chromium console] ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[chromium page error] ${e}\n`));
  await page.exposeFunction('report', (obj) => emit(obj));
  await page.goto(`${origin}/`, { waitUntil: 'load', timeout: STEP_TIMEOUT });
  if (!(await page.evaluate(() => typeof mqtt === 'object' && typeof mqtt.connect === 'function'))) {
    throw new Error('MQTT.js bundle did not load in the page');
  }
  emit({ event: 'ready', origin, browser: await browser.version() });

  let ok = true;
  for (const [n, url] of args.urls.entries()) {
    try {
      const messages = await page.evaluate((u, i, t) => window.runOne(u, i, t), url, n, STEP_TIMEOUT);
      emit({ event: 'received', url, messages });
    } catch (e) {
      ok = false;
      emit({ event: 'error', url, error: String(e && e.message ? e.message : e) });
    }
  }
  await finish(ok);
}

main().catch((e) => finish(false, e && e.stack ? e.stack : e));
