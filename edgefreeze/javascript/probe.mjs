// What `edgefreeze verify-target --node` runs: a bundle's model form over given inputs in
// Node with transformers.js, writing each input's token ids, outputs and time (tokenizing
// and running, ms), and the versions that ran them.
//
//   node probe.mjs BUNDLE FORM INPUTS.json OUTPUTS.json [THREADS]

import { readFileSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import { arch } from "node:process";

import { loadBundle, runAll } from "./bundle.mjs";

const [bundlePath, form, inputsPath, outputsPath, threads = "0"] = process.argv.slice(2);
// The packages' own package.json (transformers.js does not export it as a module).
const versionOf = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;

try {
  const bundle = await loadBundle(bundlePath, form, { threads: Number(threads) });
  const examples = JSON.parse(await readFile(inputsPath, "utf8"));
  const results = await runAll(bundle, examples);
  await writeFile(`${outputsPath}.partial`, JSON.stringify(results));
  await rename(`${outputsPath}.partial`, outputsPath);
  console.log(
    JSON.stringify({
      machine: arch,
      node: process.versions.node,
      transformers_js: versionOf("@huggingface/transformers"),
      onnxruntime: versionOf("onnxruntime-node"),
    }),
  );
} catch (error) {
  console.error(String(error?.message ?? error).split("\n")[0] || "the probe failed");
  process.exit(2);
}
