// MQTT 5.0 enhanced authentication with SCRAM-SHA-256 (RFC 5802, RFC 7677) from MQTT.js
// (npm package `mqtt`, 5.x): `node mqttjs_scram.js PORT USER PASSWORD EXPECT`, EXPECT `accept`
// or `refuse`.
//
// The SCRAM client is written here with node's crypto, over MQTT.js's AUTH support: the
// CONNECT carries Authentication Method `SCRAM-SHA-256` and the client-first message, the
// broker's AUTH 0x18 (server-first) is answered from `handleAuth` with AUTH 0x18
// (client-final), and the CONNACK carries the server-final message, whose signature is
// checked here: a broker that does not hold the user's ServerKey cannot make it.
//
// `accept`: connects, checks the server signature, and sends a QoS 1 message to itself.
// `refuse`: expects the CONNECT refused, and prints the CONNACK's reason code.
// Prints one JSON line and exits non-zero on failure; every wait is bounded.
'use strict';

const crypto = require('crypto');
const mqtt = require('mqtt');

const [port, user, password, expect] = process.argv.slice(2);
const METHOD = 'SCRAM-SHA-256';
const TIMEOUT = 5000;

function fail(error, extra = {}) {
  console.log(JSON.stringify({ ok: false, error: String(error), ...extra }));
  process.exit(1);
}

function done(result) {
  console.log(JSON.stringify({ ok: true, ...result }));
  process.exit(0);
}

setTimeout(() => fail('overall timeout'), 15000).unref();

if (!port || !user || password === undefined || !['accept', 'refuse'].includes(expect)) {
  fail('usage: mqttjs_scram.js PORT USER PASSWORD accept|refuse');
}

const hmac = (key, text) => crypto.createHmac('sha256', key).update(text).digest();
const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
const xor = (a, b) => Buffer.from(a.map((byte, i) => byte ^ b[i]));

// RFC 5802 §5.1: `=` and `,` in a user name are written =3D and =2C. (The names used here
// are ASCII, for which SASLprep changes nothing.)
const saslname = (name) => name.replace(/=/g, '=3D').replace(/,/g, '=2C');

// Parses `a=1,b=2` into { a: '1', b: '2' }; values may contain `=`.
function attributes(text) {
  const out = {};
  for (const part of text.split(',')) {
    const at = part.indexOf('=');
    if (at !== 1) fail(`malformed SCRAM attribute ${JSON.stringify(part)} in ${JSON.stringify(text)}`);
    out[part[0]] = part.slice(2);
  }
  return out;
}

const clientNonce = crypto.randomBytes(18).toString('base64');
const clientFirstBare = `n=${saslname(user)},r=${clientNonce}`;
const state = { steps: 0 };

// server-first -> client-final, keeping what checking the server-final needs.
function clientFinal(serverFirst) {
  const attrs = attributes(serverFirst);
  if (attrs.m !== undefined) fail('server-first has a mandatory extension');
  if (!attrs.r || !attrs.r.startsWith(clientNonce) || attrs.r.length <= clientNonce.length) {
    fail(`server nonce ${attrs.r} does not extend the client's ${clientNonce}`);
  }
  const iterations = Number(attrs.i);
  if (!Number.isInteger(iterations) || iterations < 4096) fail(`iteration count ${attrs.i}`);
  const salt = Buffer.from(attrs.s || '', 'base64');
  if (salt.length === 0) fail('no salt');
  const salted = crypto.pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  const storedKey = sha256(clientKey);
  // c=biws is base64 of the GS2 header `n,,`: no channel binding.
  const withoutProof = `c=biws,r=${attrs.r}`;
  const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const proof = xor(clientKey, hmac(storedKey, authMessage));
  state.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
  state.iterations = iterations;
  return `${withoutProof},p=${proof.toString('base64')}`;
}

function verifyServerFinal(data) {
  if (!data) fail('CONNACK without Authentication Data (server-final)');
  const attrs = attributes(data.toString('utf8'));
  if (attrs.e !== undefined) fail(`server-final reports error ${attrs.e}`);
  const got = Buffer.from(attrs.v || '', 'base64');
  if (got.length !== state.serverSignature.length || !crypto.timingSafeEqual(got, state.serverSignature)) {
    fail('the server signature does not verify: the broker does not hold this user\'s ServerKey');
  }
}

const client = mqtt.connect({
  host: '127.0.0.1',
  port: Number(port),
  protocolVersion: 5,
  clientId: `scram-${process.pid}`,
  reconnectPeriod: 0,
  connectTimeout: TIMEOUT,
  properties: {
    authenticationMethod: METHOD,
    authenticationData: Buffer.from(`n,,${clientFirstBare}`, 'utf8'),
  },
});

client.handleAuth = (packet, callback) => {
  state.steps += 1;
  const props = packet.properties || {};
  if (packet.reasonCode !== 24) return callback(new Error(`AUTH reason code ${packet.reasonCode}`));
  if (props.authenticationMethod !== METHOD) {
    return callback(new Error(`AUTH with method ${props.authenticationMethod}`));
  }
  if (state.steps > 1) return callback(new Error('a second AUTH 0x18: SCRAM has one round trip'));
  const serverFirst = (props.authenticationData || Buffer.alloc(0)).toString('utf8');
  callback(null, {
    cmd: 'auth',
    reasonCode: 24,
    properties: {
      authenticationMethod: METHOD,
      authenticationData: Buffer.from(clientFinal(serverFirst), 'utf8'),
    },
  });
};

client.once('error', (err) => {
  if (expect === 'refuse') {
    done({ refused: true, code: err.code, message: err.message, auth_steps: state.steps });
  }
  fail(err && err.stack ? err.stack : err, { code: err && err.code, auth_steps: state.steps });
});

// A refusal closes the connection as the error is reported; a close without one is a failure.
client.once('close', () => {
  if (expect === 'refuse') {
    setTimeout(() => fail('closed without a refusing CONNACK', { auth_steps: state.steps }), 1000);
  }
});

client.once('connect', async (connack) => {
  if (expect === 'refuse') fail('connected with a wrong password');
  const props = connack.properties || {};
  if (props.authenticationMethod !== METHOD) fail(`CONNACK method ${props.authenticationMethod}`);
  verifyServerFinal(props.authenticationData);
  try {
    const topic = `scram/${process.pid}`;
    const got = new Promise((resolve) => client.once('message', (t, payload) => resolve({ t, payload })));
    await client.subscribeAsync(topic, { qos: 1 });
    await client.publishAsync(topic, 'through scram', { qos: 1 });
    const m = await Promise.race([
      got,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no message back')), TIMEOUT)),
    ]);
    if (m.t !== topic || m.payload.toString() !== 'through scram') fail(`got ${m.t} ${m.payload}`);
    await client.endAsync();
  } catch (e) {
    fail(e && e.stack ? e.stack : e);
  }
  done({
    connected: true,
    server_signature: 'verified',
    auth_steps: state.steps,
    iterations: state.iterations,
    round_trip: true,
  });
});
