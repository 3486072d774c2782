"""semiseg annotate: the session (orientation, versions, propagation, saving), its HTTP API (FastAPI's
TestClient), its guards (Host, Origin, paths, upload size), and the page in headless Chromium driven
with the mouse and keyboard as a person does."""

import gzip
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import geom, open_chromium, train_config

from semiseg.annotate.session import BusyError, RasView, Session
from semiseg.data.io import Geometry, read_image, write_image
from semiseg.utils import SemisegError

PORT = 8431


def rotation(deg, axis=2):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    m = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "permuted": np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),
    "oblique": rotation(20, 2) @ rotation(-15, 0) @ np.diag([1.0, -1, 1]),
}


def ellipsoid(shape=(24, 40, 44), centre=(12, 19, 22), radii=(8, 13, 15)):
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2 < 1).astype(np.uint8)


def write_case(folder: Path, direction="oblique", ending=".nii.gz", spacing=(0.9, 0.8, 2.5)):
    """An image (a bright ellipsoid in noise) and its label, with a given direction; spacing (x, y, z)."""
    lab = ellipsoid()
    img = (lab * 100 + np.random.default_rng(0).normal(0, 8, lab.shape)).astype(np.float32)
    g = geom(lab.shape, spacing, origin=(12.5, -30.0, 4.0), direction=tuple(DIRECTIONS[direction].reshape(-1)))
    folder.mkdir(parents=True, exist_ok=True)
    write_image(img, g, folder / f"img{ending}")
    write_image(lab, g, folder / f"gt{ending}")
    return folder / f"img{ending}", folder / f"gt{ending}", lab, g


