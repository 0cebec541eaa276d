// Interop with MQTT.js (npm package `mqtt`, 5.x): `node mqttjs.js TARGET VERSION [CA]` with
// TARGET a TCP port on 127.0.0.1 or a ws:// or wss:// URL, VERSION 4 (MQTT 3.1.1) or 5, and
// CA the PEM file a wss:// server certificate must chain to. Covers QoS 0/1/2, a 300 KB
// message (several WebSocket frames and TLS records), retained messages, a will on a dropped
// connection and, at 5.0, user properties, the CONNACK Topic Alias Maximum and a client-set
// topic alias. Prints one JSON line and exits non-zero on failure; every wait is bounded.
'use strict';

const fs = require('fs');
const mqtt = require('mqtt');

const target = process.argv[2];
const version = Number(process.argv[3] || 5);
const ca = process.argv[4] ? fs.readFileSync(process.argv[4]) : undefined;
const tag = `${version}-${process.pid}`;
const TIMEOUT = 5000;

function fail(error, extra = {}) {
  console.log(JSON.stringify({ ok: false, error: String(error), ...extra }));
  process.exit(1);
}

setTimeout(() => fail('overall timeout'), 20000).unref();

function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const common = { protocolVersion: version, reconnectPeriod: 0, connectTimeout: TIMEOUT, ...opts };
    const c = /^\d+$/.test(target)
      ? mqtt.connect({ host: '127.0.0.1', port: Number(target), ...common })
      : mqtt.connect(target, { ca, rejectUnauthorized: true, ...common });
    c.received = [];
    c.waiters = [];
    c.on('message', (topic, payload, packet) => {
      c.received.push({ topic, payload: payload.toString(), packet });
      for (const w of c.waiters.splice(0)) w();
    });
    c.once('connect', (connack) => resolve({ c, connack }));
    c.once('error', reject);
  });
}

async function expect(c, n, what) {
  const deadline = Date.now() + TIMEOUT;
  while (c.received.length < n) {
    if (Date.now() > deadline) fail(`${what}: got ${c.received.length} of ${n}`, { got: c.received.map((m) => m.payload) });
    await new Promise((r) => {
      c.waiters.push(r);
      setTimeout(r, 100);
    });
  }
  return c.received.splice(0, n);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const result = { version };
  const base = `mqttjs/${tag}`;

  // QoS 0, 1 and 2 to a QoS 2 subscriber.
  const { c: sub } = await connect();
  await sub.subscribeAsync(`${base}/#`, { qos: 2 });
  const { c: pub, connack } = await connect();
  for (const qos of [0, 1, 2]) await pub.publishAsync(`${base}/qos`, `m${qos}`, { qos });
  const got = await expect(sub, 3, 'qos');
  const seen = got.map((m) => `${m.payload}@${m.packet.qos}`).join(',');
  if (seen !== 'm0@0,m1@1,m2@2') fail(`qos deliveries ${seen}`);
  result.qos = seen;

  // A message larger than a WebSocket frame or a TLS record, byte for byte.
  const big = Buffer.alloc(300 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 0xff;
  await pub.publishAsync(`${base}/big`, big, { qos: 1 });
  const [b] = await expect(sub, 1, 'big message');
  if (!b.packet.payload.equals(big)) fail(`big message: ${b.packet.payload.length} bytes, not the ${big.length} sent`);
  result.big = big.length;

  // Retained: a late subscriber gets it flagged; an empty retained message deletes it.
  await pub.publishAsync(`${base}/retained`, 'kept', { qos: 1, retain: true });
  await expect(sub, 1, 'live retained');
  const { c: late } = await connect();
  await late.subscribeAsync(`${base}/retained`, { qos: 1 });
  const [r] = await expect(late, 1, 'retained');
  if (r.payload !== 'kept' || !r.packet.retain) fail(`retained ${r.payload} retain=${r.packet.retain}`);
  await pub.publishAsync(`${base}/retained`, '', { qos: 1, retain: true });
  await expect(sub, 1, 'retained deletion');
  const { c: after } = await connect();
  await after.subscribeAsync(`${base}/retained`, { qos: 1 });
  await sleep(500);
  if (after.received.length) fail('deleted retained message delivered');
  result.retained = true;

  // Will: the connection is destroyed without DISCONNECT.
  const { c: victim } = await connect({
    will: { topic: `${base}/will`, payload: Buffer.from('gone'), qos: 1, retain: false },
  });
  victim.stream.destroy();
  const [w] = await expect(sub, 1, 'will');
  if (w.topic !== `${base}/will` || w.payload !== 'gone') fail(`will ${w.topic} ${w.payload}`);
  result.will = true;

  if (version === 5) {
    // User properties pass through, in order.
    const properties = { userProperties: { a: '1', b: ['2', '3'] }, contentType: 'text/plain' };
    await pub.publishAsync(`${base}/props`, 'p', { qos: 1, properties });
    const [p] = await expect(sub, 1, 'properties');
    const up = p.packet.properties && p.packet.properties.userProperties;
    if (JSON.stringify(up) !== JSON.stringify({ a: '1', b: ['2', '3'] })) fail(`user properties ${JSON.stringify(up)}`);
    if (p.packet.properties.contentType !== 'text/plain') fail('content type lost');
    result.user_properties = up;

    // Topic aliases: the broker's maximum, then an alias set and used by the client.
    const max = connack.properties && connack.properties.topicAliasMaximum;
    if (!max) fail('no Topic Alias Maximum in CONNACK');
    result.topic_alias_maximum = max;
    await pub.publishAsync(`${base}/alias`, 'set', { qos: 1, properties: { topicAlias: 1 } });
    await pub.publishAsync('', 'use', { qos: 1, properties: { topicAlias: 1 } });
    const a = await expect(sub, 2, 'aliases');
    const at = a.map((m) => `${m.topic}=${m.payload}`).join(',');
    if (at !== `${base}/alias=set,${base}/alias=use`) fail(`aliases ${at}`);
    result.topic_alias = true;
  }

  for (const c of [sub, pub, late, after]) await c.endAsync();
  console.log(JSON.stringify({ ok: true, ...result }));
  process.exit(0);
}

main().catch((e) => fail(e && e.stack ? e.stack : e));
