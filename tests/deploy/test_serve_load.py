"""``buildings serve`` under load and attack (issue 25): one real server on a free 127.0.0.1 port,
started with a bearer token, a 24-upload queue, an 8 MB upload limit and 2-second header and body
timeouts. Decompression bombs (a 50 KB GeoTIFF declaring 40000², a 2.6 MB PNG really holding 30000²
zero pixels, a JPEG header declaring 40000²) are refused with 413 in moments while the server's
memory (VmRSS in /proc) stays put; a chunked 120 MB upload is refused while it is received and
nothing is written to the server's temporary folder; a full queue answers 503 with Retry-After at
once; ``/health`` stays fast while 20 uploads are in flight; a client that declares a body and goes
quiet, and connections that never finish their headers (slow-loris), are dropped after the
timeouts; a request without the token gets 401. Every loop here is bounded in count and time, every
socket has a timeout, and the server is stopped at the end whatever happens."""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib

import cv2
import numpy as np
import pytest
from helpers import CRS, ROOT, TRANSFORM, brightness_model, free_port

pytest.importorskip("fastapi", reason="the [deploy] extra (fastapi, uvicorn) is not installed")
pytest.importorskip("rasterio", reason="the [deploy] extra is not installed")

TOKEN = "load-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUE = 24  # --queue: the 20 concurrent uploads all fit (1 running + 24)
TIMEOUT = 2.0  # --body-timeout and --header-timeout
UPLOAD_MB = 8
RSS_GROWTH = 1.5 * 2 ** 30  # the most the server may grow over the bombs (bytes)


def memory(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


class Server:
    def __init__(self, process, port, tmp):
        self.process, self.port, self.tmp = process, port, tmp
        self.url = f"http://127.0.0.1:{port}"

    def memory(self) -> dict:
        return memory(self.process.pid)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_load")
    checkpoint = brightness_model(folder / "brightness.keras")
    tmp = folder / "server_tmp"  # the server's TMPDIR: must stay empty
    tmp.mkdir()
    port = free_port()
    log = open(folder / "server.log", "w")  # a file, not a pipe: hundreds of access-log lines must not block it
    process = subprocess.Popen(
        [sys.executable, "-m", "buildings.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
         "--token", TOKEN, "--queue", str(QUEUE), "--max-upload-mb", str(UPLOAD_MB), "--body-timeout", str(TIMEOUT),
         "--header-timeout", str(TIMEOUT)],
        cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "torch", "TMPDIR": str(tmp)}, stdout=log, stderr=subprocess.STDOUT)
    running = Server(process, port, tmp)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(running.url + "/health", headers=AUTH)
                with urllib.request.urlopen(request, timeout=2) as response:
                    running.health = json.load(response)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail("serve exited: " + (folder / "server.log").read_text()[-2000:])
                if time.monotonic() > deadline:
                    pytest.fail("serve did not answer /health in 120 s")
                time.sleep(0.25)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(url: str, data: bytes, filename: str = "tile.png", headers=None, timeout: float = 60):
    """(status, headers (case-insensitive), body) of a multipart POST of ``data``."""
    body, kind = multipart(data, filename)
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": kind, **AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def get_health(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url + "/health", headers=AUTH), timeout=timeout) as response:
        return json.load(response)


