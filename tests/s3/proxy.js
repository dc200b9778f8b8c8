// Fault-injecting HTTP proxy for the S3 tests, on 127.0.0.1 only.
// Usage: node proxy.js UPSTREAM_PORT   (prints "ready PORT")
//
// Every request is forwarded to 127.0.0.1:UPSTREAM_PORT unless a fault is
// queued. Control requests (never forwarded):
//   GET /__fault?plan=a,b,c   the next requests get these faults, in order
//   GET /__fault?always=X     every request gets fault X until the next plan
//   GET /__count              number of requests seen (control excluded)
// Faults: pass, drop (close the connection without an answer), 500, 503,
// 429, stall (answer nothing, keep the connection open), cut (forward the
// answer's headers and half its body, then close), slow (forward, but hold
// the answer's body back for 3 s before sending it).
'use strict';
const http = require('http');

const upstreamPort = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true });
let plan = [];
let always = null;
let count = 0;
const stalled = new Set();

function fault() {
  if (always) return always;
  return plan.length ? plan.shift() : 'pass';
}

function forward(req, res, mode) {
  const up = http.request(
    { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers, agent },
    (ures) => {
      res.writeHead(ures.statusCode, ures.headers);
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
    },
  );
  up.on('error', () => res.socket && res.socket.destroy());
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/__fault') {
    plan = url.searchParams.get('plan') ? url.searchParams.get('plan').split(',') : [];
    always = url.searchParams.get('always');
    for (const s of stalled) s.destroy();
    stalled.clear();
    res.end('ok\n');
    return;
  }
  if (url.pathname === '/__count') {
    res.end(`${count}\n`);
    return;
  }
  count++;
  const mode = fault();
  switch (mode) {
    case 'drop':
      req.socket.destroy();
      return;
    case '500':
    case '503':
    case '429': {
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
    default:
      forward(req, res, mode);
  }
});
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
