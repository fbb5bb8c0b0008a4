// Drives node ali-oss's multipartUpload against the emulator, for tests/test_emulator_ali_oss.py.
//
// Usage: node ali_oss_driver.js '<JSON options>'
//   endpoint, bucket, key, file, accessKeyId, accessKeySecret, region,
//   mode: "default" | "cname" | "sld", v4: bool, partSize, parallel,
//   checkpointPath: the JSON file the checkpoint is saved to after every part,
//   phase: "upload" (fresh, cancelled once cancelAfterParts parts are done) or
//          "resume" (read checkpointPath, pass it as `checkpoint`, run to the end).
// Prints one JSON line on stdout: {"result": "cancelled"|"completed", ...}; exits 0 for both,
// 1 with the error on stderr for anything else. ali-oss is found through NODE_PATH.
'use strict';

const fs = require('fs');
const OSS = require('ali-oss');

function client(opts) {
  const config = {
    endpoint: opts.endpoint,
    accessKeyId: opts.accessKeyId,
    accessKeySecret: opts.accessKeySecret,
    region: opts.region,
    bucket: opts.bucket,
    authorizationV4: opts.v4,
    timeout: 20000,
  };
  if (opts.mode === 'cname') config.cname = true;
  if (opts.mode === 'sld') config.sldEnable = true;
  return new OSS(config);
}

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const oss = client(opts);
  let done = 0;
  const options = {
    parallel: opts.parallel,
    partSize: opts.partSize,
    progress: async (fraction, checkpoint) => {
      if (!checkpoint) return;
      // written whole then renamed: a half-written checkpoint never replaces a good one
      fs.writeFileSync(`${opts.checkpointPath}.tmp`, JSON.stringify(checkpoint));
      fs.renameSync(`${opts.checkpointPath}.tmp`, opts.checkpointPath);
      done = checkpoint.doneParts.length;
      if (opts.phase === 'upload' && done >= opts.cancelAfterParts) oss.cancel();
    },
  };
  if (opts.phase === 'resume') {
    options.checkpoint = JSON.parse(fs.readFileSync(opts.checkpointPath, 'utf8'));
  }
  try {
    const result = await oss.multipartUpload(opts.key, opts.file, options);
    const saved = JSON.parse(fs.readFileSync(opts.checkpointPath, 'utf8'));
    console.log(JSON.stringify({
      result: 'completed',
      status: result.res.status,
      uploadId: saved.uploadId,
      doneParts: saved.doneParts.length,
    }));
  } catch (err) {
    if (oss.isCancel()) {
      const saved = JSON.parse(fs.readFileSync(opts.checkpointPath, 'utf8'));
      console.log(JSON.stringify({
        result: 'cancelled',
        uploadId: saved.uploadId,
        doneParts: saved.doneParts.length,
      }));
      return;
    }
    throw err;
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.code || ''} ${err.message}`);
  process.exit(1);
});