def connect(server, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or ``seconds`` pass (False)."""
    deadline, got = time.monotonic() + seconds, b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return got, True
        if not chunk:
            return got, True
        got += chunk
    return got, False


# -- the bombs -------------------------------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of width x height black RGB pixels, ~1/1000 of their size: the zlib stream is one
    1 MB block of zeros deflated after a full flush (so it can be repeated byte for byte), repeated."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw, block = height * (1 + 3 * width), 1 << 20  # each row: filter byte 0, then RGB
    deflate = zlib.compressobj(9)
    first = deflate.compress(b"\0" * block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(b"\0" * block) + deflate.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(raw, block)
    stream = first + again * (whole - 1) + deflate.compress(b"\0" * rest) + deflate.flush(zlib.Z_FULL_FLUSH)
    stream += b"\x01\x00\x00\xff\xff" + struct.pack(">I", ((raw % 65521) << 16) | 1)  # final empty block, Adler-32
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def geotiff_bomb(path, side: int = 40000):
    """A georeferenced side x side RGB GeoTIFF of ~50 KB: tiled, sparse (one tile written)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", height=side, width=side, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                       sparse_ok=True) as out:
        out.write(np.full((3, 512, 512), 200, np.uint8), window=Window(0, 0, 512, 512))
    return path.read_bytes()


def jpeg_bomb(side: int = 40000) -> bytes:
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def test_the_png_bomb_is_a_real_one():
    small = png_bomb(1000, 700)  # the same construction, small enough to decode here
    image = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (700, 1000, 3) and not image.any() and len(small) < 5000


def test_a_request_without_the_token_gets_401(server):
    request = urllib.request.Request(server.url + "/health")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in json.loads(refused.value.read())["detail"]
    status, _, _ = post(server.url + "/predict", b"x", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:  # the page itself: static, open
        assert response.status == 200


def test_decompression_bombs_are_refused_from_their_headers_in_bounded_memory(server, tmp_path):
    bombs = [("ortho.tif", geotiff_bomb(tmp_path / "bomb.tif"), "TIFF header declares 40000x40000"),
             ("huge.png", png_bomb(30000, 30000), "PNG header declares 30000x30000"),
             ("huge.jpg", jpeg_bomb(), "JPEG header declares 40000x40000")]
    assert len(bombs[0][1]) < 80_000 and 2_000_000 < len(bombs[1][1]) < UPLOAD_MB << 20
    before = server.memory()
    peak, done = [before["VmRSS"]], threading.Event()

    def watch():  # the server's resident memory every 20 ms while the bombs go in (at most 60 s)
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            peak.append(server.memory()["VmRSS"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for name, data, declares in bombs * 2:  # twice: nothing accumulates either
            started = time.monotonic()
            status, _, body = post(server.url + "/predict?format=geojson", data, filename=name)
            took = time.monotonic() - started
            detail = json.loads(body)["detail"]
            assert status == 413, (name, status, detail)
            assert detail.startswith(f"{name}: its {declares} pixels") and "--max-pixels" in detail
            assert took < 5, f"{name}: refused after {took:.1f} s"
    finally:
        done.set()
        watcher.join(timeout=5)
    after = server.memory()
    growth = max(max(peak), after["VmHWM"] if after["VmHWM"] > before["VmHWM"] else 0) - before["VmRSS"]
    assert growth < RSS_GROWTH, f"the server grew by {growth / 2 ** 20:.0f} MB"
    assert get_health(server.url)["status"] == "ok"


def test_a_chunked_120_mb_upload_is_refused_while_received_and_never_written_to_disk(server):
    before = server.memory()
    boundary = uuid.uuid4().hex
    sock = connect(server, timeout=30)
    sent, refused_early = 0, False
    try:
        sock.sendall((f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n")
                     .encode())
        part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n"
                ).encode() + b"\x89PNG\r\n\x1a\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        piece = b"\0" * (1 << 20)
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        for _ in range(120):  # 120 MB, one chunk a megabyte
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                refused_early = True
                break
            sent += len(piece)
            assert not any(server.tmp.iterdir()), "the upload is being written to the server's TMPDIR"
        if not refused_early:
            sock.sendall(b"0\r\n\r\n")
        answer, _ = read_until_closed(sock, 30)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    detail = json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    assert detail.startswith("big.png: over the 8388608-byte upload limit (refused after") and "none kept" in detail
    assert not any(server.tmp.iterdir())
    assert server.memory()["VmHWM"] - before["VmRSS"] < 200 << 20  # never held: at most the limit, once


def hold(server, declared: int) -> socket.socket:
    """A connection that sends a POST's headers (declaring ``declared`` body bytes) and 100 bytes of
    its body, then goes quiet."""
    sock = connect(server)
    boundary = "b" * 20
    start = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n\r\n").encode()
    sock.sendall((f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n")
                 .encode() + start + b"\0" * (100 - len(start)))
    return sock


def wait_busy(server, count: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while get_health(server.url)["queue"]["busy"] != count:
        assert time.monotonic() < deadline, f"the server never had {count} uploads inside"
        time.sleep(0.02)


def test_a_quiet_body_is_dropped_after_the_body_timeout_and_a_full_queue_answers_503_at_once(server):
    tile = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
    holders = []
    try:
        for _ in range(1 + QUEUE):  # the one slot and the whole queue, each a body that stops coming
            holders.append(hold(server, declared=4 << 20))
        wait_busy(server, 1 + QUEUE)
        started = time.monotonic()
        status, headers, body = post(server.url + "/predict?format=rle", tile)
        took = time.monotonic() - started
        assert status == 503 and took < 1.0, (status, took, body[:200])
        assert int(headers["Retry-After"]) >= 1 and "--queue" in json.loads(body)["detail"]
        # Each holder is answered 408 and dropped once its body has not come for --body-timeout seconds.
        for sock in holders:
            answer, closed = read_until_closed(sock, TIMEOUT + 8)
            assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"did not arrive within 2 s (--body-timeout)" in answer and b"slow.png" in answer
        took = time.monotonic() - started
        assert TIMEOUT - 0.5 < took < TIMEOUT + 8, took
    finally:
        for sock in holders:
            sock.close()
    wait_busy(server, 0)
    assert post(server.url + "/predict?format=rle", tile)[0] == 200  # the slots came back


def test_a_declared_body_over_the_limit_is_refused_even_when_it_never_comes(server):
    sock = hold(server, declared=10 ** 12)
    try:
        answer, closed = read_until_closed(sock, TIMEOUT + 8)
    finally:
        sock.close()
    assert closed and answer.startswith(b"HTTP/1.1 413") and b"over the 8388608-byte upload limit" in answer


def test_slow_loris_connections_are_closed_after_the_header_timeout(server):
    socks = [connect(server) for _ in range(20)]
    try:
        for sock in socks:  # headers begun, never finished
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: ".encode())
        started = time.monotonic()
        assert get_health(server.url, timeout=5)["status"] == "ok"  # others are still served meanwhile
        for sock in socks:
            _, closed = read_until_closed(sock, TIMEOUT + 8 - (time.monotonic() - started))
            assert closed, "a connection that never finished its headers is still open"
        assert time.monotonic() - started < TIMEOUT + 8
    finally:
        for sock in socks:
            sock.close()


def test_request_headers_past_16_kib_are_refused_before_they_end(server):
    # uvicorn's h11_max_incomplete_event_size: headers still incomplete past 16 KiB are answered 400
    # at once (before the header timeout, which would close the connection without an answer).
    sock = connect(server)
    try:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Big: {'a' * (20 << 10)}"
                     .encode())
        answer, closed = read_until_closed(sock, 10)
    finally:
        sock.close()
    assert closed and answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_health_stays_fast_while_20_uploads_are_in_flight(server):
    rng = np.random.default_rng(25)
    tiles = [cv2.imencode(".png", rng.integers(0, 256, (512, 512, 3), np.uint8))[1].tobytes() for _ in range(20)]
    results = [None] * len(tiles)

    def upload(index):
        results[index] = post(server.url + "/predict?format=rle", tiles[index], filename=f"t{index}.png",
                              timeout=120)[0]

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(len(tiles))]
    for thread in threads:
        thread.start()
    latencies, busy = [], 0
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        started = time.monotonic()
        health = get_health(server.url, timeout=10)
        latencies.append(time.monotonic() - started)
        busy = max(busy, health["queue"]["busy"])
        time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    assert results == [200] * len(tiles), results
    assert busy >= 5 and len(latencies) >= 5, (busy, len(latencies))  # the uploads were in flight together
    p99 = float(np.percentile(latencies, 99))
    assert p99 < 0.5, f"/health p99 {p99 * 1000:.0f} ms over {len(latencies)} calls with {busy} uploads inside"
