// Everything here is served by this page's own origin: no script, runtime, model, font or style comes from elsewhere.
// Each photo becomes its pixels and its 8-bit map, computed by the server (predict.py's bytes) or on this device
// (device.js); the views, the cut-out's background, threshold and feather and the downloads are drawn here from
// those two, the same in both modes.
const status = document.getElementById("status");
const runtime = document.getElementById("runtime");
const $ = id => document.getElementById(id);
let info = {};
let network = null;  // device mode: the network loaded in this browser (device.js), once
const items = [];    // {name, stem, width, height, rgba, map (Uint8ClampedArray), urls: {map, overlay, cutout}}
let current = null, view = "cutout";

// The API key: typed into the page (or given once as ?api_key=), kept for this tab, taken out of the address.
const given = new URLSearchParams(location.search).get("api_key");
if (given) {
  sessionStorage.setItem("sdnet-api-key", given);
  const address = new URL(location.href);
  address.searchParams.delete("api_key");
  history.replaceState(null, "", address);
}
const key = () => sessionStorage.getItem("sdnet-api-key");
const headers = () => key() ? {"X-API-Key": key()} : {};

function mode() {
  return document.querySelector('input[name="run"]:checked').value;
}

async function loadInfo() {
  const response = await fetch("v1/info", {headers: headers()});
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("model").textContent = key() ? "that key was refused: try another" : "";
    $("key").focus();
    return false;
  }
  $("key-form").hidden = true;
  info = await response.json();
  $("model").textContent = info.static ?
    `${info.model} at ${info.size} px, computed on this device (a static page: no server computes anything)` :
    `${info.model} at ${info.size} px, ${info.precision}, ${info.backend} on ${info.device}`;
  const [server, device] = document.querySelectorAll('input[name="run"]');
  if (info.static) server.disabled = true;
  if (info.in_browser === false) {
    device.disabled = true;
    runtime.textContent = "(this server's model does not run in the browser)";
  } else if (info.static || new URLSearchParams(location.search).get("run") === "device") {
    device.checked = true;
  }
  document.body.dataset.mode = mode();
  if (mode() === "device") deviceNetwork().catch(() => {});  // loaded while the user picks a photo
  return true;
}
let infoLoaded = loadInfo().catch(err => {
  status.className = "error";
  status.textContent = `cannot read what runs here: ${err.message}`;
  return false;
});
$("key-form").addEventListener("submit", event => {
  event.preventDefault();
  sessionStorage.setItem("sdnet-api-key", $("key").value);
  $("key").value = "";
  infoLoaded = loadInfo();
});

document.querySelectorAll('input[name="run"]').forEach(radio => radio.addEventListener("change", () => {
  document.body.dataset.mode = mode();
  if (mode() === "device") deviceNetwork().catch(() => {});
}));

async function deviceNetwork() {
  if (!network) {
    network = (async () => {
      runtime.className = "";
      runtime.textContent = "loading the network into this browser ...";
      const started = performance.now();
      const device = await import("./device.js");
      const response = await fetch("v1/model.onnx", {headers: headers()});
      if (!response.ok) throw new Error(`v1/model.onnx: ${response.status} ${response.statusText}`);
      const threads = Number(new URLSearchParams(location.search).get("threads")) || null;
      const loaded = await device.loadNetwork(new Uint8Array(await response.arrayBuffer()), info.size,
                                              {threads, frames: info.frames || 1});
      runtime.textContent = `runs here: ${loaded.runtime}; loaded in ${((performance.now() - started) / 1000)
        .toFixed(2)} s; nothing is uploaded`;
      runtime.dataset.runtime = loaded.runtime;
      runtime.dataset.loadedAt = performance.now();  // since the page's navigation began
      return {device, loaded};
    })();
    network.catch(err => {
      network = null;
      runtime.className = "error";
      runtime.textContent = `the network could not be loaded in this browser: ${err.message}`;
    });
  }
  return network;
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "") || "photo";
}


let backgroundImage = null;  // the chosen background image, drawn to each photo's size

function cutoutSettings() {
  return {threshold: Number($("threshold").value), feather: Number($("feather").value),
          background: $("background").value, colour: $("bg-colour").value, image: backgroundImage};
}

function setLink(id, url, name) {
  const link = $(`${id}-link`);
  link.href = url;
  link.download = name;
}

// The chosen photo, large: its chosen view over the photo, split by the before/after slider.
function show(item) {
  current = item;
  item.urls.overlay = item.urls.overlay || overlayUrl(item);
  item.urls.cutout = cutoutUrl(item, cutoutSettings());
  for (const id of ["map", "overlay", "cutout"]) {
    $(id).src = item.urls[id];
    setLink(id, item.urls[id], `${item.stem}_${id}.${id === "overlay" ? "jpg" : "png"}`);
  }
  $("photo").src = item.urls.photo;
  $("after-view").src = view === "photo" ? item.urls.photo : item.urls[view];
  $("before-view").src = item.urls.photo;
  document.querySelectorAll("#views figure").forEach(f => f.classList.toggle("chosen", f.dataset.view === view));
  document.querySelectorAll("#thumbs button").forEach(b => b.classList.toggle("chosen", b.item === item));
  split();
  $("results").hidden = false;
}

