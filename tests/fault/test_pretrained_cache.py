"""One writer for the shared weights cache: several processes (every rank of a job) asking for the
same published weights at the same moment, served by a slow local HTTP server on 127.0.0.1 that
counts requests. Exactly one process downloads (and converts) while the others wait for the lock,
then check what it wrote; nobody's staging file is deleted by another; nothing is left behind."""
import dataclasses
import functools
import hashlib
import http.server
import logging
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from mindcv_res2net.weights import pretrained as P
from mindcv_res2net.models import registry

N_PROCESSES = 4


class _SlowCountingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``root/<name>`` in small chunks with pauses (a download takes about a second, so the
    processes overlap) and counts the requests per file name."""

    timeout = 30  # a stuck client cannot hold a handler thread forever

    def __init__(self, *args, root, counts, lock, **kwargs):
        self.root, self.counts, self.count_lock = root, counts, lock
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        with self.count_lock:
            self.counts[name] = self.counts.get(name, 0) + 1
        path = os.path.join(self.root, name)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        chunk = max(1, len(data) // 10)
        for start in range(0, len(data), chunk):
            self.wfile.write(data[start:start + chunk])
            self.wfile.flush()
            time.sleep(0.1)


@pytest.fixture
def slow_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    counts = {}
    handler = functools.partial(_SlowCountingHandler, root=str(root), counts=counts, lock=threading.Lock())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, counts, f"http://127.0.0.1:{httpd.server_address[1]}/weights/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _worker(cache, base_url, model, fields, counter, barrier, results):
    """One process (a rank): register the test's source, wait for the others, get the weights."""
    os.environ[P.ENV_CACHE] = cache
    os.environ[P.ENV_BASE_URL] = base_url
    try:
        import mindcv_res2net.weights.torch_conversion as C

        real_convert = C.convert_file

        def counting_convert(*args, **kwargs):
            with open(counter, "a") as f:
                f.write(f"{os.getpid()}\n")
            return real_convert(*args, **kwargs)

        C.convert_file = counting_convert
        waits = []
        handler = logging.Handler()
        handler.emit = lambda record: waits.append(record.getMessage().startswith("waiting for another process"))
        logging.getLogger("mindcv_res2net.weights").addHandler(handler)
        logging.getLogger("mindcv_res2net.weights").setLevel(logging.INFO)
        registry._CFGS[model] = dataclasses.replace(registry._CFGS[model], weights=(P.WeightSource(**fields),))
        barrier.wait(timeout=120)
        path = P.download_weights(model, progress=False)
        results.put((os.getpid(), "ok", path, P.sha256_of(path), any(waits)))
    except BaseException as exc:  # reported to the test, which fails with it
        results.put((os.getpid(), "error", f"{type(exc).__name__}: {exc}", None, None))


def _run_processes(tmp_path, base_url, model, src):
    """Start N_PROCESSES workers that ask for ``model``'s weights at the same moment; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCESSES)
    results = ctx.Queue()
    counter = str(tmp_path / "conversions.txt")
    fields = {f: getattr(src, f) for f in src.__dataclass_fields__}
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), base_url, model, fields, counter,
                                               barrier, results)) for _ in range(N_PROCESSES)]
    for p in procs:
        p.start()
    out = []
    try:
        for _ in procs:
            out.append(results.get(timeout=240))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    errors = [msg for _, status, msg, _, _ in out if status != "ok"]
    assert not errors, "\n".join(errors)
    conversions = open(counter).read().split() if os.path.exists(counter) else []
    return out, conversions


def _cache_listing(cache):
    return sorted(os.path.relpath(os.path.join(d, f), cache) for d, _, files in os.walk(cache) for f in files)


def test_concurrent_processes_download_the_same_weights_once(slow_server, tmp_path):
    served, counts, base_url = slow_server
    data = os.urandom(200_000)
    digest = hashlib.sha256(data).hexdigest()
    name = f"res2net50-{digest[:8]}.ckpt"
    (served / name).write_bytes(data)
    src = P.WeightSource("mindcv", "https://weights.invalid/" + name, name, "ckpt", digest[:8], None,
                         79.0, 94.0, P.APACHE, "res2net50")
    out, _ = _run_processes(tmp_path, base_url, "res2net50", src)
    cache = tmp_path / "cache"
    assert {(path, sha) for _, _, path, sha, _ in out} == {(str(cache / name), digest)}
    assert counts == {name: 1}  # one writer: the others waited for its file and checked it
    assert any(waited for *_, waited in out)  # (they did run at the same time)
    assert _cache_listing(cache) == [name, name + ".sha256"]  # no staging or lock file left
    assert (cache / (name + ".sha256")).read_text().split() == [digest, str(len(data))]


@pytest.mark.torch
@pytest.mark.slow
def test_concurrent_processes_convert_the_same_weights_once(slow_server, tmp_path):
    pytest.importorskip("torch")
    import torch_reference as R
    from safetensors.numpy import save_file

    served, counts, base_url = slow_server
    name = "dla60_res2net.in1k.safetensors"
    sd = R.make_state_dict("res2net_dla60", num_classes=10, layout="timm", seed=3)
    save_file({k: v.numpy() for k, v in sd.items()}, str(served / name))
    src = P.WeightSource("timm", "https://huggingface.co/timm/x/resolve/main/model.safetensors", name,
                         "safetensors", None, None, 78.0, 94.0, P.CC_BY_NC_SA, "dla60_res2net")
    out, conversions = _run_processes(tmp_path, base_url, "res2net_dla60", src)
    cache = tmp_path / "cache"
    paths = {(path, sha) for _, _, path, sha, _ in out}
    assert len(paths) == 1
    converted, converted_sha = paths.pop()
    assert os.path.dirname(converted) == str(cache / "converted")
    assert counts == {name: 1} and len(conversions) == 1  # downloaded once, converted once
    assert _cache_listing(cache) == sorted([name, name + ".sha256", os.path.join("converted", os.path.basename(
        converted)), os.path.join("converted", os.path.basename(converted) + ".sha256")])
    assert open(converted + ".sha256").read().split()[0] == converted_sha
    # and the converted file holds the weights
    import mindspore as ms
    params = ms.load_checkpoint(converted)
    np.testing.assert_array_equal(params["classifier.weight"].asnumpy().reshape(10, -1),
                                  sd["fc.weight"].numpy().reshape(10, -1))
