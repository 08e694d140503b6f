// The images the page shows and downloads, drawn from a photo's pixels and its 8-bit map alike in both modes:
// the overlay (predict.py's: OpenCV's JET half-and-half over the photo) and the cut-out (the map as alpha, or a
// hard mask at a threshold, its edge feathered, over a colour, an image or a blur of the photo).
// The pixels of an image (a file or a URL), upright by its EXIF orientation, without colour management.
async function pixelsOf(source) {
  const blob = source instanceof Blob ? source : await (await fetch(source)).blob();
  const bitmap = await createImageBitmap(blob, {imageOrientation: "from-image", colorSpaceConversion: "none",
                                                premultiplyAlpha: "none"});
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  return {rgba: context.getImageData(0, 0, bitmap.width, bitmap.height).data, width: bitmap.width,
          height: bitmap.height};
}

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function imageUrl(rgba, width, height, type = "image/png") {
  const canvas = canvasOf(width, height);
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
  return canvas.toDataURL(type, 0.95);
}

// OpenCV's JET colour map (cv2.COLORMAP_JET).
function jet(v) {
  const channel = offset => Math.round(255 * Math.min(Math.max(1.5 - Math.abs(4 * v / 255 - offset), 0), 1));
  return [channel(3), channel(2), channel(1)];
}

function overlayUrl(item) {
  const out = new Uint8ClampedArray(item.rgba.length);
  for (let k = 0; k < item.map.length; k++) {
    const [r, g, b] = jet(item.map[k]);
    out[4 * k] = (item.rgba[4 * k] + r) >> 1;
    out[4 * k + 1] = (item.rgba[4 * k + 1] + g) >> 1;
    out[4 * k + 2] = (item.rgba[4 * k + 2] + b) >> 1;
    out[4 * k + 3] = 255;
  }
  return imageUrl(out, item.width, item.height, "image/jpeg");
}

// The cut-out: the photo with the map as alpha (threshold: a hard mask at that level; feather: its edge blurred by
// that many pixels), over the chosen background (none: transparent, as predict.py's cut-out).
function cutoutUrl(item, {threshold = 0, feather = 0, background = "transparent", colour = "#ffffff",
                          image = null} = {}) {
  const {width, height} = item;
  const mask = new Uint8ClampedArray(4 * width * height);
  for (let k = 0; k < item.map.length; k++) {
    const a = threshold > 0 ? (item.map[k] >= threshold ? 255 : 0) : item.map[k];
    mask[4 * k] = mask[4 * k + 1] = mask[4 * k + 2] = a;
    mask[4 * k + 3] = 255;
  }
  let alpha = mask;
  if (feather > 0) {
    const source = canvasOf(width, height), blurred = canvasOf(width, height);
    source.getContext("2d").putImageData(new ImageData(mask, width, height), 0, 0);
    const context = blurred.getContext("2d", {willReadFrequently: true});
    context.filter = `blur(${feather}px)`;
    context.drawImage(source, 0, 0);
    alpha = context.getImageData(0, 0, width, height).data;
  }
  let under = null;
  if (background === "colour") {
    under = [1, 3, 5].map(i => parseInt(colour.slice(i, i + 2), 16));
  } else if (background === "blur" || (background === "image" && image)) {
    const canvas = canvasOf(width, height), context = canvas.getContext("2d", {willReadFrequently: true});
    if (background === "blur") {
      const photo = canvasOf(width, height);
      photo.getContext("2d").putImageData(new ImageData(item.rgba, width, height), 0, 0);
      context.filter = `blur(${Math.max(4, Math.round(Math.max(width, height) / 60))}px)`;
      context.drawImage(photo, 0, 0);
    } else {  // the image scaled to cover the photo, centred
      const scale = Math.max(width / image.width, height / image.height);
      const w = image.width * scale, h = image.height * scale;
      context.drawImage(image, (width - w) / 2, (height - h) / 2, w, h);
    }
    under = context.getImageData(0, 0, width, height).data;
  }
  const out = new Uint8ClampedArray(item.rgba.length);
  for (let k = 0; k < item.map.length; k++) {
    const a = alpha[4 * k];
    for (let c = 0; c < 3; c++) {
      const back = under === null ? 0 : under.length === 3 ? under[c] : under[4 * k + c];
      out[4 * k + c] = under === null ? item.rgba[4 * k + c] :
        Math.round((item.rgba[4 * k + c] * a + back * (255 - a)) / 255);
    }
    out[4 * k + 3] = under === null ? a : 255;
  }
  return imageUrl(out, width, height);
}