function split() {
  $("before-view").style.clipPath = `inset(0 ${100 - Number($("split").value)}% 0 0)`;
}

async function mapOnServer(file) {
  const response = await fetch("v1/saliency?output=png", {method: "POST", headers: headers(), body: file});
  if (!response.ok) {
    const text = await response.text();
    let reason = text;
    try { reason = JSON.parse(text).error || text; } catch (err) { /* not JSON */ }
    throw new Error(response.status === 401 ? "the API key was refused" : reason || response.statusText);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 32768) binary += String.fromCharCode(...bytes.subarray(i, i + 32768));
  const url = `data:image/png;base64,${btoa(binary)}`;  // predict.py's bytes, as the server sent them
  const picture = await pixelsOf(new Blob([bytes], {type: "image/png"}));
  const map = new Uint8ClampedArray(picture.width * picture.height);
  for (let k = 0; k < map.length; k++) map[k] = picture.rgba[4 * k];
  return {map, url, seconds: Number(response.headers.get("X-Processing-Seconds"))};
}

async function mapOnDevice(picture) {
  const {loaded} = await deviceNetwork();
  const answer = await loaded.run(picture.rgba, picture.width, picture.height);
  const grey = new Uint8ClampedArray(4 * answer.map.length);
  for (let k = 0; k < answer.map.length; k++) {
    grey[4 * k] = grey[4 * k + 1] = grey[4 * k + 2] = answer.map[k];
    grey[4 * k + 3] = 255;
  }
  return {map: answer.map, url: imageUrl(grey, picture.width, picture.height), seconds: answer.seconds.network,
          runtime: loaded.runtime, total: answer.seconds.total};
}

// Photos one after the other; each one shown as its map is in.
async function send(files) {
  files = [...files].filter(file => file.type.startsWith("image/") || !file.type);
  if (!files.length) return;
  status.className = "";
  delete status.dataset.done;
  if (!(await infoLoaded)) {
    status.className = "error";
    status.textContent = "give the API key first";
    return;
  }
  const failures = [];
  for (const [index, file] of files.entries()) {
    const name = file.name || "pasted.png";
    status.textContent = `computing the map of ${name}` + (files.length > 1 ? ` (${index + 1} of ${files.length})` :
                                                           "") + " ...";
    try {
      const picture = await pixelsOf(file);
      const started = performance.now();
      const answer = mode() === "device" ? await mapOnDevice(picture) : await mapOnServer(file);
      const total = (performance.now() - started) / 1000;
      const item = {name, stem: stem(name), ...picture, map: answer.map,
                    urls: {map: answer.url, photo: URL.createObjectURL(file)}};
      if (item.map.length !== item.width * item.height) throw new Error("the map is not the photo's size");
      items.push(item);
      const thumb = document.createElement("button");
      thumb.type = "button";
      thumb.item = item;
      thumb.title = name;
      thumb.innerHTML = `<img alt="${name.replace(/[<>"&]/g, "")}">`;
      thumb.firstChild.src = item.urls.photo;
      thumb.addEventListener("click", () => show(item));
      $("thumbs").append(thumb);
      $("count").textContent = `${items.length} photo${items.length > 1 ? "s" : ""}`;
      show(item);
      status.textContent = mode() === "device" ?
        `${item.width} x ${item.height}: computed on this device in ${answer.total.toFixed(3)} s ` +
        `(network ${answer.seconds.toFixed(3)} s, ${answer.runtime})` :
        `${item.width} x ${item.height}: the server took ${answer.seconds.toFixed(3)} s ` +
        `(${total.toFixed(3)} s with the upload)`;
      if (mode() === "device") status.dataset.seconds = answer.seconds;
    } catch (err) {
      failures.push(`${name}: ${err.message}`);
    }
  }
  if (failures.length) {
    status.className = "error";
    status.textContent = failures.join("; ");
  } else {
    status.dataset.done = "1";
  }
}

// Every photo's map, overlay and cut-out (as now set), named after the photo.
async function downloadAll() {
  for (const item of items) {
    const urls = {map: item.urls.map, overlay: item.urls.overlay || overlayUrl(item), cutout: cutoutUrl(item, cutoutSettings())};
    for (const [kind, url] of Object.entries(urls)) {
      const link = document.createElement("a");
      link.href = url;
      link.download = `${item.stem}_${kind}.${kind === "overlay" ? "jpg" : "png"}`;
      document.body.append(link);
      link.click();
      link.remove();
      await new Promise(resolve => setTimeout(resolve, 150));  // browsers drop downloads started all at once
    }
  }
}

