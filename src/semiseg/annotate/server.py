"""The annotation server: one page (niivue) and a small JSON/bytes API over a :class:`Session`.

Local only: it binds 127.0.0.1, answers only requests whose ``Host`` is its own address (a page on
another site that resolves its name to 127.0.0.1, DNS rebinding, gets 403) and refuses requests
whose ``Origin`` is another site; it serves a fixed list of files from its static folder and
nothing else; uploads (the drawing) are capped at the size of the image's voxels.

API (page <-> server; every error is JSON ``{"error": message}``, 400 bad input, 409 busy):

- ``GET /api/meta``: shapes, label names and colours, propagation axis, annotated slices, versions;
- ``GET /api/image.nii``: channel 0 in the viewer's voxel order (NIfTI, sent gzip-encoded);
- ``GET /api/labels``: the current label map in the viewer's voxel order (uint8, gzip-encoded);
- ``POST /api/drawing``: the viewer's drawing (uint8 voxels, gzip with ``Content-Encoding: gzip``);
- ``POST /api/empty?slice=K``, ``/api/undo``, ``/api/redo``, ``/api/propagate``, ``/api/save``;
- ``GET /api/download``: the current label map as a NIfTI file in the image's geometry.
"""
from __future__ import annotations

import asyncio
import gzip
import queue
import sys
import time
from concurrent.futures import Future
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..utils import SemisegError
from .session import BusyError, Session

STATIC = Path(__file__).parent / "static"
NIIVUE = STATIC / "node_modules" / "@niivue" / "niivue" / "dist" / "niivue.umd.js"
FILES = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


