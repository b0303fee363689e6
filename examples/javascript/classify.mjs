// Classification in JavaScript: a bundle's int8 model over texts (or, for an image
// bundle, image paths) given as arguments, one JSON line each, as `edgefreeze predict
// BUNDLE INPUT --json` prints them. Images are resized as Pillow resizes them, so the
// model sees the pixels the gate measured.
//
//   make js                                   # transformers.js, from the lock file
//   edgefreeze build examples/reviews.yaml    # the bundle: models/reviews/v1
//   node examples/javascript/classify.mjs models/reviews/v1 "a moving, funny film"
//   {"text":"a moving, funny film","label":"positive","probabilities":{...}}
//   node examples/javascript/classify.mjs models/digits/v1 examples/digits/7/0007.png
//
// In an app, copy edgefreeze/javascript/bundle.mjs and tags.mjs beside your code and
// install @huggingface/transformers at the version in edgefreeze/javascript/package.json.

import { loadBundle } from "../../edgefreeze/javascript/bundle.mjs";

const [folder, ...texts] = process.argv.slice(2);
const bundle = await loadBundle(folder); // int8; loadBundle(folder, "fp32") for the other
for (const text of texts) {
  console.log(JSON.stringify({ text, ...(await bundle.predict(text)) }));
}
