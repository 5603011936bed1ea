// Runs an ONNX model in ONNX Runtime (npm onnxruntime-node, installed in bench/node_modules) for
// tools/export_check.py. Usage: node export_check_ort.js MODEL.onnx INPUT.f32 N C H W
// INPUT.f32: raw little-endian float32 (N, C, H, W). Prints {"runtime", "outputs": {name: {"dims", "data"}},
// "metadata": {...}} as JSON on stdout.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, '..', 'bench', 'node_modules', 'onnxruntime-node'));

async function main() {
  const [model, input, ...dims] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model, {graphOptimizationLevel: 'all'});
  const buf = fs.readFileSync(input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', data, dims.map(Number))};
  const result = await session.run(feeds);
  const outputs = {};
  for (const name of session.outputNames)
    outputs[name] = {dims: result[name].dims, data: Array.from(result[name].data)};
  let metadata = {};
  try { metadata = session.handler.metadata || {}; } catch (e) { metadata = {}; }
  console.log(JSON.stringify({runtime: 'ONNX Runtime ' + ort.env.versions.node, outputs, metadata}));
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