def dice(a, b):
    return 2 * np.logical_and(a > 0, b > 0).sum() / max(1, (a > 0).sum() + (b > 0).sum())


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_page_order_is_what_simpleitk_calls_ras(name):
    arr = np.random.default_rng(1).integers(0, 200, (5, 6, 7)).astype(np.float32)
    g = geom(arr.shape, (0.7, 1.1, 3.0), (4.0, -2.0, 9.0), tuple(DIRECTIONS[name].reshape(-1)))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(g.spacing), img.SetOrigin(g.origin), img.SetDirection(g.direction)
    ras = sitk.DICOMOrient(img, "RAS")  # axes towards Right, Anterior, Superior: niivue's order
    v = RasView(g)
    assert np.array_equal(v.to_page(arr), sitk.GetArrayFromImage(ras))
    assert np.array_equal(v.from_page(v.to_page(arr)), arr)
    pg = v.page_geometry()
    np.testing.assert_allclose(pg.spacing, ras.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(pg.origin, ras.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(pg.direction, ras.GetDirection(), atol=1e-9)
    # a slice index along each image axis maps to the page and back
    for axis in range(3):
        for k in (0, arr.shape[axis] - 1):
            assert v.image_index(axis, v.page_index(axis, k)) == k


def page_drawing(session: Session, lab: np.ndarray, slices) -> bytes:
    """What the page sends: the label on ``slices`` (along the session's axis), page order, gzip."""
    sparse = np.zeros_like(lab)
    idx = [slice(None)] * 3
    idx[session.axis] = list(slices)
    sparse[tuple(idx)] = lab[tuple(idx)]
    return gzip.compress(session.view.to_page(sparse).tobytes())


@pytest.mark.parametrize("ending,direction", [(".nii.gz", "oblique"), (".nrrd", "oblique"), (".nrrd", "permuted")])
def test_session_draw_propagate_undo_save_keeps_the_geometry(tmp_path, ending, direction):
    img, _gt, lab, g = write_case(tmp_path / "in", direction, ending)
    out = tmp_path / "out" / f"labels{ending}"
    s = Session([img], out)
    assert s.axis == 0 and s.meta()["method"] == "interpolation"  # z has the largest spacing
    ks = [6, 12, 18]
    for i in range(3):  # three strokes, one slice each
        r = s.draw(s.decode_drawing(page_drawing(s, lab, ks[: i + 1]), True))
        assert len(r["changed"]) == 1
    m = s.meta()
    assert sorted(s.view.image_index(0, k) for k in m["annotated"]) == ks and m["version"] == 3
    p = s.propagate()
    assert p["seconds"] >= 0 and dice(s.labels(), lab) > 0.8
    assert (s.labels()[ks] == lab[ks]).all()
    s.step(-1)  # undo the propagation: only the painted slices
    assert s.labels().sum() == lab[ks].sum()
    s.step(1)
    assert dice(s.labels(), lab) > 0.8
    r = s.save()
    saved, g2 = read_image(out)
    assert not g.mismatch(g2, 1e-6) and np.array_equal(saved, s.labels())
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    assert s.meta()["saved"]
    # the download is the same label map as a NIfTI file with the same geometry
    data, name = s.download()
    (tmp_path / name).write_bytes(data)
    dl, g3 = read_image(tmp_path / name)
    assert np.array_equal(dl, saved) and not g.mismatch(g3, 1e-4)


def test_versions_empty_slices_and_busy(tmp_path):
    img, _gt, lab, _g = write_case(tmp_path / "in", "identity")
    s = Session([img], tmp_path / "out.nii.gz")
    s.draw(s.decode_drawing(page_drawing(s, lab, [8, 16]), True))
    s.propagate()
    filled = s.labels().copy()
    # "annotated as empty" clears the slice and makes it a reference that says "nothing here"
    k = 14
    s.mark_empty(s.view.page_index(0, k))
    assert s.labels()[k].sum() == 0 and k in {s.view.image_index(0, j) for j in s.meta()["annotated"]}
    assert s.meta()["annotated_empty"] == [s.view.page_index(0, k)]
    s.propagate()
    assert s.labels()[k].sum() == 0 and s.labels()[8].sum() == lab[8].sum()
    s.step(-1)
    s.step(-1)
    assert np.array_equal(s.labels(), filled)
    # a new stroke after undo drops what could be redone
    assert s.meta()["can_redo"]
    s.draw(s.decode_drawing(page_drawing(s, lab, [8, 16, 4]), True))
    assert not s.meta()["can_redo"]
    with pytest.raises(SemisegError, match="nothing to redo"):
        s.step(1)
    with s._busy:  # a propagation running: a second one, a stroke or an undo is refused (HTTP 409)
        with pytest.raises(BusyError):
            s.propagate()
        with pytest.raises(BusyError):
            s.draw(s.labels())
        with pytest.raises(BusyError):
            s.step(-1)


def test_session_refuses_bad_input_with_the_file_named(tmp_path, stcn_run):
    from semiseg.cli import main

    img, gt, lab, g = write_case(tmp_path / "in", "identity")
    out = tmp_path / "o" / "lab.nii.gz"
    # a start label of another geometry
    other = tmp_path / "other.nii.gz"
    write_image(lab[:, :-1], Geometry(g.spacing, g.origin, g.direction), other)
    with pytest.raises(SemisegError, match=re.escape(str(other))):
        Session([img], out, labels=other)
    # an image that cannot be read
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(img.read_bytes()[:300])
    with pytest.raises(SemisegError, match=re.escape(str(broken))):
        Session([broken], out)
    # the output in the input's folder; an output that exists
    with pytest.raises(SemisegError, match="input folder"):
        Session([img], img.parent / "lab.nii.gz")
    out.parent.mkdir()
    out.write_bytes(b"x")
    with pytest.raises(SemisegError, match="--labels"):
        Session([img], out)
    out.unlink()
    # a drawing of another shape
    s = Session([img], out)
    with pytest.raises(SemisegError, match="does not belong to this image"):
        s.decode_drawing(gzip.compress(bytes(100)), True)
    with pytest.raises(SemisegError, match="not valid gzip"):
        s.decode_drawing(b"not gzip", True)
    with pytest.raises(SemisegError, match="label 7"):
        s.decode_drawing(np.full(lab.size, 7, np.uint8).tobytes(), False)
    # a run that is not a propagation run, through the command line: exit 2, nothing written
    from semiseg.training import train

    seg = tmp_path / "segrun"
    train(stcn_run.parent / "work", seg, train_config(iterations=1), progress=False)
    assert main(["annotate", str(seg), "-i", str(img), "-o", str(out)]) == 2
    assert main(["annotate", "-i", str(img), "-o", str(out), "--labels", str(other)]) == 2
    assert not out.exists()


def test_session_with_a_propagation_run(stcn_run, tmp_path):
    """With an STCN run the annotated slices stay exactly as painted and the others are filled by it."""
    ds = Path(json.loads((stcn_run.parent / "work" / "plans.json").read_text())["dataset_path"])
    img = ds / "imagesTr" / "CASE_005_0000.nii.gz"
    gt, _g = read_image(ds / "labelsTr" / "CASE_005.nii.gz")
    s = Session([img], tmp_path / "o" / "lab.nii.gz", run=stcn_run)
    assert s.meta()["method"] == "propagation" and [lab["name"] for lab in s.meta()["labels"]] == ["a", "b"]
    ks = [k for k in range(gt.shape[0]) if gt[k].any()][::3]
    s.draw(s.decode_drawing(page_drawing(s, gt.astype(np.uint8), ks), True))
    s.propagate()
    assert (s.labels()[ks] == gt[ks]).all() and s.labels().shape == gt.shape


@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    from semiseg.annotate.server import create_app

    img, _gt, lab, _g = write_case(tmp_path / "in", "oblique")
    s = Session([img], tmp_path / "out" / "lab.nii.gz")
    with TestClient(create_app(s, PORT), base_url=f"http://127.0.0.1:{PORT}") as c:
        yield c, s, lab


def test_api_round_trip(client, tmp_path):
    c, s, lab = client
    m = c.get("/api/meta").json()
    assert m["shape"] == list(s.view.page_shape[::-1]) and m["labels"][0]["name"] == "label 1"
    # the image as niivue reads it: a NIfTI in the page's order, with the image's voxels
    r = c.get("/api/image.nii")
    assert r.headers["content-encoding"] == "gzip"
    (tmp_path / "page.nii").write_bytes(r.content)
    nii = nib.load(tmp_path / "page.nii")
    assert list(nii.shape) == m["shape"]
    np.testing.assert_allclose(np.asarray(nii.dataobj).T, s.view.to_page(s.image[0]), atol=1e-4)
    body = page_drawing(s, lab, [6, 12, 18])
    r = c.post("/api/drawing", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and len(r.json()["meta"]["annotated"]) == 3
    r = c.post("/api/propagate")
    assert r.status_code == 200 and r.json()["meta"]["action"] == "propagate"
    page = np.frombuffer(c.get("/api/labels").content, np.uint8).reshape(s.view.page_shape)
    assert dice(s.view.from_page(page), lab) > 0.8
    assert c.post("/api/undo").json()["meta"]["action"] == "draw"
    assert c.post("/api/redo").json()["meta"]["action"] == "propagate"
    assert c.post("/api/save").json()["out"] == str(s.out) and s.out.exists()
    assert c.get("/api/download").headers["content-disposition"].startswith("attachment")
    # errors come back as JSON naming the problem; busy is 409
    r = c.post("/api/drawing", content=gzip.compress(bytes(10)), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "does not belong to this image" in r.json()["error"]
    with s._busy:
        assert c.post("/api/propagate").status_code == 409
        assert c.post("/api/undo").status_code == 409
    assert c.post("/api/empty", params={"slice": 10_000}).status_code == 400


def test_api_guards_host_origin_paths_and_upload_size(client):
    c, s, _lab = client
    assert c.get("/").status_code == 200 and "niivue" in c.get("/").text
    # DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 sends its own Host
    assert c.get("/api/meta", headers={"Host": f"evil.example:{PORT}"}).status_code == 403
    assert c.get("/api/meta", headers={"Host": "127.0.0.1:1"}).status_code == 403
    # another site's page posting to this server
    assert c.post("/api/save", headers={"Origin": "http://evil.example"}).status_code == 403
    assert c.post("/api/save", headers={"Origin": f"http://127.0.0.1:{PORT}"}).status_code == 200
    # nothing outside the fixed files: traversal attempts, the static folder's other files
    for path in ("/../pyproject.toml", "/%2e%2e/session.py", "/app.js/../../session.py", "/static/app.js",
                 "/package.json", "/node_modules/@niivue/niivue/package.json", "/vendor/../server.py", "/etc/passwd"):
        r = c.get(path)
        assert r.status_code == 404, path
    # uploads larger than the image's voxels are refused before they are read whole
    big = b"\0" * (s.image[0].size + (2 << 20))
    r = c.post("/api/drawing", content=big)
    assert r.status_code == 413
    # a gzip bomb: small upload, too many voxels once inflated
    bomb = gzip.compress(bytes(s.image[0].size * 4))
    r = c.post("/api/drawing", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "does not belong" in r.json()["error"]


def test_missing_viewer_says_how_to_install(tmp_path, monkeypatch):
    from semiseg.annotate import server

    img, _gt, _lab, _g = write_case(tmp_path / "in", "identity")
    monkeypatch.setattr(server, "NIIVUE", tmp_path / "nowhere.js")
    with pytest.raises(SemisegError, match="npm ci --prefix"):
        server.serve(Session([img], tmp_path / "o.nii.gz"))


def start_server(args, env=None):
    """``semiseg annotate ...`` as a person starts it; returns (process, URL, its output so far: a
    list that a thread keeps filling, so the pipe never fills up and blocks the server)."""
    import signal
    import threading

    # as from a terminal: Ctrl+C delivered (a shell's background job, as CI may be, starts with SIGINT ignored)
    p = subprocess.Popen([sys.executable, "-m", "semiseg", "annotate", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    t0 = time.time()
    while time.time() - t0 < 60:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()
            return p, m.group(1), lines
    p.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


def wait(d, script, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = d.execute_script(script)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}; status: "
                         + d.execute_script("return document.getElementById('status').textContent"))


def paint_slice(d, canvas, view, lab_page, k, dim):
    """Outline the label's cross-section on page slice ``k`` with the filled pen, as a mouse does."""
    from selenium.webdriver.common.action_chains import ActionChains

    d.execute_script(f"window.semiseg.goToSlice({k})")
    sl = np.take(lab_page, k, axis=2 - dim)  # page arrays are (z, y, x); dim counts x, y, z
    ys, xs = np.nonzero(sl)
    cy, cx = ys.mean(), xs.mean()
    pts = []
    for t in np.linspace(0, 2 * np.pi, 24, endpoint=False):  # a polygon on the cross-section's boundary
        r = 0.0
        while True:
            y, x = int(round(cy + (r + 0.5) * np.sin(t))), int(round(cx + (r + 0.5) * np.cos(t)))
            if not (0 <= y < sl.shape[0] and 0 <= x < sl.shape[1]) or not sl[y, x]:
                break
            r += 0.5
        pts.append((cx + r * np.cos(t), cy + r * np.sin(t)))
    w, h = canvas.size["width"], canvas.size["height"]
    screen = []
    for x, y in pts:
        vox = [0.0, 0.0, 0.0]
        other = [a for a in range(3) if a != dim]
        vox[other[0]], vox[other[1]], vox[dim] = x, y, k
        px = d.execute_script("const nv = window.semiseg.nv; const p = nv.frac2canvasPos(nv.vox2frac(arguments[0]));"
                              "return [p[0] / nv.uiData.dpr, p[1] / nv.uiData.dpr];", vox)
        screen.append((px[0] - w / 2, px[1] - h / 2))
    a = ActionChains(d, duration=10)
    a.move_to_element_with_offset(canvas, *map(int, screen[0])).click_and_hold()
    for sx, sy in screen[1:] + screen[:1]:
        a.move_to_element_with_offset(canvas, int(sx), int(sy))
    a.release().perform()


def keys(d, key, *mods):
    from selenium.webdriver.common.action_chains import ActionChains

    a = ActionChains(d)
    for m in mods:
        a.key_down(m)
    a.send_keys(key)
    for m in mods:
        a.key_up(m)
    a.perform()


def test_page_in_headless_chromium(tmp_path):
    """Load, WebGL2, paint three slices with the mouse, propagate, check the voxels against the
    phantom, undo and redo with the keyboard, save, read the file back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    img, _gt, lab, g = write_case(tmp_path / "in", "oblique")
    out = tmp_path / "out" / "lab.nii.gz"
    proc, url, output = start_server(["-i", str(img), "-o", str(out)])
    d = open_chromium(1300, 850, webgl=True)
    try:
        d.get(url)
        wait(d, "return window.semiseg && (window.semiseg.ready || window.semiseg.errors.length)")
        assert d.execute_script("return !!document.createElement('canvas').getContext('webgl2')"), \
            "no WebGL2 in headless Chromium (software WebGL needs --enable-unsafe-swiftshader)"
        assert d.execute_script("return window.semiseg.errors") == []
        meta = d.execute_script("return window.semiseg.meta")
        view = RasView(g)
        lab_page = view.to_page(lab)
        dim = meta["slice_dim"]
        assert dim == 2 - view.page_axis(0)  # z, the largest spacing, is the propagation axis
        canvas = d.find_element(By.ID, "gl")
        d.find_element(By.CSS_SELECTOR, "#tools button[data-tool=fill]").click()
        ks = sorted(view.page_index(0, k) for k in (6, 12, 18))
        for n, k in enumerate(ks):
            paint_slice(d, canvas, view, lab_page, k, dim)
            wait(d, f"return window.semiseg.meta.annotated.length === {n + 1}")
        painted = np.frombuffer(bytes(d.execute_script("return Array.from(window.semiseg.nv.drawBitmap)")),
                                np.uint8).reshape(lab_page.shape)
        for k in ks:  # each painted slice covers its cross-section well
            assert dice(np.take(painted, k, 2 - dim), np.take(lab_page, k, 2 - dim)) > 0.8
        keys(d, "p")
        wait(d, "return window.semiseg.lastPropagate")
        filled = np.frombuffer(bytes(d.execute_script("return Array.from(window.semiseg.nv.drawBitmap)")),
                               np.uint8).reshape(lab_page.shape)
        assert dice(view.from_page(filled), lab) > 0.8
        assert "last propagation" in d.find_element(By.ID, "elapsed").text
        # undo the propagation (Ctrl+Z), redo it (Ctrl+Shift+Z)
        keys(d, "z", Keys.CONTROL)
        wait(d, "return window.semiseg.meta.action === 'draw'")
        back = np.frombuffer(bytes(d.execute_script("return Array.from(window.semiseg.nv.drawBitmap)")), np.uint8)
        assert np.array_equal(back, painted.reshape(-1))
        keys(d, "Z", Keys.CONTROL, Keys.SHIFT)
        wait(d, "return window.semiseg.meta.action === 'propagate'")
        d.find_element(By.ID, "save").click()
        wait(d, "return window.semiseg.meta.saved")
        saved, g2 = read_image(out)
        assert not g.mismatch(g2, 1e-6)
        assert np.array_equal(saved, view.from_page(filled))
        d.save_screenshot(str(tmp_path / "annotate.png"))
        # Ctrl+C stops the server cleanly (exit 0), saying the work was saved
        import signal

        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not stop on Ctrl+C; its output:\n" + "".join(output)) from None
        time.sleep(0.2)
        assert rc == 0 and "".join(output).strip().splitlines()[-1] == "stopped", "".join(output)
    finally:
        d.quit()
        proc.terminate()
        proc.wait(10)


def test_dicom_series_in_nifti_out_with_its_geometry(tmp_path):
    from test_dicom import write_series

    from semiseg.data.dataset import read_channel

    lab = ellipsoid((12, 40, 44), (6, 19, 22), (4, 13, 15))
    write_series(tmp_path / "series", lab.astype(np.int16) * 300 + 50)
    s = Session([tmp_path / "series"], tmp_path / "out" / "lab.nii.gz")
    s.draw(s.decode_drawing(page_drawing(s, lab, [3, 6, 9]), True))
    s.propagate()
    s.save()
    _img, g = read_channel(tmp_path / "series")
    saved, g2 = read_image(s.out)
    assert not g.mismatch(g2, 1e-5) and dice(saved, lab) > 0.7  # interpolation of a short ellipsoid