def niivue_missing() -> str | None:
    """Why the viewer cannot be served (niivue not installed), or None."""
    if NIIVUE.is_file():
        return None
    return (f"the viewer's JavaScript (niivue, from the npm registry) is not installed: run\n"
            f"    npm ci --prefix {STATIC}\n(the README's set-up commands do this)")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class MainThreadWorker:
    """Runs submitted functions on the thread that calls :meth:`run` (the main thread): PyTorch on
    CPU runs about twice as slow from a secondary thread (its OpenMP workers), so the server's
    threads hand the propagation to the main thread and await it."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()

    def submit(self, fn) -> Future:
        f: Future = Future()
        self.jobs.put((fn, f))
        return f

    def run(self, stop) -> None:
        while not stop():
            try:
                fn, f = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            if f.set_running_or_notify_cancel():
                try:
                    f.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting request
                    f.set_exception(e)


def create_app(session: Session, port: int, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
               worker: MainThreadWorker | None = None) -> FastAPI:
    """The FastAPI application serving ``session`` at ``http://127.0.0.1:port``; propagations run
    on ``worker`` (else in the thread pool, as under TestClient)."""
    app = FastAPI(title="semiseg annotate", docs_url=None, redoc_url=None, openapi_url=None)
    allowed_hosts = {f"{h}:{port}" for h in hosts}
    allowed_origins = {f"http://{h}" for h in allowed_hosts}
    cap = int(session.image[0].size) + (1 << 20)  # a drawing's voxels (raw), plus room for gzip's headers

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        if host not in allowed_hosts:
            log(f"refused {request.method} {request.url.path}: Host {host!r} is not this server's")
            return JSONResponse({"error": f"Host {host!r} is not this server's address"}, 403)
        if origin is not None and origin not in allowed_origins:
            log(f"refused {request.method} {request.url.path}: Origin {origin!r}")
            return JSONResponse({"error": f"requests from {origin!r} are not accepted"}, 403)
        return await call_next(request)

    def error(e: Exception) -> JSONResponse:
        code = 409 if isinstance(e, BusyError) else 400
        log(f"error: {e}")
        return JSONResponse({"error": str(e)}, code)

    async def call(fn, *args):
        try:
            out = await run_in_threadpool(fn, *args)
        except SemisegError as e:
            return error(e)
        return JSONResponse(dict(out, meta=session.meta()))

    def static(name: str) -> Response:
        p = STATIC / name
        return FileResponse(p, media_type=TYPES[p.suffix], headers={"Cache-Control": "no-cache"})

    for route, name in FILES.items():
        app.add_api_route(route, lambda name=name: static(name), methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/vendor/niivue.umd.js")
    def niivue_js():
        why = niivue_missing()
        if why:
            return Response(f"/* {why} */", 404, media_type="text/javascript")
        return FileResponse(NIIVUE, media_type=TYPES[".js"], headers={"Cache-Control": "max-age=3600"})

    def gz(data: bytes, media: str) -> Response:
        return Response(gzip.compress(data, 1), media_type=media,
                        headers={"Content-Encoding": "gzip", "Cache-Control": "no-store"})

    @app.get("/api/meta")
    def meta():
        return session.meta()

    @app.get("/api/image.nii")
    async def image():
        return gz(await run_in_threadpool(session.image_nifti), "application/octet-stream")

    @app.get("/api/labels")
    async def labels():
        return gz(await run_in_threadpool(session.page_labels), "application/octet-stream")

    @app.post("/api/drawing")
    async def drawing(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return JSONResponse({"error": f"upload of {declared} bytes refused (at most {cap})"}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                return JSONResponse({"error": f"upload larger than {cap} bytes refused"}, 413)
        gzipped = request.headers.get("content-encoding", "").lower() == "gzip"

        def apply():
            return session.draw(session.decode_drawing(bytes(body), gzipped))
        return await call(apply)

    @app.post("/api/empty")
    async def empty(slice: int):
        return await call(session.mark_empty, slice)

    @app.post("/api/undo")
    async def undo():
        return await call(session.step, -1)

    @app.post("/api/redo")
    async def redo():
        return await call(session.step, 1)

    @app.post("/api/propagate")
    async def propagate():
        try:
            session.reserve()  # a second request while one runs or waits: 409 at once
        except BusyError as e:
            return error(e)
        log(f"propagating ({session.meta_method()})")
        try:
            if worker is not None:
                out = await asyncio.wrap_future(worker.submit(session.propagate_reserved))
            else:
                out = await run_in_threadpool(session.propagate_reserved)
        except SemisegError as e:
            return error(e)
        log(f"propagated in {out['seconds']:.2f} s")
        return JSONResponse(dict(out, meta=session.meta()))

    @app.post("/api/save")
    async def save():
        r = await call(session.save)
        if r.status_code == 200:
            log(f"saved {session.out}")
        return r

    @app.get("/api/download")
    async def download():
        data, name = await run_in_threadpool(session.download)
        return Response(data, media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return app


def serve(session: Session, port: int = 0, open_browser: bool = False) -> None:
    """Serve ``session`` on 127.0.0.1 (``port`` 0: a free one) until Ctrl+C or SIGTERM; prints the
    URL. The HTTP server runs in a thread, propagations on this (the main) thread."""
    import signal  # noqa: PLC0415 - only when serving
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import webbrowser  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    why = niivue_missing()
    if why:
        raise SemisegError(why)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        raise SemisegError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); choose another --port") from None
    sock.listen(64)  # before the URL is printed: a browser that comes at once is queued, not refused
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    worker = MainThreadWorker()
    server = uvicorn.Server(uvicorn.Config(create_app(session, port, worker=worker), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    print(f"semiseg annotate: {url}  (Ctrl+C to stop; labels are saved to {session.out} with Save)", flush=True)
    if open_browser:
        webbrowser.open(url)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill PID` stops as Ctrl+C does
    try:
        worker.run(lambda: stop.is_set() or not thread.is_alive())
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.should_exit = True
        thread.join(5)
    if session.saved_version is None and len(session.versions) > 1:
        print("stopped; nothing was saved", flush=True)
    elif not session.meta()["saved"] and session.saved_version is not None:
        print(f"stopped; changes after the last save were not saved (--labels {session.out} continues from it)",
              flush=True)
    else:
        print("stopped", flush=True)
