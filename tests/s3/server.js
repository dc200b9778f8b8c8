// Local S3-compatible server for the tests: s3rver on 127.0.0.1.
// Usage: node --openssl-legacy-provider server.js PORT DIRECTORY BUCKET   (PORT 0: any port)
// (s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps in
// its legacy provider: without the flag, listings of more than 1000 keys fail.)
// Prints "ready PORT" once it accepts requests. Credentials: S3RVER / S3RVER.
// Virtual-host requests are accepted as BUCKET.s3.localhost:PORT.
// With S3RVER_TLS_KEY and S3RVER_TLS_CERT (PEM files) it speaks HTTPS.
'use strict';
const fs = require('fs');
const S3rver = require('s3rver');

const [port, directory, bucket] = process.argv.slice(2);
if (!port || !directory || !bucket) {
  console.error('usage: node server.js PORT DIRECTORY BUCKET');
  process.exit(2);
}
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  serviceEndpoint: 'localhost',
  configureBuckets: [{ name: bucket }],
  ...(process.env.S3RVER_TLS_KEY && {
    key: fs.readFileSync(process.env.S3RVER_TLS_KEY),
    cert: fs.readFileSync(process.env.S3RVER_TLS_CERT),
  }),
});
server.run().then(
  (addr) => console.log(`ready ${addr.port}`),
  (err) => {
    console.error(`s3rver: ${err.message}`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close().then(() => process.exit(0)));
