// The page's device mode: the map of a photo computed in this browser by onnxruntime-web (WebGPU where the browser
// offers an adapter, else WASM with SIMD and threads), from the network the server (or the static site) serves as
// ONNX at its input size. Nothing leaves the device: the photo is decoded, resized, run and drawn here. The
// arithmetic is predict.py's (data/transforms.py): the photo upright by its EXIF orientation, resized to the
// network's square input as skimage resizes (bilinear, mirrored borders, no anti-aliasing) in float64, ImageNet
// normalisation, the sigmoid map upsampled to the photo's size as PyTorch does (bilinear, align_corners=False) in
// float32, times 255, truncated. Where the browser's decoder differs from OpenCV's (JPEG's inverse DCT and chroma
// upsampling), the input differs by a grey level or so at single pixels; PNG decodes to the same pixels.

const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

// Source taps of each output sample along one axis, as data/transforms.py's _axis_taps (numpy 'reflect' borders).
function axisTaps(sizeIn, sizeOut) {
  const low = new Int32Array(sizeOut), high = new Int32Array(sizeOut), weight = new Float64Array(sizeOut);
  const last = sizeIn - 1;
  for (let i = 0; i < sizeOut; i++) {
    const coord = (i + 0.5) * (sizeIn / sizeOut) - 0.5;
    const floor = Math.floor(coord);
    weight[i] = coord - floor;
    if (sizeIn === 1) continue;
    low[i] = floor < 0 ? -floor : floor;
    high[i] = floor + 1 > last ? 2 * last - (floor + 1) : floor + 1;
  }
  return {low, high, weight};
}

// RGBA pixels (width x height) -> the network's input (1, 3, size, size), float32, ImageNet-normalised.
export function networkInput(rgba, width, height, size) {
  const rows = axisTaps(height, size), columns = axisTaps(width, size);
  const out = new Float32Array(3 * size * size);
  const at = (y, x, c) => rgba[4 * (y * width + x) + c] / 255;
  for (let i = 0; i < size; i++) {
    const wy = rows.weight[i], y0 = rows.low[i], y1 = rows.high[i];
    for (let j = 0; j < size; j++) {
      const wx = columns.weight[j], x0 = columns.low[j], x1 = columns.high[j];
      for (let c = 0; c < 3; c++) {
        // rows first, then columns, as skimage and data/transforms.py interpolate
        const left = at(y0, x0, c) * (1 - wy) + at(y1, x0, c) * wy;
        const right = at(y0, x1, c) * (1 - wy) + at(y1, x1, c) * wy;
        const value = left * (1 - wx) + right * wx;
        out[c * size * size + i * size + j] = (value - MEAN[c]) / STD[c];
      }
    }
  }
  return out;
}

// Float32 taps of PyTorch's bilinear upsampling (align_corners=False) along one axis.
function upsampleTaps(sizeIn, sizeOut) {
  const f = Math.fround, scale = f(sizeIn / sizeOut);
  const low = new Int32Array(sizeOut), high = new Int32Array(sizeOut), weight = new Float32Array(sizeOut);
  for (let i = 0; i < sizeOut; i++) {
    const source = Math.max(f(f(scale * f(i + 0.5)) - 0.5), 0);
    low[i] = Math.floor(source);
    high[i] = low[i] + (low[i] < sizeIn - 1 ? 1 : 0);
    weight[i] = f(source - low[i]);
  }
  return {low, high, weight};
}

