// An edgefreeze bundle run with transformers.js, as the Python runtime runs it: the
// bundle's own tokenizer (unpadded, truncated to the manifest's max_length), the model
// file of one form with the ONNX Runtime settings the gate ran, and the same reading of
// the outputs. Works in Node (onnxruntime-node) and in the browser (onnxruntime-web).
//
//   import { loadBundle } from "./bundle.mjs";
//   const bundle = await loadBundle("/opt/model/current");   // or a URL in a browser
//   console.log(await bundle.predict("a moving, funny film"));
//   // { label: "fresh", probabilities: { rotten: 0.002, fresh: 0.998 } }
//   // a tagger: { tags: [...], entities: [{ type, text, start, end, score }], words_unread }

import {
  AutoModelForImageClassification,
  AutoModelForSequenceClassification,
  AutoModelForTokenClassification,
  AutoTokenizer,
  PreTrainedTokenizer,
  Tensor,
  env,
} from "@huggingface/transformers";

import { imageEncoder } from "./images.mjs";
import { decodeTags, splitWords } from "./tags.mjs";

// The transformers.js model class for each kind of inputs (the manifest's task.inputs).
const MODELS = {
  text: AutoModelForSequenceClassification,
  words: AutoModelForTokenClassification,
  image: AutoModelForImageClassification,
};

// How transformers.js loads each one-graph form, for bundles built before the manifest
// said so itself (its `javascript` record). Split forms are two graphs, which
// transformers.js does not chain.
const FORM_OPTIONS = {
  int8: { subfolder: "", model_file_name: "model.int8", dtype: "fp32" },
  fp32: { subfolder: "", model_file_name: "model", dtype: "fp32" },
  fp16: { subfolder: "", model_file_name: "model.fp16", dtype: "fp32" },
};

// A bundle folder (Node) or URL (browser) as transformers.js reads files from it: an
// absolute path or URL is not a hub model id, so it is used as it is (a relative name
// would be joined to env.localModelPath, and a folder whose name starts with a dot, as a
// build's staging folder does, would not load at all).
const IN_NODE = Boolean(globalThis.process?.versions?.node); // else a page or a worker

async function absolute(where) {
  const text = String(where).replace(/\/+$/, "");
  if (!IN_NODE) {
    const url = new URL(text, globalThis.location.href); // a path on the page's own server
    return url.origin === globalThis.location.origin ? url.pathname : url.href;
  }
  const { resolve } = await import("node:path");
  return resolve(text);
}

async function readJSON(folder, name) {
  if (IN_NODE) {
    const { readFile } = await import("node:fs/promises");
    return JSON.parse(await readFile(`${folder}/${name}`, "utf8"));
  }
  const response = await fetch(`${folder}/${name}`);
  if (!response.ok) throw new Error(`${folder}/${name}: HTTP ${response.status}`);
  return response.json();
}

// ONNX Runtime's session config entries ("optimization.disable_specified_optimizers")
// as its JavaScript API takes them: nested under `extra`.
export function sessionOptions(config) {
  const extra = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    const parts = key.split(".");
    let at = extra;
    for (const part of parts.slice(0, -1)) at = at[part] ??= {};
    at[parts.at(-1)] = value;
  }
  return { extra };
}

