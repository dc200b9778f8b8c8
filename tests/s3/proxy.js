// Fault-injecting HTTP proxy for the S3 tests, on 127.0.0.1 only.
// Usage: node proxy.js UPSTREAM_PORT   (prints "ready PORT")
//
// Every request is forwarded to 127.0.0.1:UPSTREAM_PORT unless a fault is
// queued. Control requests (never forwarded):
//   GET /__fault?plan=a,b,c   the next requests get these faults, in order
//   GET /__fault?always=X     every request gets fault X until the next plan
//   ...&only=TEXT             with plan or always: only requests whose
//                             "METHOD /path?query" contains TEXT get faults
//                             (and use up the plan); the others pass
//   GET /__count              number of requests seen (control excluded)
//   GET /__latency?ms=N       every answer forwarded N ms after upstream's
//                             (a store's round trip; 0: none, the default)
//   GET /__bytes              JSON {prefix: bytes}: body bytes of the PUTs
//                             forwarded upstream, per key prefix (the path
//                             up to its last "/", e.g. "/bucket/repo/catalog");
//                             ...?reset=1 zeroes the counters after answering
//   GET /__puts               JSON {prefix: count}: those PUTs, counted
//   GET /__gets               JSON {"gets": n, "bytes": b}: GET requests seen
//                             (faulted ones too) and the body bytes of the
//                             answers to them sent back; ...?reset=1 zeroes them
// Faults: pass, drop (close the connection without an answer), 500, 503,
// 429, 403, stall (answer nothing, keep the connection open), cut (forward the
// answer's headers and half its body, then close), slow (forward, but hold
// the answer's body back for 3 s before sending it), flip (forward, with one
// byte in the middle of a 200/206 body inverted: damage on the way), lose
// (forward, let the server act, then close the connection without an answer).
//
// Conditional writes: s3rver ignores "If-None-Match: *" on PUT, so the proxy
// does what AWS S3 does with it. A PUT of a whole object (no partNumber) or a
// CompleteMultipartUpload (POST ?uploadId) carrying it is answered 412
// PreconditionFailed when the key exists, else forwarded. Node runs one thing
// at a time, but the check (a HEAD upstream) and the write are two requests:
// conditional writes of one key are queued behind each other, each holding
// the key until its upstream answer has ended, so "check then write" is
// atomic against every other conditional write of that key. s3rver also
// writes an object in place, so a GET or HEAD running alongside a write would
// see half of it; S3 never shows a partial object: reads of a key wait for the
// conditional writes queued on it.
'use strict';
const http = require('http');

const upstreamPort = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true });
let plan = [];
let always = null;
let only = null;
let count = 0;
const stalled = new Set();
const keyQueues = new Map(); // path -> promise of the end of the last conditional write queued
let putBytes = {}; // key prefix -> body bytes of PUTs forwarded upstream (GET /__bytes)
let putCount = {}; // key prefix -> PUTs forwarded upstream (GET /__puts)
let getCount = 0; // GET requests seen, and body bytes answered to them (GET /__gets)
let getBytes = 0;
let latencyMs = 0; // GET /__latency?ms=N: every answer forwarded N ms late

function countPut(req) {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  const prefix = path.slice(0, Math.max(path.lastIndexOf('/'), 0)) || '/';
  putCount[prefix] = (putCount[prefix] || 0) + 1;
  putBytes[prefix] = putBytes[prefix] || 0;
  req.on('data', (c) => { putBytes[prefix] += c.length; });
}

function fault(req) {
  if (only && !`${req.method} ${req.url}`.includes(only)) return 'pass';
  if (always) return always;
  return plan.length ? plan.shift() : 'pass';
}

