// The page script of check.html: run the bundle at ?bundle= (a URL path) in form ?form=
// over /inputs.json with ONNX Runtime Web's WebAssembly backend on one thread (the
// browser's CPU path), and post every input's token ids, logits and time (ms) to /results.

import { env } from "@huggingface/transformers";

import { loadBundle } from "./bundle.mjs";

const query = new URLSearchParams(location.search);
const post = (path, body) =>
  fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body });

try {
  env.backends.onnx.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  env.backends.onnx.wasm.numThreads = 1;
  const bundle = await loadBundle(query.get("bundle"), query.get("form"));
  const examples = await (await fetch("/inputs.json")).json();
  const results = [];
  for (const example of examples) {
    const started = performance.now();
    const { ids, logits, prediction } = await bundle.run(example);
    results.push({ ids, logits, prediction, ms: performance.now() - started });
  }
  const versions = { transformers_js: env.version, onnxruntime: env.backends.onnx.versions?.web };
  await post("/results", JSON.stringify({ results, versions }));
} catch (error) {
  await post("/error", JSON.stringify({ message: String(error?.message ?? error) }));
}