$("split").addEventListener("input", split);
document.querySelectorAll("#views figure").forEach(figure => figure.addEventListener("click", event => {
  if (event.target.tagName === "A") return;
  view = figure.dataset.view;
  if (current) show(current);
}));
for (const id of ["threshold", "feather", "bg-colour"]) {
  $(id).addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value) ? $("threshold").value : "off";
    $("feather-value").textContent = `${$("feather").value} px`;
    if (current) show(current);
  });
}
$("background").addEventListener("change", () => {
  $("bg-colour").hidden = $("background").value !== "colour";
  $("bg-image").hidden = $("background").value !== "image";
  if (current) show(current);
});
$("bg-image").addEventListener("change", async event => {
  if (!event.target.files.length) return;
  backgroundImage = await createImageBitmap(event.target.files[0]);
  if (current) show(current);
});
$("zoom").addEventListener("click", () => {
  const actual = $("viewer").classList.toggle("actual");
  $("zoom").textContent = actual ? "fit the window" : "actual size";
});
$("download-all").addEventListener("click", downloadAll);
$("file").addEventListener("change", event => send(event.target.files));
document.addEventListener("paste", event => {
  const files = [...(event.clipboardData || {files: []}).files];
  if (files.length) {
    event.preventDefault();
    send(files);
  }
});
const drop = $("drop");
drop.addEventListener("dragover", event => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", event => {
  event.preventDefault();
  drop.classList.remove("over");
  send(event.dataTransfer.files);
});

// Live video, one camera frame in flight at a time: on the server, a JPEG over a WebSocket, the next sent when its
// map is back; on this device, each frame's map computed here before the next frame is taken.
let stopCamera = null;

async function camera() {
  const liveStatus = document.getElementById("live-status");
  const button = document.getElementById("camera-button");
  if (stopCamera) {
    stopCamera();
    return;
  }
  liveStatus.className = "";
  if (!window.isSecureContext || !navigator.mediaDevices) {
    liveStatus.className = "error";
    liveStatus.textContent = "camera: the browser offers it only to secure pages (HTTPS, or localhost on this machine); " +
      "serve.py --certfile/--keyfile serves HTTPS";
    return;
  }
  let socket = null, stopped = false, stream = null;
  stopCamera = () => {
    stopped = true;
    if (stream) stream.getTracks().forEach(track => track.stop());
    if (socket) socket.close();
    document.getElementById("live").hidden = true;
    button.textContent = "Use the camera";
    stopCamera = null;
  };
  try {
    const video = document.getElementById("camera");
    stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
    video.srcObject = stream;
    await video.play();
    document.getElementById("live").hidden = false;
    button.textContent = "Stop the camera";
    const canvas = document.createElement("canvas");
    const grab = () => {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      const context = canvas.getContext("2d", {willReadFrequently: true});
      context.drawImage(video, 0, 0);
      return context;
    };
    let frames = 0;
    if (mode() === "device") {
      const {loaded} = await deviceNetwork();
      const started = performance.now();
      const clip = [];  // a video model's last frames, prepared (the first frame repeated until there are enough)
      while (!stopped) {
        const context = grab(), width = canvas.width, height = canvas.height;
        clip.push(loaded.prepare(context.getImageData(0, 0, width, height).data, width, height));
        while (clip.length < loaded.frames) clip.unshift(clip[0]);
        if (clip.length > loaded.frames) clip.shift();
        const answer = await loaded.runClip(clip, width, height);
        const shown = context.createImageData(width, height);
        for (let k = 0; k < answer.map.length; k++) shown.data.set([answer.map[k], answer.map[k], answer.map[k], 255], 4 * k);
        context.putImageData(shown, 0, 0);
        document.getElementById("live-map").src = canvas.toDataURL("image/png");
        frames += 1;
        const fps = frames / ((performance.now() - started) / 1000);
        liveStatus.textContent = `${width} x ${height}: ${fps.toFixed(1)} frames/s on this device ` +
          `(the network took ${answer.seconds.network.toFixed(3)} s for the last` +
          (loaded.frames > 1 ? ` clip of ${loaded.frames} frames` : "") + `, ${loaded.runtime})`;
        liveStatus.dataset.frames = frames;
        await new Promise(resolve => setTimeout(resolve, 0));
      }
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/v1/stream` +
                           (key() ? `?api_key=${encodeURIComponent(key())}` : ""));
    const sendFrame = () => {
      if (stopped) return;
      grab();
      canvas.toBlob(blob => socket.send(blob), "image/jpeg", 0.9);
    };
    socket.onopen = sendFrame;
    socket.onmessage = event => {
      if (event.data instanceof Blob) {
        document.getElementById("live-map").src = URL.createObjectURL(event.data);
        return;
      }
      const answer = JSON.parse(event.data);
      if (answer.error) {
        liveStatus.textContent = answer.error;
      } else {
        frames += 1;
        liveStatus.textContent = `${answer.width} x ${answer.height}: ${answer.fps.toFixed(1)} frames/s ` +
          `(the server took ${answer.seconds.toFixed(3)} s for the last)`;
        liveStatus.dataset.frames = frames;
      }
      if (!stopped) sendFrame();
    };
    socket.onclose = () => { if (!stopped) liveStatus.textContent += " (stream closed)"; };
  } catch (err) {
    liveStatus.className = "error";
    liveStatus.textContent = `camera: ${err.message}`;
    if (stopCamera) stopCamera();
  }
}
document.getElementById("camera-button").addEventListener("click", camera);
