// ONNX Runtime (npm onnxruntime-node) forward throughput on an ONNX model, for bench/forward.sh.
// Usage: node forward_ort.js MODEL.onnx INPUT.f32 BATCH REPS THREADS OUT.f32
// INPUT.f32: raw little-endian float32 (BATCH, 3, S, S); OUT.f32 gets the first output for that input.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, input, batchS, repsS, threadsS, out] = process.argv.slice(2);
  const batch = +batchS, reps = +repsS, threads = +threadsS;
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all'});
  const buf = fs.readFileSync(input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const side = Math.round(Math.sqrt(data.length / (3 * batch)));
  const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', data, [batch, 3, side, side])};
  let result = await session.run(feeds); // warm-up
  const times = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    result = await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  const med = times[Math.floor(reps / 2)], best = times[0];
  const y = result[session.outputNames[0]].data;
  fs.writeFileSync(out, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  console.log(JSON.stringify({
    engine: 'ONNX Runtime ' + ort.env.versions.node + ' (onnxruntime-node)', batch, reps,
    ms_per_image: +(1e3 * med / batch).toFixed(2), images_per_s: +(batch / med).toFixed(2),
    best_images_per_s: +(batch / best).toFixed(2),
    cpu_ms_per_image: +((cpu.user + cpu.system) / 1e3 / (reps * batch)).toFixed(2),
    peak_rss_mb: +(process.resourceUsage().maxRSS / 1024).toFixed(1)}));
}
main().catch((e) => { console.error(e); process.exit(1); });
