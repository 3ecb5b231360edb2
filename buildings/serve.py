"""``buildings serve``: an HTTP API and a one-page web UI around a checkpoint (FastAPI + uvicorn).

Every mask it answers comes from the predictor's rule (``predictor.rule``, a
:class:`~buildings.inference.prediction.MaskRule`: threshold, min-area, hole filling, empty-image
gates), the rule ``buildings predict`` applies; a request's ``threshold`` replaces the threshold only.

Routes
* ``GET /health``            ``{"status": "ok", "models": [...], "num_classes": 1, "tta": ..., "threshold": ...,
  "rule": "threshold 0.5, min-area 30, fill holes", "postprocess": "min-area 30, fill holes", "min_area": 30,
  "fill_holes": true, "empty_below_area": 0, "empty_below_peak": 0.0, "vote": false, "max_upload_bytes": ...,
  "max_pixels": ..., "sample": {"label": ..., "synthetic": false}, "queue": {"slots": 1, "limit": 8, "busy": 0}}``:
  answered on the event loop from what is known at start-up (it touches neither the model nor its
  lock), so it stays fast under load.
* ``POST /predict``          multipart field ``file`` (a JPEG / PNG / BMP / TIFF image, or a GeoTIFF or
  BigTIFF), query ``format`` = ``png`` (mask PNG, 0/255), ``rle`` (JSON: the contest RLE, height, width,
  building pixels), ``geojson`` (one polygon per building: map coordinates and the CRS for a GeoTIFF, pixel
  coordinates — x right, y down — for a plain image; properties named as ``buildings predict
  --vectorize`` names them, ``geo.vectorize.feature_properties``: ``area_m2`` for an image with a
  CRS, ``pixels`` (a plain image's only area), ``mean_probability``) or ``probability`` (8-bit PNG of
  the building probability, what the page previews with); ``threshold`` overrides the served one.
* ``GET /``                  the page: pick an image, see the buildings over it, move the threshold:
  the mask shown is the API's own (``format=png`` at the slider's threshold, post-processing
  included), with a raw-threshold preview, labelled as such, while the slider moves; download the mask PNG.
* ``GET /sample.png``        the page's sample (:func:`find_sample`, chosen at start-up; ``/?sample=1``
  loads it at once; ``/health``'s ``sample`` says what it is): a validation tile of the dataset the
  model was trained on, named by the run's ``config.json`` beside the checkpoint, when that dataset
  is here; else, as a last resort, a synthetic scene made by the project (``data.synth``), labelled
  "synthetic sample: not like real imagery" (a model trained on real imagery may see buildings all
  over it).
No ``/docs``, ``/redoc`` or ``/openapi.json``: FastAPI's docs pages load their JavaScript from a CDN.

What one request cannot do (each refusal is one ``detail`` line naming the upload, never a server path):

* **Decompress a bomb.** The image's size is read from its header (PNG IHDR, JPEG SOF, BMP, the first
  IFD of a TIFF or BigTIFF: :func:`image_size`) before anything is decoded; past ``max_pixels``
  (default :data:`MAX_PIXELS`, 8192², ``--max-pixels``) it is a 413 naming the upload and the declared
  size. A format whose header is not read here is not decoded either (400). A GeoTIFF is read from
  memory (GDAL's ``/vsimem``, no temporary file) in windows of :data:`WINDOW_PIXELS`; on a server
  without rasterio it is a 501 naming the extra, not a plain picture with its georeference dropped.
* **Fill memory or disk with its body.** The multipart body is parsed here as it arrives (no
  ``UploadFile``: starlette spools those to /tmp past 1 MB), counted chunk by chunk whether or not a
  Content-Length was declared: past ``max_upload_bytes`` a 413 (a declared size over it is refused
  before reading). Only the ``file`` field's bytes are kept, in memory.
* **Hold a connection.** The request headers must be complete within ``header_timeout`` of the
  connection opening or of the previous answer (:func:`_protocol`; slow-loris), the body within
  ``body_timeout`` of its headers (408, then the connection is closed); idle keep-alive connections
  close after ``keep_alive`` s; past ``max_connections`` open connections uvicorn answers 503.
* **Stall the others.** Decoding, the model and encoding the answer run in a worker thread
  (``workers`` slots, one lock around the model), not on the event loop. At most ``workers + queue``
  uploads are admitted at a time (being received, waiting or running; each holds at most
  ``max_upload_bytes``): one more is answered 503 at once with a ``Retry-After`` (seconds, from the
  recent time per request).
* **Reach it from elsewhere.** The ``Host`` header must be one of ``allowed_hosts`` (the loopback names
  with the port by default; 400 otherwise: DNS rebinding), a POST with an ``Origin`` must come from
  the same origin (403: a page the user visits cannot make the server predict), and with a ``token``
  every route but the page needs ``Authorization: Bearer <token>`` (401). :func:`check_exposure`
  refuses to serve beyond loopback without a token unless told ``--no-auth``.

Other refusals: 400 for an empty file, an undecodable image or a multi-class model asked for polygons,
415 for a body that is not multipart/form-data, 422 when the ``file`` field is missing. The
probabilities of the last few uploads are kept (:class:`RecentProbabilities`, by the upload's
SHA-256), so the page asking for the same image at another threshold runs the rule again, not the model.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time.
import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import re
import struct
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from buildings.errors import BuildingsError, ConfigError, missing_extra, require, shorten
from buildings.geo.tiff import carries_geotiff_tags, is_tiff, tiff_size
from buildings.serve_page import PAGE

__all__ = ["MAX_PIXELS", "PAGE", "SERVER_MODULES", "SYNTHETIC_LABEL", "RecentProbabilities", "Sample", "check_exposure",
           "check_installed", "create_app", "find_sample", "image_size", "is_loopback", "serve", "synthetic_sample"]

CHUNK = 1 << 20
MAX_PIXELS = 8192 * 8192  # default pixel budget (67,108,864): ~0.2 GB as RGB, ~1 GB at the model's peak
WINDOW_PIXELS = 1 << 22  # a GeoTIFF is read in windows of whole rows, about this many pixels each
FORM_SLACK = 64 << 10  # multipart framing (boundaries, part headers, other small fields) allowed past the file
HEADER_BYTES = 16 << 10  # request line + headers (uvicorn's h11_max_incomplete_event_size)
# An over-limit body is read and discarded (never parsed or kept) before the 413 goes out, up to these
# bounds, as nginx's lingering close does: closing a socket with unread data makes the kernel reset the
# connection, and a client that sends its whole body before reading (urllib, requests) then sees
# a broken pipe instead of the 413. Past the bounds the 413 is sent anyway and the connection closed.
# A client that sent "Expect: 100-continue" is waiting for our answer before sending: nothing to drain.
DRAIN_BYTES = 256 << 20
DRAIN_SECONDS = 10.0
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# -- the size an image declares, from its header ------------------------------------------------------
# The standard library (struct) and nothing else: Pillow would read these headers too (its
# Image.open reads only the header), but it is no dependency of this project (pyproject.toml; here it
# comes only with matplotlib and tensorboard), and OpenCV has no header-only reader. Each reader looks
# at the bytes the decoder will look at first, so the size checked is the size that would be decoded.
# The TIFF reader is buildings.geo.tiff's (predict reads GeoTIFF tags with it).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # not C4 (DHT), C8, CC


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) declared by the header of an encoded image — PNG, JPEG, BMP, TIFF or
    BigTIFF — without decoding it; None for another format or a header that cannot be read."""
    head = bytes(data[:32])
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if head[12:16] != b"IHDR" or len(head) < 24:
            return None
        width, height = struct.unpack(">II", head[16:24])
        return "PNG", width, height
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if head[:2] == b"BM" and len(head) >= 26:
        (dib,) = struct.unpack("<I", head[14:18])
        if dib == 12:  # BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[18:22])
        else:
            width, height = struct.unpack("<ii", head[18:26])
        return "BMP", abs(width), abs(height)  # a negative height is a top-down bitmap
    if is_tiff(head):
        return tiff_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    """The first frame header (SOF) of a JPEG, walking the marker segments from SOI (an EXIF
    thumbnail inside APP1 is skipped with its segment)."""
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None  # bytes between segments: libjpeg warns, strict decoding refuses
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if length < 2:
            return None
        if marker in _SOF:
            if at + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return "JPEG", width, height
        at += 2 + length
    return None