export function softmax(scores) {
  const top = Math.max(...scores);
  const exps = scores.map((score) => Math.exp(score - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

// One score per label for the whole input: softmax, then the best label.
export function decodeLabel(logits, labels) {
  const probabilities = softmax(logits);
  const best = probabilities.indexOf(Math.max(...probabilities));
  return {
    label: labels[best],
    probabilities: Object.fromEntries(labels.map((label, i) => [label, probabilities[i]])),
  };
}

// The special tokens the tokenizer adds around one text ([CLS] ... [SEP], <s> ... </s>),
// found by encoding a word with and without them, and the feed tensors from token ids.
function specials(tokenizer) {
  const ids = (text, add_special_tokens) =>
    Array.from(tokenizer(text, { add_special_tokens }).input_ids.data, Number);
  const bare = ids("a", false);
  const whole = ids("a", true);
  const at = whole.findIndex((_, i) => bare.every((id, j) => whole[i + j] === id));
  if (at < 0) throw new Error("cannot tell the tokenizer's special tokens from a word's");
  const typed = Boolean(tokenizer("a").token_type_ids);
  const tensor = (values) =>
    new Tensor("int64", BigInt64Array.from(values, BigInt), [1, values.length]);
  const feed = (kept) => ({
    input_ids: tensor(kept),
    attention_mask: tensor(kept.map(() => 1)),
    ...(typed ? { token_type_ids: tensor(kept.map(() => 0)) } : {}),
  });
  return { ids, prefix: whole.slice(0, at), suffix: whole.slice(at + bare.length), feed };
}

// The feed for one text as the Python runtime (Hugging Face tokenizers) makes it: unpadded,
// and truncated so that the special tokens stay: a long text keeps its closing [SEP] or
// </s>. (transformers.js 4.3 truncates after adding them, cutting the closing one off.)
export function encoder(tokenizer, maxLength) {
  const { ids, prefix, suffix, feed } = specials(tokenizer);
  const room = maxLength - prefix.length - suffix.length;
  return (text) => {
    if (typeof text !== "string") throw new TypeError("a text model takes text");
    const encoded = tokenizer(text);
    if (encoded.input_ids.dims[1] <= maxLength) return { feed: encoded };
    return { feed: feed([...prefix, ...ids(text, false).slice(0, room), ...suffix]) };
  };
}

// The feed for a sentence as words (a text split into words, or a list of words), each
// word tokenized alone as Hugging Face tokenizers do pre-split words, with the token where
// each word starts (-1 elsewhere), truncated as above.
export function wordEncoder(tokenizer, maxLength) {
  const { ids, prefix, suffix, feed } = specials(tokenizer);
  const room = maxLength - prefix.length - suffix.length;
  return (example) => {
    const split = splitWords(example);
    const pieces = [];
    const starts = [];
    split.words.forEach((word, index) => {
      ids(word, false).forEach((id, j) => {
        pieces.push(id);
        starts.push(j === 0 ? index : -1);
      });
    });
    const edge = (tokens) => tokens.map(() => -1);
    return {
      feed: feed([...prefix, ...pieces.slice(0, room), ...suffix]),
      wordStarts: [...edge(prefix), ...starts.slice(0, room), ...edge(suffix)],
      split,
    };
  };
}

// What turns one input into the model's feed, by the manifest's task.inputs: the bundle's
// tokenizer for texts and words (a bundle without tokenizer_config.json, a checkpoint
// saved with tokenizer.json alone, gets the base class, as transformers.js does for a class
// it does not know), its saved image-processor settings for images.
async function inputEncoder(location, manifest) {
  const { inputs } = manifest.task;
  if (inputs === "image") return imageEncoder(await readJSON(location, "preprocessor_config.json"));
  const tokenizer =
    "tokenizer_config.json" in manifest.files
      ? await AutoTokenizer.from_pretrained(location)
      : new PreTrainedTokenizer(await readJSON(location, "tokenizer.json"), {});
  return (inputs === "words" ? wordEncoder : encoder)(tokenizer, manifest.data.max_length);
}

// `threads`: ONNX Runtime's intra-op threads in Node (0: its default, one per core); in the
// browser, env.backends.onnx.wasm.numThreads decides.
export async function loadBundle(where, form = "int8", { threads = 0 } = {}) {
  const location = await absolute(where);
  const manifest = await readJSON(location, "manifest.json");
  const { inputs, outputs } = manifest.task;
  const options = manifest.javascript?.[form] ?? FORM_OPTIONS[form];
  if (!MODELS[inputs]) {
    throw new Error(`${location}: this runs bundles whose inputs are ${Object.keys(MODELS)}, not ${inputs}`);
  }
  const file = options && `${options.subfolder ? `${options.subfolder}/` : ""}${options.model_file_name}.onnx`;
  if (!file || !(file in manifest.files)) {
    throw new Error(`${location}: no ${form} model that transformers.js can load (one graph)`);
  }
  const { id2label } = await readJSON(location, "labels.json");
  const labels = Object.keys(id2label).map((_, i) => id2label[String(i)]);
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  const model = await MODELS[inputs].from_pretrained(location, {
    ...options, // dtype fp32: the file is named whole, no suffix for transformers.js to add
    session_options: {
      ...sessionOptions(manifest.runtime.session_config),
      ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
    },
  });
  const encode = await inputEncoder(location, manifest);
  const decode = (scores, encoded) =>
    outputs === "tags"
      ? decodeTags(scores, labels, encoded.wordStarts, encoded.split, softmax)
      : decodeLabel(scores, labels);

  // One input's token ids, the model's outputs for it (a row of label scores, or a row per
  // token) and the prediction read from them.
  const run = async (example) => {
    const encoded = await encode(example);
    const { logits } = await model(encoded.feed);
    const scores = logits.tolist()[0];
    const ids = encoded.feed.input_ids ? Array.from(encoded.feed.input_ids.data, Number) : [];
    return { ids, logits: scores, prediction: decode(scores, encoded) };
  };
  return {
    manifest,
    labels,
    run,
    predict: async (example) => (await run(example)).prediction,
  };
}

// Every input run in turn: its token ids, outputs, reading and time (tokenizing included).
export async function runAll(bundle, examples) {
  const results = [];
  for (const example of examples) {
    const started = performance.now();
    const { ids, logits, prediction } = await bundle.run(example);
    results.push({ ids, logits, prediction, ms: performance.now() - started });
  }
  return results;
}