function forward(req, res, mode, done = () => {}) {
  let finished = false;
  const finish = () => {
    if (!finished) {
      finished = true;
      done();
    }
  };
  res.on('close', finish);
  if (req.method === 'PUT') countPut(req);
  const up = http.request(
    { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
    (ures) => {
      ures.on('end', finish);
      if (latencyMs) setTimeout(() => relay(req, res, ures, mode), latencyMs);
      else relay(req, res, ures, mode);
    },
  );
  up.on('error', () => {
    finish();
    if (res.socket) res.socket.destroy();
  });
  req.pipe(up);
}

// The upstream answer to the client, as the fault mode says.
function relay(req, res, ures, mode) {
  if (mode === 'lose') {
    ures.resume();
    ures.on('end', () => res.socket && res.socket.destroy());
    return;
  }
  if (mode === 'flip' && (ures.statusCode === 200 || ures.statusCode === 206)) {
    const chunks = [];
    ures.on('data', (c) => chunks.push(c));
    ures.on('end', () => {
      const body = Buffer.concat(chunks);
      if (body.length) body[Math.floor(body.length / 2)] ^= 0xff;
      res.writeHead(ures.statusCode, ures.headers);
      res.end(body);
    });
    return;
  }
  res.writeHead(ures.statusCode, ures.headers);
  if (req.method === 'GET') ures.on('data', (c) => { getBytes += c.length; });
  if (mode === 'cut') {
    const len = Number(ures.headers['content-length'] || 0);
    const chunks = [];
    ures.on('data', (c) => chunks.push(c));
    ures.on('end', () => {
      const body = Buffer.concat(chunks);
      res.write(body.subarray(0, Math.floor((len || body.length) / 2)));
      setTimeout(() => res.socket && res.socket.destroy(), 50);
    });
  } else if (mode === 'slow') {
    setTimeout(() => ures.pipe(res), 3000);
  } else {
    ures.pipe(res);
  }
}

function isConditionalWrite(req) {
  if (req.headers['if-none-match'] !== '*') return false;
  const q = new URL(req.url, 'http://127.0.0.1').searchParams;
  return (req.method === 'PUT' && !q.has('partNumber') && !q.has('uploadId')) ||
    (req.method === 'POST' && q.has('uploadId'));
}

// Does the object exist upstream? (200 to a HEAD of its path)
function exists(path) {
  return new Promise((resolve) => {
    const h = http.request({ host: '127.0.0.1', port: upstreamPort, method: 'HEAD', path, agent }, (r) => {
      r.resume();
      r.on('end', () => resolve(r.statusCode === 200));
    });
    h.on('error', () => resolve(false));
    h.end();
  });
}

function conditionalWrite(req, res, mode) {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  const before = keyQueues.get(path) || Promise.resolve();
  let release;
  const mine = new Promise((r) => { release = r; });
  const tail = before.then(() => mine);
  keyQueues.set(path, tail);
  tail.then(() => { if (keyQueues.get(path) === tail) keyQueues.delete(path); });
  before.then(async () => {
    if (await exists(path)) {
      const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code>' +
        '<Message>At least one of the pre-conditions you specified did not hold</Message>' +
        '<Condition>If-None-Match</Condition></Error>';
      req.resume();
      res.writeHead(412, { 'Content-Type': 'application/xml', 'Content-Length': body.length });
      res.end(body);
      release();
      return;
    }
    delete req.headers['if-none-match'];
    forward(req, res, mode, release);
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/__fault') {
    plan = url.searchParams.get('plan') ? url.searchParams.get('plan').split(',') : [];
    always = url.searchParams.get('always');
    only = url.searchParams.get('only');
    for (const s of stalled) s.destroy();
    stalled.clear();
    res.end('ok\n');
    return;
  }
  if (url.pathname === '/__latency') {
    latencyMs = Number(url.searchParams.get('ms')) || 0;
    res.end('ok\n');
    return;
  }
  if (url.pathname === '/__count') {
    res.end(`${count}\n`);
    return;
  }
  if (url.pathname === '/__bytes' || url.pathname === '/__puts') {
    res.setHeader('Content-Type', 'application/json');
    res.end(`${JSON.stringify(url.pathname === '/__bytes' ? putBytes : putCount)}\n`);
    if (url.searchParams.get('reset')) {
      putBytes = {};
      putCount = {};
    }
    return;
  }
  if (url.pathname === '/__gets') {
    res.setHeader('Content-Type', 'application/json');
    res.end(`${JSON.stringify({ gets: getCount, bytes: getBytes })}\n`);
    if (url.searchParams.get('reset')) getCount = getBytes = 0;
    return;
  }
  count++;
  if (req.method === 'GET') getCount++;
  const mode = fault(req);
  switch (mode) {
    case 'drop':
      req.socket.destroy();
      return;
    case '500':
    case '503':
    case '429':
    case '403': {
      const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>Injected${mode}</Code></Error>`;
      req.resume();
      res.writeHead(Number(mode), { 'Content-Type': 'application/xml', 'Content-Length': body.length });
      res.end(body);
      return;
    }
    case 'stall':
      req.resume();
      stalled.add(req.socket);
      req.socket.on('close', () => stalled.delete(req.socket));
      return;
    default: {
      const path = new URL(req.url, 'http://127.0.0.1').pathname;
      if (isConditionalWrite(req)) conditionalWrite(req, res, mode);
      else if ((req.method === 'GET' || req.method === 'HEAD') && keyQueues.has(path))
        keyQueues.get(path).then(() => forward(req, res, mode));
      else forward(req, res, mode);
    }
  }
});
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
