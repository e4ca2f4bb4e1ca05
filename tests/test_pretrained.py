"""Published-weights registry and the download cache, served from a local HTTP server on 127.0.0.1:
download + hash check, hash / size mismatch (file deleted), no server, truncated transfer, cache hit
without re-download, hand-placed files, on-the-fly conversion of PyTorch-format sources."""
import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import threading

import mindspore as ms
import numpy as np
import pytest

from mindcv_res2net import UserError, create_model, list_models
from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
from mindcv_res2net.weights import pretrained as P
from mindcv_res2net.models import registry

PUBLISHED = ["res2net50", "res2net101", "res2net50_26w_6s", "res2net50_26w_8s", "res2net50_48w_2s",
             "res2net50_14w_8s", "res2next50", "res2net50_v1b", "res2net101_v1b", "res2net_dla60", "res2next_dla60"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path.endswith("/truncated.ckpt"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        if os.path.basename(self.path).startswith("cut-"):  # the first part only, and no Content-Length
            with open(self.translate_path(self.path), "rb") as f:
                data = f.read()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data[:len(data) * 2 // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    root = tmp_path / "served"
    root.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(P.ENV_BASE_URL, f"http://127.0.0.1:{httpd.server_address[1]}/weights/")
    monkeypatch.setenv(P.ENV_CACHE, str(tmp_path / "cache"))
    (root / "weights").mkdir()
    yield root / "weights", _Handler.requests
    httpd.shutdown()
    httpd.server_close()


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _use_sources(monkeypatch, model, sources):
    """Register ``sources`` as ``model``'s published weights for this test."""
    cfg = dataclasses.replace(registry.get_model_cfg(model), weights=tuple(sources))
    monkeypatch.setitem(registry._CFGS, model, cfg)


def _fake(monkeypatch, model, filename, sha256, fmt="ckpt", size=None, tag="mindcv"):
    src = P.WeightSource(tag, "https://weights.invalid/res2net/" + filename, filename, fmt, sha256, size,
                         79.0, 94.0, P.APACHE, model)
    _use_sources(monkeypatch, model, [src])
    return src


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_download_check_cache_and_create_model(server, monkeypatch, tmp_path):
    served, requests = server
    source = create_model("res2next_dla60", num_classes=10)
    rng = np.random.default_rng(0)
    for p in source.get_parameters():
        p.set_data(ms.Tensor(rng.standard_normal(p.shape, dtype=np.float32)))
    tmp = str(tmp_path / "w.ckpt")
    save_checkpoint_atomic(source, tmp)
    digest = _sha(tmp)
    name = f"res2next_dla60-{digest[:8]}.ckpt"
    os.replace(tmp, served / name)
    _fake(monkeypatch, "res2next_dla60", name, digest[:8], size=os.path.getsize(served / name))

    net = create_model("res2next_dla60", num_classes=10, pretrained=True)
    for (n, a), (_, b) in zip(net.parameters_dict().items(), source.parameters_dict().items()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=n)
    cache = tmp_path / "cache"
    assert _listing(cache) == [name, name + ".sha256"]  # no .part left
    assert len(requests) == 1
    # cache hit: no second request
    path = P.download_weights("res2next_dla60")
    assert path == str(cache / name) and len(requests) == 1
    create_model("res2next_dla60", num_classes=10, pretrained=True)
    assert len(requests) == 1
    # another number of classes: the backbone loads, the classifier stays fresh
    net3 = create_model("res2next_dla60", num_classes=3, pretrained=True)
    assert net3.parameters_dict()["classifier.weight"].shape == (3, 1024)


def test_full_hash_and_size_checked(server, monkeypatch, tmp_path):
    served, _ = server
    (served / "a.ckpt").write_bytes(b"abc" * 1000)
    full = _sha(served / "a.ckpt")
    _fake(monkeypatch, "res2net50", "a.ckpt", full, size=3000)
    assert P.fetch("res2net50") == str(tmp_path / "cache" / "a.ckpt")
    # a wrong published size
    _fake(monkeypatch, "res2net101", "a.ckpt", full, size=2999)
    os.remove(tmp_path / "cache" / "a.ckpt")
    os.remove(tmp_path / "cache" / "a.ckpt.sha256")
    with pytest.raises(UserError, match="has 3000 bytes, expected 2999.*was deleted"):
        P.fetch("res2net101")
    assert _listing(tmp_path / "cache") == []


def test_hash_mismatch_deletes_the_file(server, monkeypatch, tmp_path):
    served, _ = server
    (served / "res2net50-deadbeef.ckpt").write_bytes(b"not the published file")
    _fake(monkeypatch, "res2net50", "res2net50-deadbeef.ckpt", "deadbeef")
    with pytest.raises(UserError) as err:
        P.download_weights("res2net50", cache_dir=str(tmp_path / "mycache"), progress=False)
    msg = str(err.value)
    assert "expected deadbeef" in msg and "was deleted" in msg and "res2net50-deadbeef.ckpt" in msg
    assert _listing(tmp_path / "mycache") == []


def test_no_server_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv(P.ENV_BASE_URL, f"http://127.0.0.1:{_closed_port()}/mirror")
    monkeypatch.setenv(P.ENV_CACHE, str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        P.download_weights("res2net50_v1b", source="mindcv", progress=False)
    msg = str(err.value)
    assert "could not download" in msg and "/mirror/res2net50_v1b-99304e92.ckpt" in msg
    assert os.path.join(str(tmp_path / "cache"), "res2net50_v1b-99304e92.ckpt") in msg
    assert "must start with 99304e92" in msg
    assert _listing(tmp_path / "cache") == []


def test_http_error_and_truncated_transfer(server, monkeypatch, tmp_path):
    served, _ = server
    _fake(monkeypatch, "res2net50", "missing.ckpt", "00000000")
    with pytest.raises(UserError, match="404"):
        P.fetch("res2net50", progress=False)
    _fake(monkeypatch, "res2net50", "truncated.ckpt", "00000000")
    with pytest.raises(UserError, match="truncated.ckpt"):
        P.fetch("res2net50", progress=False)
    assert _listing(tmp_path / "cache") == []


def test_hand_placed_file_is_checked_before_use(tmp_path, monkeypatch):
    monkeypatch.setenv(P.ENV_BASE_URL, f"http://127.0.0.1:{_closed_port()}/")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "hand.ckpt").write_bytes(b"hand placed")
    _fake(monkeypatch, "res2net50", "hand.ckpt", _sha(cache / "hand.ckpt")[:8])
    assert P.fetch("res2net50", cache_dir=str(cache)) == str(cache / "hand.ckpt")  # no network needed
    assert (cache / "hand.ckpt.sha256").read_text().split()[0] == _sha(cache / "hand.ckpt")
    # a wrong hand-placed file is the user's: kept, and the message says to delete it
    (cache / "bad.ckpt").write_bytes(b"tampered")
    _fake(monkeypatch, "res2net50", "bad.ckpt", "12345678")
    with pytest.raises(UserError, match=r"expected 12345678\.\.\. \(only these 8 hex digits are") as err:
        P.fetch("res2net50", cache_dir=str(cache))
    assert f"Delete it (rm {cache / 'bad.ckpt'})" in str(err.value)
    assert (cache / "bad.ckpt").exists() and not (cache / "bad.ckpt.sha256").exists()


def test_pytorch_source_is_converted_once(server, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import torch_reference as R
    from safetensors.numpy import save_file

    served, requests = server
    sd = R.make_state_dict("res2net_dla60", num_classes=10, layout="timm", seed=2)
    save_file({k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy() for k, v in sd.items()},
              str(served / "dla60_res2net.in1k.safetensors"))
    src = P.WeightSource("timm", "https://huggingface.co/timm/x/resolve/main/model.safetensors",
                         "dla60_res2net.in1k.safetensors", "safetensors", None, None, None, None, P.CC_BY_NC_SA, "x")
    _use_sources(monkeypatch, "res2net_dla60", [src])
    path = P.download_weights("res2net_dla60", source="timm", progress=False)
    assert os.path.dirname(path) == str(tmp_path / "cache" / "converted") and path.endswith(".ckpt")
    mtime = os.path.getmtime(path)
    net = create_model("res2net_dla60", num_classes=10, pretrained=True)
    np.testing.assert_array_equal(net.parameters_dict()["level4.tree2.tree2.root.conv.weight"].asnumpy(),
                                  sd["level4.tree2.tree2.root.conv.weight"].numpy().astype(np.float16).astype(np.float32))
    assert P.download_weights("res2net_dla60", source="timm") == path and os.path.getmtime(path) == mtime
    assert len(requests) == 1
    # no published hash: the first download's hash is recorded and enforced from then on
    cached = tmp_path / "cache" / "dla60_res2net.in1k.safetensors"
    cached.write_bytes(b"another file")
    with pytest.raises(UserError, match="was recorded when it was first downloaded"):
        P.fetch("res2net_dla60", source="timm")


def test_registry_contents(monkeypatch):
    assert set(PUBLISHED) <= set(list_models(pretrained=True))
    for name in PUBLISHED:
        cfg = P.get_pretrained_cfg(name)
        assert cfg["preprocessing"]["input_size"] == (3, 224, 224) and cfg["preprocessing"]["crop_pct"] == 0.875
        assert cfg["preprocessing"]["mean"] == (0.485, 0.456, 0.406)
        assert cfg["default_source"] in cfg["sources"]
        for tag, s in cfg["sources"].items():
            assert s["url"].startswith("https://") and s["filename"], s["url"]  # no plain-http source
            assert s["top1"] and s["top5"]
            if tag in ("official", "timm", "timm_legacy"):
                assert "CC BY-NC-SA 4.0" in s["licence"]
            if s["sha256"]:
                assert s["sha256"] in s["filename"]  # the prefix published in the file name
    mindcv = {n: P.get_pretrained_cfg(n)["sources"]["mindcv"]["url"] for n in PUBLISHED
              if "mindcv" in P.get_pretrained_cfg(n)["sources"]}
    assert mindcv == {
        "res2net50": "https://download.mindspore.cn/toolkits/mindcv/res2net/res2net50-f42cf71b.ckpt",
        "res2net101": "https://download.mindspore.cn/toolkits/mindcv/res2net/res2net101-8ae60132.ckpt",
        "res2net50_v1b": "https://download.mindspore.cn/toolkits/mindcv/res2net/res2net50_v1b-99304e92.ckpt",
        "res2net101_v1b": "https://download.mindspore.cn/toolkits/mindcv/res2net/res2net101_v1b-7e6db001.ckpt",
    }
    assert P.get_pretrained_cfg("res2net50d")["architecture"] == "res2net50_v1b"  # timm's name
    assert P.default_source("res2net50") == "mindcv" and P.default_source("res2next50") == "timm"
    monkeypatch.setenv(P.ENV_SOURCE, "official")
    assert P.default_source("res2net50") == "official"
    for name in PUBLISHED:  # which check applies, as get_pretrained_cfg tells it
        for s in P.get_pretrained_cfg(name)["sources"].values():
            assert s["check"].startswith("sha256 prefix (8 hex digits" if s["sha256"] else "no published hash")
    with pytest.raises(KeyError):
        P.get_pretrained_cfg("res2net152")
    with pytest.raises(UserError, match="no published weights for 'res2net152'"):
        P.download_weights("res2net152")
    with pytest.raises(UserError, match="no 'mindcv' weights; available: timm, official, timm_legacy"):
        P.download_weights("res2next50", source="mindcv")
    net = create_model("res2net50")
    assert net.default_cfg["weights"]["sources"]["mindcv"]["top1"] == 79.35


# ---- integrity: full hashes, recorded hashes, bad cached files ---------------------------------

def _timm_like(monkeypatch, model, filename):
    """A source publishing no hash (as timm's Hugging Face files)."""
    src = P.WeightSource("timm", "https://huggingface.co/timm/x/resolve/main/model.safetensors", filename,
                         "safetensors", None, None, 79.0, 94.0, P.CC_BY_NC_SA, model)
    _use_sources(monkeypatch, model, [src])
    return src


def _safetensors_bytes(seed):
    from safetensors.numpy import save
    return save({"w": np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32)})


def test_download_not_matching_the_full_hash_is_rejected_and_removed(server, monkeypatch, tmp_path):
    served, requests = server
    cache = tmp_path / "cache"
    # no published hash: the full SHA-256 of the first download is recorded; a later download (the
    # cached copy was deleted, the server now sends another file) must match that record
    (served / "m.in1k.safetensors").write_bytes(_safetensors_bytes(0))
    _timm_like(monkeypatch, "res2net50", "m.in1k.safetensors")
    path = P.fetch("res2net50", progress=False)
    first = _sha(path)
    assert (cache / "m.in1k.safetensors.sha256").read_text().split() == [first, str(os.path.getsize(path))]
    os.remove(path)
    (served / "m.in1k.safetensors").write_bytes(_safetensors_bytes(1))
    with pytest.raises(UserError) as err:
        P.fetch("res2net50", progress=False)
    msg = str(err.value)
    assert f"but {first} was recorded when it was first downloaded" in msg and "the download was deleted" in msg
    assert f"delete the record {cache / 'm.in1k.safetensors.sha256'}" in msg
    assert _listing(cache) == ["m.in1k.safetensors.sha256"]  # the record stays, no staging file is left
    # the original file is accepted again
    (served / "m.in1k.safetensors").write_bytes(_safetensors_bytes(0))
    assert _sha(P.fetch("res2net50", progress=False)) == first
    # a published full SHA-256: all 64 digits must match
    good = os.urandom(3000)
    (served / "full.ckpt").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    _fake(monkeypatch, "res2net50", "full.ckpt", hashlib.sha256(good).hexdigest())
    with pytest.raises(UserError) as err:
        P.fetch("res2net50", progress=False)
    msg = str(err.value)
    assert "full.ckpt" in msg and f"expected the published {hashlib.sha256(good).hexdigest()}" in msg
    assert "the download was deleted" in msg and "its SHA-256 must be " in msg
    assert _listing(cache) == ["m.in1k.safetensors", "m.in1k.safetensors.sha256"]  # nothing new


def test_prefix_only_source_records_the_full_hash_and_refuses_a_tampered_cache(server, monkeypatch, tmp_path,
                                                                              caplog):
    served, requests = server
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    name = f"res2net50-{digest[:8]}.ckpt"
    (served / name).write_bytes(data)
    _fake(monkeypatch, "res2net50", name, digest[:8])
    with caplog.at_level("INFO", logger=P.__name__):
        path = P.fetch("res2net50", progress=False)
    said = caplog.text
    record = tmp_path / "cache" / (name + ".sha256")
    assert record.read_text().split() == [digest, "5000"]  # the full hash, recorded
    # the same size, one bit changed (the 8-hex prefix alone would not see it)
    with open(path, "r+b") as f:
        f.seek(4000)
        byte = f.read(1)
        f.seek(4000)
        f.write(bytes([byte[0] ^ 0x10]))
    for attempt in range(2):  # refused on every load, never silently re-recorded
        with pytest.raises(UserError) as err:
            P.download_weights("res2net50", progress=False)
        msg = str(err.value)
        assert msg.startswith(f"the cached weights file {path} has SHA-256 ")
        assert f"but {digest} was recorded when it was first downloaded" in msg
        assert f"Delete it (rm {path}) and run again" in msg
        assert os.path.exists(path) and record.read_text().split()[0] == digest  # not deleted: the user's call
    assert len(requests) == 1
    # doing what the message says works
    os.remove(path)
    assert P.download_weights("res2net50", progress=False) == path and _sha(path) == digest
    assert len(requests) == 2
    # and it is said that only the prefix is published
    assert "only 8 hex digits are published" in said
    assert P.get_pretrained_cfg("res2net50")["sources"]["mindcv"]["check"].startswith("sha256 prefix (8 hex")


def test_html_error_page_in_the_cache_names_the_file_to_delete(server, monkeypatch, tmp_path):
    served, requests = server
    cache = tmp_path / "cache"
    cache.mkdir()
    page = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>try later</body></html>\n"
    # left by an earlier version, which recorded the hash of whatever the first download was
    cached = cache / "m.in1k.safetensors"
    cached.write_bytes(page)
    (cache / "m.in1k.safetensors.sha256").write_text(f"{_sha(cached)} {len(page)}\n")
    _timm_like(monkeypatch, "res2net_dla60", "m.in1k.safetensors")
    with pytest.raises(UserError) as err:
        P.download_weights("res2net_dla60", source="timm", progress=False)
    msg = str(err.value)
    assert msg.startswith(f"the cached weights file {cached} is a text page, not weights")
    assert "<!DOCTYPE html> <html><head><title>502 Bad Gateway" in msg
    assert f"Delete it (rm {cached} {cached}.sha256) and run again" in msg
    assert cached.exists() and requests == []
    # a hand-placed page where a hash prefix is published: named as well, nothing recorded
    (cache / "res2net50-f42cf71b.ckpt").write_bytes(page)
    _fake(monkeypatch, "res2net50", "res2net50-f42cf71b.ckpt", "f42cf71b")
    with pytest.raises(UserError, match=r"Delete it \(rm \S*/res2net50-f42cf71b.ckpt\) and run again"):
        P.download_weights("res2net50", progress=False)
    assert not (cache / "res2net50-f42cf71b.ckpt.sha256").exists()
    # after deleting: a server sending an error page (with status 200) is refused, nothing is kept
    for p in (cached, cache / "m.in1k.safetensors.sha256"):
        os.remove(p)
    (served / "m.in1k.safetensors").write_bytes(page)
    with pytest.raises(UserError, match="m.in1k.safetensors .*is a text page, not weights.*download was deleted"):
        P.download_weights("res2net_dla60", source="timm", progress=False)
    assert _listing(cache) == ["res2net50-f42cf71b.ckpt"]


# ---- downloads cut short without a Content-Length ----------------------------------------------

def _zip_bytes():
    """A zip archive laid out as torch.save (>= 1.6) writes one (stored members); no torch needed."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", os.urandom(6000))
        z.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _ckpt_bytes(tmp_path, **kwargs):
    path = str(tmp_path / "made.ckpt")
    shapes = [(30, 30), (17, 9), (64,)]  # unequal entries: a cut at 2/3 falls inside one
    ms.save_checkpoint([{"name": f"w{i}", "data": ms.Tensor(np.full(s, i, np.float32))} for i, s in enumerate(shapes)],
                       path, **kwargs)
    data = open(path, "rb").read()
    os.remove(path)
    return data


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "ckpt"])
def test_download_cut_short_without_content_length_is_refused(server, monkeypatch, tmp_path, fmt):
    served, requests = server
    cache = tmp_path / "cache"
    data = {"safetensors": lambda: _safetensors_bytes(0), "pth": _zip_bytes,
            "ckpt": lambda: _ckpt_bytes(tmp_path)}[fmt]()
    name = f"cut-weights.{fmt}"
    (served / name).write_bytes(data)
    src = P.WeightSource("timm", "https://weights.invalid/x/" + name, name, fmt, None, None, 79.0, 94.0,
                         P.CC_BY_NC_SA, "res2net50")
    _use_sources(monkeypatch, "res2net50", [src])
    with pytest.raises(UserError) as err:
        P.fetch("res2net50", progress=False)
    msg = str(err.value)
    assert f"the downloaded weights file {name}" in msg and "cut short" in msg and "the download was deleted" in msg
    assert str(len(data) * 2 // 3) in msg
    assert requests and _listing(cache) == []  # no file, no .sha256 record, no staging file
    # the whole file (served under another name) is accepted and recorded
    whole = f"whole-weights.{fmt}"
    (served / whole).write_bytes(data)
    _use_sources(monkeypatch, "res2net50", [dataclasses.replace(src, filename=whole)])
    assert _sha(P.fetch("res2net50", progress=False)) == hashlib.sha256(data).hexdigest()
    assert _listing(cache) == [whole, whole + ".sha256"]


def test_declared_sizes_of_each_format(tmp_path):
    def problem(data, fmt, published=False):
        path = tmp_path / f"f.{fmt}"
        path.write_bytes(data)
        return P._content_problem(str(path), fmt, hash_published=published)

    st = _safetensors_bytes(1)
    assert problem(st, "safetensors") is None
    assert "cut short" in problem(st[:-1], "safetensors")
    assert "bytes after" in problem(st + b"\0", "safetensors")
    assert "not a safetensors file" in problem(st[:8] + b"{" + b" " * (len(st) - 9), "safetensors")
    z = _zip_bytes()
    assert problem(z, "pth") is None
    assert "cut short" in problem(z[:-10], "pth")
    assert "cut short" in problem(z[:len(z) // 2], "pth")
    ck = _ckpt_bytes(tmp_path)
    assert problem(ck, "ckpt") is None
    assert problem(_ckpt_bytes(tmp_path, crc_check=True), "ckpt") is None  # MindSpore's crc trailer
    assert "cut short" in problem(ck[:-1], "ckpt")
    assert "not a MindSpore checkpoint" in problem(b"\x0b" + ck[1:], "ckpt")
    # where a hash is published, it alone decides for a .ckpt (a prefix already refuses a cut file)
    assert problem(ck[:-1], "ckpt", published=True) is None
