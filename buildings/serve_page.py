"""The one page ``buildings serve`` shows: pick an image (or the sample), see the buildings over
it, move the threshold, download the mask. The sample is ``GET /sample.png``, and the line beside its
button (``#sample-label``) says what it is, from ``/health``'s ``sample``: a validation tile of the
model's own data, or the synthetic scene, labelled "synthetic sample: not like real imagery"
(``document.body.dataset.sample`` is ``dataset`` or ``synthetic``).

The mask the page shows is the API's own: when the threshold slider settles (``change``, or 300 ms
after the last ``input``) it posts the image to ``/predict?format=png&threshold=t`` and draws that
mask, the served rule's (min-area, hole filling, empty-image gates included; ``GET /health`` names
it). While the slider moves it draws an instant preview, the 8-bit probability PNG (fetched once per
image) at the threshold and nothing else, and says so. The status line says which of the two is
shown; for scripts and tests, ``document.body.dataset`` carries ``maskSource`` (``api`` or
``preview``), ``maskThreshold``, ``buildingPixels`` (the building pixels of the mask shown),
``maskHash`` (FNV-1a 32-bit, 8 hex digits, of the mask's row-major 0/1 bytes) and ``maskSize``
(``WxH``); ``window.buildingsMask`` is that mask (a Uint8Array of 0/1). The page loads nothing from
elsewhere. A server started with a bearer token serves this page to anyone (it holds no secret) and
nothing else: open it as ``/#token=TOKEN`` and its requests carry ``Authorization: Bearer TOKEN`` (the
fragment never leaves the browser)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>buildings: building masks from aerial images</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f2; color: #222; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  .controls { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
  #status, #rule { font-size: 14px; color: #333; margin-bottom: 4px; }
  #rule { color: #555; }
  #status.error { color: #b00020; font-weight: 600; }
  #status.preview { color: #8a5a00; }
  #download:not([href]) { color: #999; pointer-events: none; }
  canvas { max-width: 100%; border: 1px solid #999; background: #ddd; }
  #sample-label { font-size: 13px; color: #555; }
  #sample-label.synthetic { color: #8a5a00; font-weight: 600; }
  .legend span { display: inline-block; width: 12px; height: 12px; background: rgb(0, 220, 255);
                 opacity: 0.75; vertical-align: middle; margin-right: 4px; }
</style>
</head>
<body>
<h1>buildings &mdash; building masks from an aerial image</h1>
<div class="controls">
  <input type="file" id="file" accept="image/*,.tif,.tiff">
  <button id="sample" type="button">Try the sample</button>
  <span id="sample-label">sample: asking the server ...</span>
  <label>threshold <input type="range" id="threshold" min="0.01" max="0.99" step="0.01" value="__THRESHOLD__">
    <output id="tvalue">__THRESHOLD__</output></label>
  <a id="download" download="mask.png">Download mask (PNG)</a>
  <span class="legend"><span></span>building</span>
</div>
<div id="rule">served rule: asking the server ...</div>
<div id="status">Pick an image (JPEG, PNG, GeoTIFF) or try the sample.</div>
<canvas id="view" width="512" height="512"></canvas>
<script>
const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 300;
const bitmapOptions = { colorSpaceConversion: "none", premultiplyAlpha: "none" };  // PNG bytes as they are
const token = new URLSearchParams(location.hash.slice(1)).get("token");  // /#token=...: never sent as part of a URL
const auth = token ? { Authorization: `Bearer ${token}` } : {};
let health = null;        // GET /health: the served rule
let upload = null;        // { blob, name, id }: the image shown
let base = null;          // ImageData: the picture, or grey when the browser cannot show it (a GeoTIFF)
let probability = null;   // Uint8Array: the 8-bit building probability, for the preview
let size = null;          // { w, h }
let threshold = null;     // the threshold asked for: the served one until the slider moves
let uploads = 0, asked = 0, inFlight = null, timer = null, apiMaskUrl = null;

const formatted = (t) => String(Number(Number(t).toFixed(4)));

function status(text, kind) { $("status").textContent = text; $("status").className = kind || ""; }

function pixels(bitmap) {
  const canvas = new OffscreenCanvas(size.w, size.h), context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, size.w, size.h);
  return context.getImageData(0, 0, size.w, size.h);
}

function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) { h ^= bytes[i]; h = Math.imul(h, 0x01000193); }
  return (h >>> 0).toString(16).padStart(8, "0");
}

// Draw mask (Uint8Array of 0/1) over the picture; source "api" (the API's mask) or "preview".
function show(mask, source, t) {
  const view = $("view"), context = view.getContext("2d");
  view.width = size.w; view.height = size.h;
  const shown = new ImageData(new Uint8ClampedArray(base.data), size.w, size.h), out = shown.data;
  let count = 0;
  for (let p = 0, i = 0; p < mask.length; p++, i += 4) {
    if (!mask[p]) continue;
    count++;
    out[i] = 0.3 * out[i]; out[i + 1] = 0.3 * out[i + 1] + 0.7 * 220; out[i + 2] = 0.3 * out[i + 2] + 0.7 * 255;
  }
  context.putImageData(shown, 0, 0);
  const share = (100 * count / (size.w * size.h)).toFixed(1), at = formatted(t);
  if (source === "api") {
    status(`${size.w}x${size.h} px, mask as the API returns it: ${count} building pixels (${share} %) at ` +
           `threshold ${at}, ${health.postprocess}`);
  } else {
    const after = health.postprocess === "no post-processing" ? "" : ` (before ${health.postprocess})`;
    status(`${size.w}x${size.h} px, raw threshold preview: ${count} pixels (${share} %) with 8-bit probability ` +
           `>= ${at}${after}; the API's mask follows when the slider settles`, "preview");
  }
  window.buildingsMask = mask;  // for scripts and tests, with:
  Object.assign(document.body.dataset, { buildingPixels: String(count), maskSource: source, maskThreshold: at,
                                         maskHash: fnv1a(mask), maskSize: `${size.w}x${size.h}` });
}

function preview(t) {
  const mask = new Uint8Array(size.w * size.h), cut = t * 255;
  for (let p = 0; p < mask.length; p++) mask[p] = probability[p] >= cut ? 1 : 0;
  $("download").removeAttribute("href");  // the download is the API's mask, once it has come
  show(mask, "preview", t);
}

async function failed(response) {
  let detail = response.statusText;
  try { detail = (await response.json()).detail; } catch (e) {}
  status(`error ${response.status}: ${detail}`, "error");
}

// Ask the API for its mask of the current image at threshold t, and show it (unless asked again since).
async function apiMask(t) {
  clearTimeout(timer);
  if (inFlight) inFlight.abort();
  const controller = new AbortController(), mine = ++asked, image = upload;
  inFlight = controller;
  const form = new FormData();
  form.append("file", image.blob, image.name);
  try {
    const response = await fetch(`/predict?format=png&threshold=${formatted(t)}`,
                                 { method: "POST", body: form, signal: controller.signal, headers: auth });
    if (mine !== asked || image !== upload) return;
    if (!response.ok) { await failed(response); return; }
    const png = await response.blob(), bitmap = await createImageBitmap(png, bitmapOptions);
    if (mine !== asked || image !== upload) return;
    const rgba = pixels(bitmap).data, mask = new Uint8Array(size.w * size.h);
    for (let p = 0; p < mask.length; p++) mask[p] = rgba[4 * p] > 127 ? 1 : 0;
    if (apiMaskUrl) URL.revokeObjectURL(apiMaskUrl);
    apiMaskUrl = URL.createObjectURL(png);
    $("download").href = apiMaskUrl;
    show(mask, "api", t);
  } catch (e) {
    if (e.name !== "AbortError" && mine === asked) status(`error: ${e.message}`, "error");
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

function sliderThreshold() {
  threshold = Number($("threshold").value);
  $("tvalue").textContent = formatted(threshold);
  return threshold;
}

async function run(blob, name) {
  const image = { blob, name, id: ++uploads };
  upload = image;
  probability = null;  // the slider waits for this image's probabilities
  status("predicting " + name + " ...");
  await ready;
  if (health.num_classes !== 1) {
    status(`this page shows building (one-class) models; this one has ${health.num_classes} classes: ` +
           "use POST /predict", "error");
    return;
  }
  const form = new FormData();
  form.append("file", blob, name);
  const response = await fetch("/predict?format=probability", { method: "POST", body: form, headers: auth });
  if (image !== upload) return;
  if (!response.ok) { await failed(response); return; }
  const bitmap = await createImageBitmap(await response.blob(), bitmapOptions);
  let picture = null;
  try { picture = await createImageBitmap(blob); } catch (e) {}  // a GeoTIFF: no picture, grey
  if (image !== upload) return;
  size = { w: bitmap.width, h: bitmap.height };
  const rgba = pixels(bitmap).data;
  probability = new Uint8Array(size.w * size.h);
  for (let p = 0; p < probability.length; p++) probability[p] = rgba[4 * p];
  if (picture) base = pixels(picture);
  else { base = new ImageData(size.w, size.h); base.data.fill(200); }
  preview(threshold);
  apiMask(threshold);
}

async function start() {
  const response = await fetch("/health", { headers: auth });
  if (!response.ok) {
    await failed(response);
    if (response.status === 401) status("this server needs its token: open this page as /#token=<token>", "error");
    throw new Error(`GET /health: ${response.status}`);
  }
  health = await response.json();
  threshold = health.threshold;
  $("tvalue").textContent = formatted(threshold);
  $("rule").textContent = `served rule: ${health.rule} (the slider changes the threshold only)`;
  $("sample-label").textContent = health.sample.label;
  $("sample-label").className = health.sample.synthetic ? "synthetic" : "";
  document.body.dataset.sample = health.sample.synthetic ? "synthetic" : "dataset";
  if (health.vote) {  // a vote's ballots are cast at the served threshold: a request cannot change it
    $("threshold").disabled = true;
    $("rule").textContent += "; a majority vote of the models, at their served threshold: the slider is off";
  }
}

$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) run(f, f.name); });
$("threshold").addEventListener("input", () => {
  const t = sliderThreshold();
  if (!probability) return;
  preview(t);
  clearTimeout(timer);
  timer = setTimeout(() => apiMask(t), DEBOUNCE_MS);
});
$("threshold").addEventListener("change", () => { const t = sliderThreshold(); if (probability) apiMask(t); });
async function sample() { const r = await fetch("/sample.png", { headers: auth }); run(await r.blob(), "sample.png"); }
$("sample").addEventListener("click", sample);
const ready = start();
if (new URLSearchParams(location.search).has("sample")) ready.then(sample);
</script>
</body>
</html>
"""
