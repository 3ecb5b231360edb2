"""``buildings serve``: an HTTP API and a one-page web UI around a checkpoint (FastAPI + uvicorn).

Every mask it answers comes from the predictor's rule (``predictor.rule``, a
:class:`~buildings.inference.prediction.MaskRule`: threshold, min-area, hole filling, empty-image
gates), the rule ``buildings predict`` applies; a request's ``threshold`` replaces the threshold only.

Routes
* ``GET /health``            ``{"status": "ok", "models": [...], "num_classes": 1, "tta": ..., "threshold": ...,
  "rule": "threshold 0.5, min-area 30, fill holes", "postprocess": "min-area 30, fill holes", "min_area": 30,
  "fill_holes": true, "empty_below_area": 0, "empty_below_peak": 0.0, "vote": false, "max_upload_bytes": ...}``
* ``POST /predict``          multipart field ``file`` (a JPEG / PNG / TIFF image, or a GeoTIFF), query
  ``format`` = ``png`` (mask PNG, 0/255), ``rle`` (JSON: the contest RLE, height, width, building
  pixels), ``geojson`` (one polygon per building: map coordinates and the CRS for a GeoTIFF, pixel
  coordinates — x right, y down — for a plain image; properties named as ``buildings predict
  --vectorize`` names them: ``area_m2`` in a projected CRS, else ``area`` in CRS units² or pixels²,
  ``pixels``, ``mean_probability``) or ``probability`` (8-bit PNG of the building probability, what
  the page previews with); ``threshold`` overrides the served one.
* ``GET /``                  the page: pick an image, see the buildings over it, move the threshold:
  the mask shown is the API's own (``format=png`` at the slider's threshold, post-processing
  included), with a raw-threshold preview, labelled as such, while the slider moves; download the mask PNG.
* ``GET /sample.png``        a synthetic aerial scene made by the project (``data.synth``), so the
  page can be tried without data (``/?sample=1`` loads it at once).

A bad upload gets a 4xx with one ``detail`` line: 400 for an empty file, an undecodable image or a
multi-class model asked for polygons, 413 past ``max_upload_bytes`` (a declared Content-Length is
checked before the body is parsed; a body without one is counted as it is read, in chunks),
415 for a GeoTIFF without rasterio, 422 when the ``file`` field is missing (FastAPI's own).
Predictions run one at a time (a lock), in a worker thread so the server keeps answering meanwhile:
the model, not the server, is the bottleneck. The probabilities of the last few uploads are kept
(:class:`RecentProbabilities`, by the upload's SHA-256), so the page asking for the same image at
another threshold runs the rule again, not the model.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time.
import dataclasses
import hashlib
import tempfile
import threading
import time
from collections import OrderedDict

import cv2
import numpy as np

from buildings.errors import BuildingsError
from buildings.serve_page import PAGE

__all__ = ["create_app", "PAGE"]

CHUNK = 1 << 20
# An over-limit body is read and discarded (never parsed or kept) before the 413 goes out, up to these
# bounds, as nginx's lingering close does: closing a socket with unread data makes the kernel reset the
# connection, and a client that sends its whole body before reading (urllib, requests) then sees
# a broken pipe instead of the 413. Past the bounds the 413 is sent anyway and the connection closed.
DRAIN_BYTES = 256 << 20
DRAIN_SECONDS = 10.0


async def _discard_body(request) -> None:
    """Read and drop ``request``'s body, up to DRAIN_BYTES / DRAIN_SECONDS."""
    from starlette.requests import ClientDisconnect

    read, started = 0, time.monotonic()
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > DRAIN_BYTES or time.monotonic() - started > DRAIN_SECONDS:
                break
    except ClientDisconnect:
        pass


def _decode_upload(data: bytes, filename: str):
    """(RGB uint8 image, transform or None, crs or None) of an uploaded image or GeoTIFF."""
    from buildings.formats.images import decode_image

    if data[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF: a GeoTIFF keeps its georeference
        try:
            import rasterio  # noqa: F401
        except ImportError:
            rasterio = None
        if rasterio is not None:
            from buildings.geo.raster import GeoRaster

            with tempfile.NamedTemporaryFile(suffix=".tif") as handle:
                handle.write(data)
                handle.flush()
                with GeoRaster.open(handle.name) as raster:
                    if raster.crs is not None:
                        return raster.read(0, 0, raster.height, raster.width), raster.transform, raster.crs
    return decode_image(data, filename or "upload"), None, None


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


class RecentProbabilities:
    """The probabilities (and georeference) of the last ``entries`` uploads, by SHA-256 of their
    bytes, ``max_bytes`` of arrays at most (a larger one is not kept): the page posts the same image
    again each time its threshold slider settles. Thread-safe."""

    def __init__(self, entries: int = 4, max_bytes: int = 256 << 20):
        self.entries, self.max_bytes = entries, max_bytes
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: str, value: tuple) -> None:
        probs = value[0]
        if probs.nbytes > self.max_bytes:
            return
        probs.flags.writeable = False  # shared by the requests that hit it
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries or sum(v[0].nbytes for v in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)