// The (size x size) sigmoid map -> its 8-bit map at width x height, as data/transforms.saliency_to_uint8.
export function mapToUint8(saliency, size, width, height) {
  const f = Math.fround, out = new Uint8ClampedArray(width * height);
  if (width === size && height === size) {
    for (let k = 0; k < out.length; k++) out[k] = Math.trunc(f(saliency[k] * 255));
    return out;
  }
  const rows = upsampleTaps(size, height), columns = upsampleTaps(size, width);
  for (let i = 0; i < height; i++) {
    const h1 = rows.weight[i], h0 = f(1 - h1), r0 = rows.low[i] * size, r1 = rows.high[i] * size;
    for (let j = 0; j < width; j++) {
      const w1 = columns.weight[j], w0 = f(1 - w1), c0 = columns.low[j], c1 = columns.high[j];
      const top = f(f(w0 * saliency[r0 + c0]) + f(w1 * saliency[r0 + c1]));
      const bottom = f(f(w0 * saliency[r1 + c0]) + f(w1 * saliency[r1 + c1]));
      out[i * width + j] = Math.trunc(f(f(f(h0 * top) + f(h1 * bottom)) * 255));
    }
  }
  return out;
}

// The photo's RGBA pixels, upright by its EXIF orientation, without colour management (as OpenCV decodes).
export async function decode(file) {
  const bitmap = await createImageBitmap(file, {imageOrientation: "from-image", colorSpaceConversion: "none",
                                                premultiplyAlpha: "none"});
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return {rgba: pixels, width: bitmap.width, height: bitmap.height, bitmap};
}

// A loaded network. ``run(rgba, width, height)``: the 8-bit map of an image and the seconds of each step (a video
// model sees it as a still clip, its last map kept, as predict.py and the server do). A video model's clips:
// ``prepare(rgba, width, height)`` gives one frame's input, ``runClip(inputs, width, height)`` the map of the last
// of ``frames`` prepared frames. ``threads``: WASM threads (default: the cores, at most 4, where the page is
// cross-origin isolated, else 1); ``webgpu``: false keeps to WASM where the browser offers WebGPU.
export async function loadNetwork(modelBytes, size, {threads = null, webgpu = true, frames = 1} = {}) {
  let adapter = null;
  if (webgpu && navigator.gpu) {
    try { adapter = await navigator.gpu.requestAdapter(); } catch (err) { adapter = null; }
  }
  const ort = await import(adapter ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  threads = crossOriginIsolated ? Math.max(1, threads || Math.min(navigator.hardwareConcurrency || 1, 4)) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = !adapter;  // WASM in a worker of its own: the page stays responsive while a map is computed
  const session = await ort.InferenceSession.create(modelBytes, {executionProviders: [adapter ? "webgpu" : "wasm"],
                                                                 graphOptimizationLevel: "all"});
  const gpu = adapter && adapter.info ? [adapter.info.vendor, adapter.info.architecture].filter(Boolean).join(" ") : "";
  const runtime = adapter ? `WebGPU${gpu ? ` (${gpu})` : ""}` : `WASM (SIMD, ${threads} thread${threads > 1 ? "s" : ""}` +
    (crossOriginIsolated ? ")" : ": this page is not cross-origin isolated, its host sends no COOP/COEP headers)");
  const input = session.inputNames[0], output = session.outputNames[0], plane = 3 * size * size;
  const prepare = (rgba, width, height) => networkInput(rgba, width, height, size);
  async function runClip(inputs, width, height) {
    const started = performance.now();
    const data = new Float32Array(frames * plane);
    inputs.forEach((x, t) => data.set(x, t * plane));
    const tensor = new ort.Tensor("float32", data, [1, 3 * frames, size, size]);
    const prepared = performance.now();
    const result = await session.run({[input]: tensor});
    const ran = performance.now();
    const last = result[output].data.subarray((frames - 1) * size * size, frames * size * size);
    const map = mapToUint8(last, size, width, height);
    const done = performance.now();
    return {map, seconds: {prepare: (prepared - started) / 1000, network: (ran - prepared) / 1000,
                           upsample: (done - ran) / 1000, total: (done - started) / 1000}};
  }
  return {
    runtime, threads, size, frames, prepare, runClip,
    async run(rgba, width, height) {
      const started = performance.now();
      const x = prepare(rgba, width, height);
      const answer = await runClip(Array(frames).fill(x), width, height);
      answer.seconds.prepare += (performance.now() - started) / 1000 - answer.seconds.total;
      answer.seconds.total = (performance.now() - started) / 1000;
      return answer;
    },
  };
}
