// Token classification in JavaScript: a tagger bundle's entities in texts given as
// arguments, one JSON line each. The text is split into words as the Python runtime
// splits it; `start` and `end` are UTF-16 offsets, so `text.slice(start, end)` is the
// entity's text (Python's `edgefreeze predict` counts code points instead).
//
//   make js
//   edgefreeze build examples/films-ner.yaml   # the bundle: models/films-ner/v1
//   node examples/javascript/tag.mjs models/films-ner/v1 "I loved The Dark Knight."
//   {"text":"I loved The Dark Knight.","tags":["O","O","B-FILM",...],"entities":[...]}

import { loadBundle } from "../../edgefreeze/javascript/bundle.mjs";

const [folder, ...texts] = process.argv.slice(2);
const bundle = await loadBundle(folder);
for (const text of texts) {
  const { tags, entities, words_unread } = await bundle.predict(text);
  console.log(JSON.stringify({ text, tags, entities, words_unread }));
  for (const { type, start, end } of entities) {
    console.error(`${type}\t${text.slice(start, end)}\t@${start}`);
  }
}
