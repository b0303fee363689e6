// Word-labelling bundles (token classification) as the Python runtime reads them
// (edgefreeze/runtime/inputs.py WordInputs, outputs.py TagOutputs): a text split into
// words and punctuation marks, each word's tag read at its first token, and runs of tags
// read as entities by conlleval's rules, with character offsets into the text.

// A word or a punctuation mark, as Python's r"\w+(?:[-'’.]\w+)*|[^\w\s]" matches them.
// Python's \w: letters, digits and the underscore, in any script; its \s is not
// JavaScript's (it has \x1c-\x1f and \x85; JavaScript's has the byte-order mark), so it is
// spelled out. Characters newer than Python's Unicode tables may still split otherwise.
const SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WORD = new RegExp(
  `[\\p{L}\\p{N}_]+(?:[-'’.][\\p{L}\\p{N}_]+)*|[^\\p{L}\\p{N}_${SPACE}]`,
  "gu",
);

// Words and their [start, end) offsets (UTF-16, as JavaScript strings index): in a text,
// or in a list of words joined by single spaces.
export function splitWords(example) {
  if (typeof example === "string") {
    const found = [...example.matchAll(WORD)];
    return {
      text: example,
      words: found.map((m) => m[0]),
      spans: found.map((m) => [m.index, m.index + m[0].length]),
    };
  }
  if (Array.isArray(example) && example.every((word) => typeof word === "string")) {
    let at = 0;
    const spans = example.map((word) => {
      const span = [at, at + word.length];
      at += word.length + 1;
      return span;
    });
    return { text: example.join(" "), words: [...example], spans };
  }
  throw new TypeError("a word-labelling model takes a text or a list of words");
}

// (type, first, last) word of each entity, by conlleval's chunk rules (IOB1, IOB2 and
// BIOES alike), as edgefreeze.runtime.outputs.entity_runs reads them.
export function entityRuns(tags) {
  const runs = [];
  let [previous, previousType, begin] = ["O", "", 0];
  [...tags, "O"].forEach((tag, i) => {
    const [prefix, kind] = tag === "O" ? ["O", ""] : [tag[0], tag.slice(2)];
    if (
      "ES".includes(previous) ||
      ("BI".includes(previous) && "BSO".includes(prefix)) ||
      (previous !== "O" && previousType !== kind)
    ) {
      runs.push([previousType, begin, i - 1]);
    }
    if (
      "BS".includes(prefix) ||
      ("ESO".includes(previous) && "EI".includes(prefix)) ||
      (prefix !== "O" && previousType !== kind)
    ) {
      begin = i;
    }
    [previous, previousType] = [prefix, kind];
  });
  return runs;
}

// One input's tags and entities from the model's scores (tokens x labels), the token
// where each word starts (-1 elsewhere) and the words' spans in the text.
export function decodeTags(scores, labels, wordStarts, split, softmax) {
  const positions = wordStarts.flatMap((word, position) => (word >= 0 ? [position] : []));
  const read = positions.length ? Math.max(...positions.map((p) => wordStarts[p])) + 1 : 0;
  const tags = Array(read).fill("O");
  const confidence = Array(read).fill(1);
  for (const position of positions) {
    const probabilities = softmax(scores[position]);
    const best = probabilities.indexOf(Math.max(...probabilities));
    tags[wordStarts[position]] = labels[best];
    confidence[wordStarts[position]] = probabilities[best];
  }
  const entities = entityRuns(tags).map(([type, first, last]) => {
    const [start, end] = [split.spans[first][0], split.spans[last][1]];
    const mean = confidence.slice(first, last + 1).reduce((a, b) => a + b, 0) / (last - first + 1);
    const score = Math.round(mean * 1e6) / 1e6; // as the Python runtime rounds it
    return { type, text: split.text.slice(start, end), start, end, score };
  });
  return { tags, entities, words_unread: split.spans.length - read };
}
