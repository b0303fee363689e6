// Image bundles as the Python runtime reads them (edgefreeze/runtime/images.py): the image
// as 8-bit RGB, resized with Pillow's own resampling (its filters, its fixed-point
// arithmetic, horizontal then vertical), centre-cropped as transformers crops, scaled and
// normalized in float32, from the bundle's preprocessor_config.json. transformers.js's own
// processors resize with sharp or a canvas, whose pixels differ from Pillow's.

import { RawImage, Tensor } from "@huggingface/transformers";

const PRECISION_BITS = 32 - 8 - 2; // Pillow's Resample.c
const ONE = 2 ** PRECISION_BITS;

const sinc = (x) => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));
// Pillow's resampling filters by its resample codes, with their supports.
const FILTERS = {
  1: [3, (x) => (x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0)], // LANCZOS
  2: [1, (x) => Math.max(0, 1 - Math.abs(x))], // BILINEAR
  3: [
    2,
    (x) => {
      const a = -0.5; // BICUBIC
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  ],
  4: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1 : 0)], // BOX
  5: [
    1,
    (x) => {
      x = Math.abs(x); // HAMMING
      if (x === 0) return 1;
      if (x >= 1) return 0;
      return (Math.sin(Math.PI * x) / (Math.PI * x)) * (0.54 + 0.46 * Math.cos(Math.PI * x));
    },
  ],
};

// For each output pixel: the first input pixel, the count, and the fixed-point weights.
function coefficients(inSize, outSize, [support, filter]) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const reach = support * filterScale;
  return Array.from({ length: outSize }, (_, xx) => {
    const center = (xx + 0.5) * scale;
    const min = Math.max(Math.trunc(center - reach + 0.5), 0);
    const count = Math.min(Math.trunc(center + reach + 0.5), inSize) - min;
    const weights = Array.from({ length: count }, (_, x) => filter((x + min - center + 0.5) / filterScale));
    const total = weights.reduce((a, b) => a + b, 0);
    const fixed = weights.map((w) => {
      const k = total !== 0 ? w / total : w;
      return Math.trunc(k < 0 ? -0.5 + k * ONE : 0.5 + k * ONE);
    });
    return { min, fixed };
  });
}

const clip8 = (sum) => Math.min(255, Math.max(0, Math.floor(sum / ONE)));

// One pass along an axis of an RGB image (Uint8 data, row-major): Pillow's 8-bit pass.
function pass(data, width, height, outSize, filter, horizontal) {
  const [outW, outH] = horizontal ? [outSize, height] : [width, outSize];
  const out = new Uint8Array(outW * outH * 3);
  const coeffs = coefficients(horizontal ? width : height, outSize, filter);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { min, fixed } = coeffs[horizontal ? x : y];
      for (let c = 0; c < 3; c++) {
        let sum = ONE / 2;
        for (let i = 0; i < fixed.length; i++) {
          const at = horizontal ? (y * width + min + i) * 3 : ((min + i) * width + x) * 3;
          sum += data[at + c] * fixed[i];
        }
        out[(y * outW + x) * 3 + c] = clip8(sum);
      }
    }
  }
  return { data: out, width: outW, height: outH };
}

// Pillow's Image.resize(size, resample) of an RGB image {data, width, height}.
export function pillowResize(image, width, height, resample) {
  const filter = FILTERS[resample];
  if (!filter) throw new Error(`resample ${resample} (Pillow's code) is not supported here`);
  let out = image;
  if (width !== out.width) out = pass(out.data, out.width, out.height, width, filter, true);
  if (height !== out.height) out = pass(out.data, out.width, out.height, height, filter, false);
  return out;
}

// transformers' centre crop: an image smaller than the crop is first centred on black
// (its padding rounds up); the top-left corner rounds down.
export function centreCrop(image, height, width) {
  if (image.height < height || image.width < width) {
    const [w, h] = [Math.max(width, image.width), Math.max(height, image.height)];
    const canvas = new Uint8Array(w * h * 3);
    const [left, top] = [Math.ceil((w - image.width) / 2), Math.ceil((h - image.height) / 2)];
    for (let y = 0; y < image.height; y++) {
      const row = image.data.subarray(y * image.width * 3, (y + 1) * image.width * 3);
      canvas.set(row, ((y + top) * w + left) * 3);
    }
    image = { data: canvas, width: w, height: h };
  }
  const [top, left] = [Math.floor((image.height - height) / 2), Math.floor((image.width - width) / 2)];
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const start = ((y + top) * image.width + left) * 3;
    out.set(image.data.subarray(start, start + width * 3), y * width * 3);
  }
  return { data: out, width, height };
}

// The processor's settings as edgefreeze.runtime.images.Preprocessing reads them.
export function preprocessing(settings) {
  let size = settings.do_resize === false ? null : settings.size ?? null;
  if (typeof size === "number") size = { height: size, width: size };
  const cropSize = settings.crop_size;
  const crop =
    settings.do_center_crop && cropSize
      ? typeof cropSize === "number"
        ? [cropSize, cropSize]
        : [cropSize.height, cropSize.width]
      : null;
  const normalize = settings.do_normalize !== false;
  return {
    size,
    resample: Number(settings.resample ?? 2),
    crop,
    cropPct: size && "shortest_edge" in size ? (settings.crop_pct ?? null) : null,
    scale: settings.do_rescale === false ? null : (settings.rescale_factor ?? 1 / 255),
    mean: normalize ? settings.image_mean : null,
    std: normalize ? settings.image_std : null,
  };
}

function resized(image, steps) {
  const { size, resample, cropPct } = steps;
  if (!size) return image;
  if (!("shortest_edge" in size)) return pillowResize(image, size.width, size.height, resample);
  const edge = size.shortest_edge;
  if (cropPct !== null && edge >= 384) return pillowResize(image, edge, edge, resample);
  const short = cropPct !== null ? Math.trunc(edge / cropPct) : edge;
  const [w, h] =
    image.width <= image.height
      ? [short, Math.trunc((short * image.height) / image.width)]
      : [Math.trunc((short * image.width) / image.height), short];
  const out = pillowResize(image, w, h, resample);
  return cropPct !== null ? centreCrop(out, edge, edge) : out;
}

// An image (a path in Node, a URL in a page) as the model's (1, 3, height, width) pixels.
export async function imageEncoder(settings) {
  const steps = preprocessing(settings);
  return async (source) => {
    const raw = (await RawImage.read(source)).rgb();
    let image = resized({ data: raw.data, width: raw.width, height: raw.height }, steps);
    if (steps.crop) image = centreCrop(image, ...steps.crop);
    const { width, height } = image;
    const pixels = new Float32Array(3 * width * height);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < width * height; i++) {
        let value = image.data[i * 3 + c];
        if (steps.scale !== null) value = Math.fround(value * steps.scale);
        if (steps.mean) value = Math.fround(Math.fround(value - Math.fround(steps.mean[c])) / Math.fround(steps.std[c]));
        pixels[c * width * height + i] = value;
      }
    }
    return { feed: { pixel_values: new Tensor("float32", pixels, [1, 3, height, width]) } };
  };
}