# -- decoding, within the budget ---------------------------------------------------------------------
class Refusal(Exception):
    """A request answered with ``status`` and one ``detail`` line (``headers`` added)."""

    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def check_pixels(data: bytes, name: str, max_pixels: int) -> tuple[str, int, int]:
    """The upload's declared (format, width, height), or a :class:`Refusal`: 400 for a header not read
    here, 413 past ``max_pixels``."""
    size = image_size(data)
    if size is None or not size[1] or not size[2]:
        raise Refusal(400, f"{name}: not a decodable image ({len(data)} bytes; this server reads JPEG, PNG, BMP "
                           "and TIFF/GeoTIFF/BigTIFF)")
    kind, width, height = size
    if width * height > max_pixels:
        raise Refusal(413, f"{name}: its {kind} header declares {width}x{height} pixels ({width * height / 1e6:.1f} "
                           f"megapixels), over this server's budget of {max_pixels:,} pixels (--max-pixels)")
    return size


def _read_geotiff(data: bytes, name: str, max_pixels: int):
    """(RGB uint8, transform, crs) of a georeferenced TIFF read from memory in windows, or None when it
    has no CRS (then it is an image like any other, as for ``buildings predict``)."""
    import rasterio
    from rasterio.io import MemoryFile

    from buildings.geo.raster import GeoRaster

    with MemoryFile(bytes(data)) as memory:  # GDAL's /vsimem: never a file on disk, never its name in a message
        hidden = memory.name

        def named(message: str) -> str:
            message = message.replace(hidden, name)
            return message.replace(hidden.rsplit("/", 1)[-1], name)

        try:
            with GeoRaster.open(hidden) as raster:
                if raster.crs is None:
                    return None
                height, width = raster.height, raster.width
                if height * width > max_pixels:  # GDAL's reading of the header agrees with ours, or this catches it
                    raise Refusal(413, f"{name}: {width}x{height} pixels, over this server's budget of "
                                       f"{max_pixels:,} pixels (--max-pixels)")
                image = np.empty((height, width, 3), np.uint8)
                rows = max(1, WINDOW_PIXELS // max(width, 1))
                for row in range(0, height, rows):
                    image[row:row + rows] = raster.read(row, 0, min(rows, height - row), width)
                return image, raster.transform, raster.crs
        except BuildingsError as err:  # GeoRaster's messages name the path it opened: name the upload instead
            raise Refusal(400, named(str(err))) from None
        except rasterio.errors.RasterioError as err:
            raise Refusal(400, named(f"{name}: unreadable GeoTIFF ({str(err)[:160]})")) from None


def _decode_upload(data: bytes, name: str, max_pixels: int):
    """(RGB uint8 image, transform or None, crs or None) of an uploaded image or GeoTIFF, within
    ``max_pixels`` (checked from the header first)."""
    from buildings.formats.images import decode_image

    check_pixels(data, name, max_pixels)
    if is_tiff(data):  # TIFF or BigTIFF: a GeoTIFF keeps its georeference
        try:
            import rasterio  # noqa: F401
        except ImportError:
            rasterio = None
        if rasterio is not None:
            geo = _read_geotiff(data, name, max_pixels)
            if geo is not None:
                return geo
        elif carries_geotiff_tags(data):  # not read as a plain picture, its georeference dropped
            raise Refusal(501, missing_extra(f"{name}: a GeoTIFF (this server reads it with its georeference)",
                                             "rasterio", "deploy"))
    try:
        return decode_image(bytes(data), name), None, None
    except BuildingsError as err:
        raise Refusal(400, str(err)) from None
    except cv2.error as err:
        raise Refusal(400, f"{name}: not a decodable image ({str(err).strip().splitlines()[-1][:120]})") from None


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _json(content) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


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


# -- admission: a fixed number of worker slots and a bounded queue -----------------------------------
class Admission:
    """At most ``slots + queue`` requests inside at once (receiving their body, waiting for a worker
    or running). Used from the event loop only; ``done`` (the time one request took) from any thread."""

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue, self.inside = slots, queue, 0
        self.seconds = None  # recent seconds per request (exponential moving average)

    def enter(self) -> bool:
        if self.inside >= self.slots + self.queue:
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1

    def done(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead at the recent time per request."""
        per_request = 1.0 if self.seconds is None else self.seconds
        return max(1, min(3600, math.ceil(per_request * self.inside / self.slots)))


# -- the HTTP side -------------------------------------------------------------------------------------
def _header(scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]


def _has_body(scope) -> bool:
    length = _header(scope, b"content-length")
    return bool(_header(scope, b"transfer-encoding")) or any(v.strip() not in ("", "0") for v in length)


async def _drain(receive, scope, seconds: float = DRAIN_SECONDS) -> None:
    """Read and drop the request's body, up to DRAIN_BYTES / ``seconds`` (nothing when the client
    waits for a 100 Continue, or sent no body)."""
    if not _has_body(scope) or any(v.strip().lower() == "100-continue" for v in _header(scope, b"expect")):
        return
    loop = asyncio.get_running_loop()
    read, deadline = 0, loop.time() + seconds
    while read <= DRAIN_BYTES:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _answer(send, status: int, detail: str, headers: dict | None = None) -> None:
    """A JSON ``{"detail": ...}`` answer, closing the connection."""
    body = _json({"detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")] + [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _split_host(value: str) -> tuple[str, str | None]:
    """``name:port`` → (name, port); ``[::1]:8000`` → ("[::1]", "8000"); no port → (name, None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, colon, port = value.rpartition(":")
    return (name, port) if colon else (value, None)


class HostRules:
    """The ``Host`` values served: each allowed name without a port or with the served ``port``
    (any port when ``port`` is None), or ``name:port`` exactly as given; ``*`` allows any."""

    def __init__(self, allowed, port: int | None):
        self.any = "*" in allowed
        self.names, self.exact = set(), set()
        for entry in allowed:
            name, given = _split_host(entry)
            (self.exact.add(f"{name}:{given}") if given else self.names.add(name))
        self.port = None if not port else str(port)

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        name, port = _split_host(host)
        if port is not None and f"{name}:{port}" in self.exact:
            return True
        return name in self.names and (port is None or self.port is None or port == self.port)

    def describe(self) -> str:
        if self.any:
            return "any"
        suffix = f":{self.port}" if self.port else ""
        return ", ".join(sorted(n + suffix for n in self.names) + sorted(self.exact))


class Guard:
    """ASGI middleware before anything else: the Host allow-list (400), the bearer token (401; the
    page itself is open: it is static and asks for the token in its URL's fragment), the same-origin
    check on POST (403) and a declared Content-Length over the limit (413). Each refusal reads and
    drops what body was sent (see DRAIN_BYTES) and closes the connection."""

    def __init__(self, app, *, hosts: HostRules, token: str | None, max_body: int, drain_seconds: float):
        self.app, self.hosts, self.token = app, hosts, token
        self.max_body, self.drain_seconds = max_body, drain_seconds

    def refusal(self, scope) -> Refusal | None:
        hosts = _header(scope, b"host")
        if len(hosts) != 1:
            return Refusal(400, "the request needs exactly one Host header")
        host = hosts[0]
        if not self.hosts.allows(host):
            return Refusal(400, f"Host {shorten(host)!r} is not served here (served: {self.hosts.describe()}; "
                                "add a name with --allow-host)")
        method, path = scope["method"], scope["path"]
        if self.token is not None and not (method in ("GET", "HEAD") and path == "/"):
            given = _header(scope, b"authorization")
            scheme, _, credential = (given[0] if len(given) == 1 else "").strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode("latin-1"),
                                                                           self.token.encode()):
                return Refusal(401, "this server needs a bearer token: send 'Authorization: Bearer <token>' (the "
                                    "page: open /#token=<token>)", {"WWW-Authenticate": 'Bearer realm="buildings"'})
        origins = _header(scope, b"origin")
        if method in UNSAFE_METHODS and origins:
            origin = origins[0].strip()
            netloc = re.sub(r"^[a-z][a-z0-9+.-]*://", "", origin.lower()).rstrip("/")
            if origin.lower() == "null" or len(origins) > 1 or netloc != host.strip().lower():
                return Refusal(403, f"{method} from origin {shorten(origin)!r} refused: only pages served here "
                                    f"(origin {host}) may post to this server")
        declared = _header(scope, b"content-length")
        if declared and declared[0].strip().isdigit() and int(declared[0]) > self.max_body:
            return Refusal(413, f"upload of {int(declared[0])} bytes is over the {self.max_body - FORM_SLACK}-byte "
                                "upload limit")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        await _drain(receive, scope, self.drain_seconds)
        await _answer(send, refusal.status, refusal.detail, refusal.headers)


class _Upload:
    """The ``file`` field of a multipart body, parsed as it arrives (python-multipart), its bytes kept
    up to ``limit``; other fields are parsed and dropped."""

    def __init__(self, boundary: bytes, limit: int):
        from python_multipart.multipart import MultipartParser

        self.limit, self.filename, self.data, self.found, self.over = limit, None, bytearray(), False, False
        self._name = self._value = b""
        self._headers: dict = {}
        self._keep = False
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data,
            "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished})

    def _part_begin(self):
        self._headers, self._keep = {}, False

    def _header_field(self, data, start, end):
        self._name += data[start:end]

    def _header_value(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _headers_finished(self):
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file" and not self.found:
            self.found, self._keep = True, True
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    def _part_data(self, data, start, end):
        if self._keep and not self.over:
            if len(self.data) + (end - start) > self.limit:
                self.over, self.data = True, bytearray()
            else:
                self.data += data[start:end]


async def _receive_upload(request, *, limit: int, timeout: float, drain_seconds: float) -> tuple[str, bytearray]:
    """(name of the upload for messages, its bytes) from a multipart body read within ``timeout``
    seconds and ``limit`` bytes, or a :class:`Refusal` (413 as soon as the body passes the limit, 408
    when it stops coming, 415 / 400 / 422 for a body that is not a form with a ``file``)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header
    from starlette.requests import ClientDisconnect

    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        await _drain(request.receive, request.scope, drain_seconds)
        raise Refusal(415, "POST /predict takes a multipart/form-data body with the image in a 'file' field "
                           "(curl -F file=@tile.png ...)")
    try:
        upload = _Upload(options[b"boundary"], limit)
    except FormParserError:
        raise Refusal(400, "the multipart boundary is not valid") from None
    loop = asyncio.get_running_loop()
    deadline, received = loop.time() + timeout, 0

    def name() -> str:
        return shorten(upload.filename) if upload.filename else "upload"

    while True:
        try:
            message = await asyncio.wait_for(request.receive(), max(deadline - loop.time(), 0))
        except TimeoutError:
            raise Refusal(408, f"{name()}: the body did not arrive within {timeout:g} s (--body-timeout); "
                               f"{received} bytes came") from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit + FORM_SLACK or upload.over:
            await _drain(request.receive, request.scope, drain_seconds)
            raise Refusal(413, f"{name()}: over the {limit}-byte upload limit (refused after {received} bytes, "
                               "none kept)")
        try:
            upload.parser.write(chunk)
        except FormParserError:
            raise Refusal(400, f"{name()}: the multipart body is not valid") from None
        if upload.over:
            await _drain(request.receive, request.scope, drain_seconds)
            raise Refusal(413, f"{name()}: over the {limit}-byte upload limit (refused after {received} bytes, "
                               "none kept)")
        if not message.get("more_body", False):
            break
    try:
        upload.parser.finalize()
    except FormParserError:
        raise Refusal(400, f"{name()}: the multipart body is not valid") from None
    if not upload.found:
        raise Refusal(422, "no 'file' field in the form: send the image as file=@tile.png")
    return name(), upload.data


# -- the page's sample: a tile of the model's own data ------------------------------------------------
SYNTHETIC_LABEL = "synthetic sample: not like real imagery"
SAMPLE_SEARCH = 256  # validation tiles looked at, at most, for one with buildings (start-up stays short)


@dataclasses.dataclass(frozen=True)
class Sample:
    """The image ``GET /sample.png`` answers (``png``), what the page says it is (``label``), and
    for a synthetic one why no tile of the model's data could be used (``reason``, for the log)."""

    png: bytes
    label: str
    synthetic: bool
    reason: str | None = None

    def describe(self) -> dict:
        """What ``/health`` says of it."""
        return {"label": self.label, "synthetic": self.synthetic}


def synthetic_sample(reason: str | None = None) -> Sample:
    """The last resort: a synthetic scene (``data.synth``, seeded), labelled :data:`SYNTHETIC_LABEL`."""
    from buildings.data.synth import synth_scene

    image, _ = synth_scene(np.random.default_rng(7), 512, p_empty=0.0)  # BGR, as OpenCV writes
    return Sample(_png(image), SYNTHETIC_LABEL, synthetic=True, reason=reason)


def find_sample(checkpoint) -> Sample:
    """The page's sample for ``checkpoint``: the first validation tile with buildings in its truth
    (else the first) of the dataset that the run's ``config.json`` beside it names (``options.data``
    and ``options.data_dir``, as ``buildings fit`` recorded them: ``training.run_dir``), opened
    with ``data.splits.open_split``; when there is no such file or dataset, :func:`synthetic_sample`
    saying why."""
    from pathlib import Path

    from buildings.config import load_run_config
    from buildings.data.splits import decode_record, open_split, record_name

    config = Path(checkpoint).parent / "config.json"
    if not config.is_file():
        return synthetic_sample(f"no run config.json beside {checkpoint} to name the model's dataset")
    try:
        options = load_run_config(config)
        source = open_split(options.data, "validation", options.data_dir)
        chosen = None
        for index in range(min(len(source), SAMPLE_SEARCH)):
            image, truth = decode_record(source[index])
            if chosen is None or (source.task.binary and truth.any()):
                chosen = (record_name(source[index]), image, truth)
            if not source.task.binary or truth.any():
                break
    except BuildingsError as err:
        return synthetic_sample(f"the dataset {config} names is not usable here: {err}")
    name, image, truth = chosen
    label = f"sample: validation tile {name} of {source.label}, the model's own data"
    if source.task.binary:
        label += f" ({100 * float(np.mean(truth > 0)):.1f} % building in its truth)"
    return Sample(_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), label, synthetic=False)


def create_app(predictor, *, max_upload_bytes: int = 50 << 20, max_pixels: int = MAX_PIXELS, workers: int = 1,
               queue: int = 8, body_timeout: float = 30.0, token: str | None = None,
               allowed_hosts=LOOPBACK_NAMES, port: int | None = None, sample: Sample | None = None):
    """The FastAPI app serving ``predictor`` (a :class:`~buildings.inference.Predictor`) with its
    rule (``predictor.rule``: threshold and post-processing; a request's ``threshold`` replaces the
    threshold only). The limits are the module docstring's; ``port``: the one ``Host`` headers
    name with the allowed names (None: any); ``sample``: the page's (:func:`find_sample`; None:
    the synthetic one)."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.requests import ClientDisconnect

    from buildings.formats.rle import encode_rle

    rule = predictor.rule
    threshold = rule.threshold
    task = predictor.task
    sample = sample or synthetic_sample()
    lock = threading.Lock()
    recent = RecentProbabilities()
    admission = Admission(workers, queue)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="buildings-predict")
    drain_seconds = min(DRAIN_SECONDS, body_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="buildings", description="Building masks from aerial images", lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN
    app.add_middleware(Guard, hosts=HostRules(allowed_hosts, port), token=token,
                       max_body=max_upload_bytes + FORM_SLACK, drain_seconds=drain_seconds)
    health_answer = {"status": "ok", "models": [m.name for m in predictor.models], "num_classes": task.num_classes,
                     "tta": predictor.tta, "threshold": threshold, "rule": rule.describe(),
                     "postprocess": rule.postprocess.describe(), **dataclasses.asdict(rule.postprocess),
                     "vote": rule.majority, "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels,
                     "sample": sample.describe()}

    @app.get("/health")
    async def health():
        # On the event loop, from what was known at start: never the lock, the model or a thread.
        return {**health_answer, "queue": {"slots": workers, "limit": queue, "busy": admission.inside}}

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.replace("__THRESHOLD__", f"{threshold:g}")

    @app.get("/sample.png")
    def sample_png():
        return Response(sample.png, media_type="image/png")

    def work(data: bytearray, name: str, format: str, threshold_):
        """Everything heavy, in a worker thread: hash, decode, model, rule, encoding the answer."""
        started = time.monotonic()
        try:
            key = hashlib.sha256(data).hexdigest()
            known = recent.get(key)
            if known is None:
                image, transform, crs = _decode_upload(data, name, max_pixels)
                del data
                with lock:
                    probs = predictor.probabilities(image)
                del image
                known = (probs, transform, crs)
                recent.put(key, known)
            probs, transform, crs = known
            if format == "probability":
                return _png(np.round(probs[..., 0] * 255).astype(np.uint8)), "image/png"
            asked = rule if threshold_ is None else rule.with_threshold(threshold_)
            mask = asked.mask(probs)  # the one way to a mask: the rule
            if format == "png":
                return _png(task.mask_png(mask)), "image/png"
            if format == "rle":
                return _json({"name": name, "rle": encode_rle(mask), "height": int(mask.shape[0]),
                              "width": int(mask.shape[1]), "building_pixels": int(mask.sum())}), "application/json"
            return _json(_geojson(mask, probs[..., 0], transform, crs)), "application/geo+json"
        except MemoryError:
            raise Refusal(413, f"{name}: too large for this server's memory") from None
        finally:
            admission.done(time.monotonic() - started)

    def refused(refusal: Refusal):
        return JSONResponse({"detail": refusal.detail}, status_code=refusal.status,
                            headers={"Connection": "close", **refusal.headers})

    @app.post("/predict")
    async def predict(request: Request, format: str = Query("png"),
                      threshold_: float | None = Query(None, alias="threshold", gt=0, lt=1)):
        if format not in ("png", "rle", "geojson", "probability"):
            refusal = Refusal(400, f"format {format!r}: use png, rle, geojson or probability")
        elif threshold_ is not None and predictor.vote:
            refusal = Refusal(400, "this server ensembles by majority vote: each model's ballot is cast at the "
                                   f"served threshold ({rule.threshold:g}); a request cannot change it")
        elif format in ("geojson", "probability", "rle") and not task.binary:
            refusal = Refusal(400, f"format {format} is for building (binary) models; this one has "
                                   f"{task.num_classes} classes")
        elif not admission.enter():
            waiting = admission.inside
            refusal = Refusal(503, f"busy: {waiting} uploads are being received, waiting or predicted (at most "
                                   f"{workers} running and {queue} more, --queue); retry later",
                              {"Retry-After": str(admission.retry_after())})
        else:
            refusal = None
        if refusal is not None:
            await _drain(request.receive, request.scope, drain_seconds)
            return refused(refusal)
        try:
            name, data = await _receive_upload(request, limit=max_upload_bytes, timeout=body_timeout,
                                               drain_seconds=drain_seconds)
            if not data:
                raise Refusal(400, f"{name}: empty file (0 bytes)")
            check_pixels(data, name, max_pixels)  # on the loop: the header only, before queueing the work
            content, media = await asyncio.get_running_loop().run_in_executor(
                executor, work, data, name, format, threshold_)
        except Refusal as refusal:
            return refused(refusal)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody to answer
        except BuildingsError as err:
            raise HTTPException(400, str(err)) from None
        finally:
            admission.leave()
        return Response(content, media_type=media)

    return app


# -- start-up ----------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` serves this machine only: a loopback address or ``localhost``
    (any other name might resolve beyond it)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SERVER_MODULES = ("fastapi", "uvicorn", "python_multipart")  # the web stack, from the deploy extra


def check_installed() -> None:
    """Refuse to serve, before any checkpoint is loaded, when the web stack is not installed: one
    line naming the module and the extra that installs it. (rasterio is optional here: without it
    a GeoTIFF upload is read as a plain image.)"""
    require("buildings serve", "deploy", *SERVER_MODULES)


def check_exposure(host: str, token: str | None, no_auth: bool) -> str | None:
    """Whether serving on ``host`` may start: a :class:`ConfigError` (one line) beyond loopback without
    a token and without ``no_auth``; the warning line to print when ``no_auth`` opens it to all."""
    if token and no_auth:
        raise ConfigError("--token and --no-auth together: give one (a token, or serving without one)")
    if is_loopback(host) or token:
        return None
    if not no_auth:
        raise ConfigError(f"--host {host} is not a loopback address: anyone who can reach it could use this "
                          "server; give a bearer token (--token or $BUILDINGS_SERVE_TOKEN), or --no-auth to "
                          "serve without one")
    return (f"WARNING: --no-auth: serving on {host} WITHOUT AUTHENTICATION: anyone who can reach this address "
            "can run the model and read its answers")


def served_hosts(host: str, allow_hosts=()) -> tuple[str, ...]:
    """The Host names accepted: the loopback names, the address listened on when it is one address
    (not 0.0.0.0 / ::), and ``allow_hosts``."""
    names = list(LOOPBACK_NAMES)
    bare = host.strip().strip("[]")
    if bare not in ("", "0.0.0.0", "::"):
        names.append(f"[{bare}]" if ":" in bare else bare)
    return tuple(dict.fromkeys(names + list(allow_hosts)))


def _protocol(header_timeout: float):
    """uvicorn's h11 protocol with a deadline for request headers: a connection whose next request's
    headers are not complete ``header_timeout`` seconds after it opened (or after the last answer) is
    closed. uvicorn itself has none (its keep-alive timer stops at the first byte), so a client sending
    a header a minute (slow-loris) would otherwise hold its connection for ever. Built on uvicorn's
    own H11Protocol (its ``http=`` option takes a class): ``connection_made``, ``handle_events``,
    ``on_response_complete`` and ``connection_lost`` are extended, not replaced."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline = None

        def _idle(self) -> bool:  # no request in the app's hands: waiting for (the rest of) headers
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            if self._idle() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if not self._idle():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._idle() and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def serve(predictor, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 50.0,
          max_pixels: int = MAX_PIXELS, queue: int = 8, token: str | None = None, allow_hosts=(),
          body_timeout: float = 30.0, header_timeout: float = 10.0, keep_alive: float = 5.0,
          max_connections: int = 256, sample: Sample | None = None) -> None:
    """Serve ``predictor`` until interrupted (call :func:`check_exposure` first); ``sample``: the
    page's (:func:`find_sample`)."""
    import uvicorn

    app = create_app(predictor, max_upload_bytes=int(max_upload_mb * (1 << 20)), max_pixels=max_pixels,
                     queue=queue, body_timeout=body_timeout, token=token or None,
                     allowed_hosts=served_hosts(host, allow_hosts), port=port, sample=sample)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", http=_protocol(header_timeout), ws="none",
                            timeout_keep_alive=keep_alive, h11_max_incomplete_event_size=HEADER_BYTES,
                            limit_concurrency=max_connections, server_header=False)
    uvicorn.Server(config).run()
