"""The one page ``buildings serve`` shows: pick an image (or the sample scene), see the buildings
over it, move the threshold (applied here to the probability PNG, no new request), download the mask."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>buildings: building masks from aerial images</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f2; color: #222; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  .controls { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin-bottom: 10px; }
  #status { font-size: 14px; color: #333; }
  #status.error { color: #b00020; font-weight: 600; }
  canvas { max-width: 100%; border: 1px solid #999; background: #ddd; }
  .legend span { display: inline-block; width: 12px; height: 12px; background: rgb(0, 220, 255);
                 opacity: 0.75; vertical-align: middle; margin-right: 4px; }
</style>
</head>
<body>
<h1>buildings &mdash; building masks from an aerial image</h1>
<div class="controls">
  <input type="file" id="file" accept="image/*,.tif,.tiff">
  <button id="sample" type="button">Try a sample scene</button>
  <label>threshold <input type="range" id="threshold" min="0.05" max="0.95" step="0.05" value="__THRESHOLD__">
    <output id="tvalue">__THRESHOLD__</output></label>
  <a id="download" href="#" download="mask.png">Download mask (PNG)</a>
  <span class="legend"><span></span>building</span>
</div>
<div id="status">Pick an image (JPEG, PNG, GeoTIFF) or try the sample scene.</div>
<canvas id="view" width="512" height="512"></canvas>
<script>
const $ = (id) => document.getElementById(id);
let picture = null, probability = null, size = null;

function status(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

function pixels(bitmap) {
  const canvas = new OffscreenCanvas(size.w, size.h), context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, size.w, size.h);
  return context.getImageData(0, 0, size.w, size.h);
}

function draw() {
  if (!probability) return;
  const t = Number($("threshold").value);
  $("tvalue").textContent = t.toFixed(2);
  const view = $("view"), context = view.getContext("2d");
  view.width = size.w; view.height = size.h;
  const shown = picture ? pixels(picture) : new ImageData(size.w, size.h);  // no preview: grey
  const probs = pixels(probability).data, out = shown.data, mask = new ImageData(size.w, size.h);
  let count = 0;
  for (let i = 0; i < probs.length; i += 4) {
    const building = probs[i] >= t * 255;
    if (!picture) { out[i] = out[i + 1] = out[i + 2] = 200; out[i + 3] = 255; }
    if (building) {
      count++;
      out[i] = 0.3 * out[i]; out[i + 1] = 0.3 * out[i + 1] + 0.7 * 220; out[i + 2] = 0.3 * out[i + 2] + 0.7 * 255;
    }
    mask.data[i] = mask.data[i + 1] = mask.data[i + 2] = building ? 255 : 0; mask.data[i + 3] = 255;
  }
  context.putImageData(shown, 0, 0);
  const maskCanvas = document.createElement("canvas");
  maskCanvas.width = size.w; maskCanvas.height = size.h;
  maskCanvas.getContext("2d").putImageData(mask, 0, 0);
  $("download").href = maskCanvas.toDataURL("image/png");
  status(`${size.w}x${size.h} px: ${count} building pixels (${(100 * count / (size.w * size.h)).toFixed(1)} %) at threshold ${t.toFixed(2)}`);
  document.body.dataset.buildingPixels = String(count);  // for scripts and tests
}

async function run(blob, name) {
  status("predicting " + name + " ...");
  const form = new FormData();
  form.append("file", blob, name);
  const response = await fetch("/predict?format=probability", { method: "POST", body: form });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) {}
    status(`error ${response.status}: ${detail}`, true);
    return;
  }
  probability = await createImageBitmap(await response.blob());
  size = { w: probability.width, h: probability.height };
  try { picture = await createImageBitmap(blob); } catch (e) { picture = null; }  // a GeoTIFF: no preview
  draw();
}

$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) run(f, f.name); });
$("threshold").addEventListener("input", draw);
async function sample() { const r = await fetch("/sample.png"); run(await r.blob(), "sample.png"); }
$("sample").addEventListener("click", sample);
if (new URLSearchParams(location.search).has("sample")) sample();
</script>
</body>
</html>
"""
