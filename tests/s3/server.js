// Local S3-compatible server for the tests: s3rver on 127.0.0.1.
// Usage: node --openssl-legacy-provider server.js PORT DIRECTORY BUCKET   (PORT 0: any port)
// (s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps in
// its legacy provider: without the flag, listings of more than 1000 keys fail.)
// Prints "ready PORT" once it accepts requests. Credentials: S3RVER / S3RVER.
// Virtual-host requests are accepted as BUCKET.s3.localhost:PORT.
// With S3RVER_TLS_KEY and S3RVER_TLS_CERT (PEM files) it speaks HTTPS.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const S3rver = require('s3rver');
const FilesystemStore = require('s3rver/lib/stores/filesystem');

// A PUT is stored whole or not at all, as S3 stores it. s3rver writes the body
// straight into the object's file, so a client killed in the middle of a PUT
// left a truncated object that later readers found (catalog_delta's kill -9 of
// a writer did, once). The body goes to a file beside it here, renamed into
// place only once all of its Content-Length arrived.
const storeOther = FilesystemStore.prototype.putObject;
FilesystemStore.prototype.putObject = async function putObject(object) {
  // (a multipart upload's completion joins parts already stored: as s3rver does)
  if (!(object.content instanceof http.IncomingMessage)) return storeOther.call(this, object);
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  const part = `${objectPath}.part-${crypto.randomBytes(6).toString('hex')}`;
  const md5 = crypto.createHash('md5');
  let size = 0;
  fs.mkdirSync(path.dirname(objectPath), { recursive: true });
  try {
    await new Promise((resolve, reject) => {
      const req = object.content;
      const out = fs.createWriteStream(part);
      req.on('data', (chunk) => {
        md5.update(chunk);
        size += chunk.length;
      });
      req.on('error', reject);
      req.on('close', () => req.complete || reject(new Error('request body cut short')));
      out.on('error', reject);
      out.on('finish', resolve);
      req.pipe(out);
    });
    if (!Number.isNaN(object.size) && size !== object.size) throw new Error('request body cut short');
    fs.renameSync(part, objectPath);
  } catch (err) {
    fs.rmSync(part, { force: true });
    throw err;
  }
  const digest = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
};

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