def _geojson(mask: np.ndarray, probs: np.ndarray, transform, crs) -> dict:
    """One feature per building of ``mask`` (the rule's mask: min-area and the rest already applied,
    so the polygons drop nothing themselves)."""
    from affine import Affine

    from buildings.geo.vectorize import BuildingPolygons, feature_properties

    polygons = BuildingPolygons(transform or Affine.identity(), min_area=0, simplify=1.0)
    polygons.add_block((0, 0), 0, 0, mask, probs)
    features = [{"type": "Feature", "geometry": f["geometry"].__geo_interface__, "properties": feature_properties(f, crs)}
                for f in polygons.features()]
    out = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        out["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    return out


def create_app(predictor, *, max_upload_bytes: int = 50 << 20):
    """The FastAPI app serving ``predictor`` (a :class:`~buildings.inference.Predictor`) with its
    rule (``predictor.rule``: threshold and post-processing; a request's ``threshold`` replaces the
    threshold only)."""
    from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from buildings.formats.rle import encode_rle

    rule = predictor.rule
    threshold = rule.threshold
    task = predictor.task
    lock = threading.Lock()
    recent = RecentProbabilities()
    app = FastAPI(title="buildings", description="Building masks from aerial images")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Before FastAPI parses (and spools) the multipart body: a declared size over the limit is
        # refused unparsed (its bytes drained, see DRAIN_BYTES). A body sent without a length is counted
        # while the route reads it.
        declared = request.headers.get("content-length", "")
        if request.method == "POST" and declared.isdigit() and int(declared) > max_upload_bytes + CHUNK:
            await _discard_body(request)
            return JSONResponse({"detail": f"upload of {int(declared)} bytes is over the {max_upload_bytes}-byte "
                                           "upload limit"}, status_code=413, headers={"Connection": "close"})
        return await call_next(request)

    @app.get("/health")
    def health():
        # The rule, so that a client (the page) can say what the masks it gets went through.
        return {"status": "ok", "models": [m.name for m in predictor.models], "num_classes": task.num_classes,
                "tta": predictor.tta, "threshold": threshold, "rule": rule.describe(),
                "postprocess": rule.postprocess.describe(), **dataclasses.asdict(rule.postprocess),
                "vote": rule.majority, "max_upload_bytes": max_upload_bytes}

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.replace("__THRESHOLD__", f"{threshold:g}")

    @app.get("/sample.png")
    def sample():
        from buildings.data.synth import synth_scene

        image, _ = synth_scene(np.random.default_rng(7), 512, p_empty=0.0)  # BGR, as OpenCV writes
        return Response(_png(image), media_type="image/png")

    @app.post("/predict")
    async def predict(file: UploadFile, format: str = Query("png"),
                      threshold_: float | None = Query(None, alias="threshold", gt=0, lt=1)):
        if format not in ("png", "rle", "geojson", "probability"):
            raise HTTPException(400, f"format {format!r}: use png, rle, geojson or probability")
        if threshold_ is not None and predictor.vote:
            raise HTTPException(400, "this server ensembles by majority vote: each model's ballot is cast at the "
                                     f"served threshold ({rule.threshold:g}); a request cannot change it")
        data = bytearray()
        while chunk := await file.read(CHUNK):
            data += chunk
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"{file.filename}: over the {max_upload_bytes}-byte upload limit")
        if not data:
            raise HTTPException(400, f"{file.filename or 'upload'}: empty file (0 bytes)")
        if format in ("geojson", "probability") and not task.binary:
            raise HTTPException(400, f"format {format} is for building (binary) models; this one has "
                                     f"{task.num_classes} classes")
        key = hashlib.sha256(data).hexdigest()
        known = recent.get(key)
        if known is None:
            try:
                image, transform, crs = _decode_upload(bytes(data), file.filename)
            except BuildingsError as err:
                raise HTTPException(400, str(err)) from None

            def probabilities():
                with lock:
                    return predictor.probabilities(image)

            known = (await run_in_threadpool(probabilities), transform, crs)
            recent.put(key, known)
        probs, transform, crs = known
        if format == "probability":
            return Response(_png(np.round(probs[..., 0] * 255).astype(np.uint8)), media_type="image/png")
        asked = rule if threshold_ is None else rule.with_threshold(threshold_)
        mask = await run_in_threadpool(asked.mask, probs)  # the one way to a mask: the rule
        if format == "png":
            return Response(_png(task.mask_png(mask)), media_type="image/png")
        if format == "rle":
            if not task.binary:
                raise HTTPException(400, f"format rle is for building (binary) models; this one has "
                                         f"{task.num_classes} classes")
            return {"name": file.filename, "rle": encode_rle(mask), "height": int(mask.shape[0]),
                    "width": int(mask.shape[1]), "building_pixels": int(mask.sum())}
        return JSONResponse(_geojson(mask, probs[..., 0], transform, crs),
                            media_type="application/geo+json")

    return app


def serve(predictor, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0) -> None:
    """Serve ``predictor`` until interrupted."""
    import uvicorn

    app = create_app(predictor, max_upload_bytes=int(max_upload_mb * (1 << 20)))
    uvicorn.run(app, host=host, port=port, log_level="info")

