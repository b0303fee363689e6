// The page script of check.html: run the bundle at ?bundle= (a URL path) in form ?form=
// over PREFIX/inputs.json (?post= is PREFIX) with ONNX Runtime Web's WebAssembly backend on
// one thread (the browser's CPU path), and post every input's token ids, outputs, reading
// and time (ms) to PREFIX/results, or the first line of what failed to PREFIX/error.

const query = new URLSearchParams(location.search);
const prefix = query.get("post") ?? "";
const post = (path, body) =>
  fetch(`${prefix}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

try {
  // Imported here, not at the top: a package that fails to load is reported, not a hang.
  const { env } = await import("@huggingface/transformers");
  const { loadBundle, runAll } = await import("./bundle.mjs");
  env.backends.onnx.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  env.backends.onnx.wasm.numThreads = 1;
  const bundle = await loadBundle(query.get("bundle"), query.get("form"));
  const examples = await (await fetch(`${prefix}/inputs.json`)).json();
  const results = await runAll(bundle, examples);
  const versions = { transformers_js: env.version, onnxruntime: env.backends.onnx.versions?.web };
  await post("/results", { results, versions });
} catch (error) {
  await post("/error", { message: String(error?.message ?? error) || "the page failed" });
}
