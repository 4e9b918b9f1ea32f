"""No pickle anywhere, and `python -m gen.data.download` verifies and extracts safely, tested offline
against a local HTTP server serving archives built here (malicious ones included)."""
import ast
import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from gen.data import download as dl
from conftest import ROOT

SOURCES = [p for d in ("gen", "trainers", "bench", "tests") for p in (ROOT / d).rglob("*.py")] + \
          [ROOT / "train.py", ROOT / "sample.py"]


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every call or import that can unpickle: torch.load without weights_only=True, pickle-family
    imports, numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(
                n and n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") for n in names
            ):
                found.append(f"{filename}:{node.lineno} imports a pickle module")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if func.endswith("torch.load") or func == "load" and "weights_only" in kw:
                ok = (
                    "weights_only" in kw
                    and isinstance(kw["weights_only"], ast.Constant)
                    and kw["weights_only"].value is True
                )
                if not ok:
                    found.append(f"{filename}:{node.lineno} {func}() without weights_only=True")
            if func.endswith(("np.load", "numpy.load")) and "allow_pickle" in kw:
                if not (isinstance(kw["allow_pickle"], ast.Constant) and kw["allow_pickle"].value is False):
                    found.append(f"{filename}:{node.lineno} {func}(allow_pickle=...)")
    return found


def test_the_scanner_catches_unsafe_loads():
    bad = "import pickle\nimport torch\nx = torch.load('a.pt')\ny = torch.load('b', weights_only=False)\n" \
          "import numpy as np\nz = np.load('c.npy', allow_pickle=True)\n"
    assert len(unsafe_loads(bad)) == 4
    assert unsafe_loads("import torch\nx = torch.load('a.pt', weights_only=True)\n") == []


def test_no_unsafe_load_in_the_code():
    assert len(SOURCES) > 20
    problems = [p for path in SOURCES for p in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))]
    assert problems == [], "unsafe deserialisation:\n" + "\n".join(problems)


# ---- download ------------------------------------------------------------------------------------

def tar_bytes(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:  # noqa: B006
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_extracts(server, tmp_path):
    www, url = server
    data = tar_bytes({"facades/train/1.jpg": b"a", "facades/val/2.jpg": b"b"})
    (www / "facades.tar.gz").write_bytes(data)
    root = tmp_path / "data"
    assert dl.main(["facades", "--root", str(root), "--base-url", url, "--sha256", sha(data)]) == 0
    assert (root / "facades" / "train" / "1.jpg").read_bytes() == b"a"
    assert not (root / "facades.tar.gz").exists()  # archive removed after extraction
    assert dl.main(["facades", "--root", str(root), "--base-url", url, "--sha256", sha(data)]) == 2  # exists


def test_wrong_digest_extracts_nothing(server, tmp_path, capsys):
    www, url = server
    (www / "facades.tar.gz").write_bytes(tar_bytes({"facades/train/1.jpg": b"a"}))
    root = tmp_path / "data"
    assert dl.main(["facades", "--root", str(root), "--base-url", url, "--sha256", "0" * 64]) == 2
    assert "does not match" in capsys.readouterr().err
    assert list(root.iterdir()) == []


def test_no_digest_needs_consent(server, tmp_path, capsys):
    www, url = server
    data = zip_bytes({"horse2zebra/trainA/1.jpg": b"h"})
    (www / "horse2zebra.zip").write_bytes(data)
    root = tmp_path / "data"
    assert dl.main(["horse2zebra", "--root", str(root), "--base-url", url]) == 2
    assert "--sha256" in capsys.readouterr().err
    assert dl.main(["horse2zebra", "--root", str(root), "--base-url", url, "--allow-unverified"]) == 0
    assert sha(data) in capsys.readouterr().err  # the digest is printed so it can be pinned
    assert (root / "horse2zebra" / "trainA" / "1.jpg").read_bytes() == b"h"


@pytest.mark.parametrize("kind", ["tar_dotdot", "tar_absolute", "tar_symlink", "zip_dotdot", "zip_absolute"])
def test_malicious_archives_are_refused_before_writing(server, tmp_path, capsys, kind):
    www, url = server
    evil = {
        "tar_dotdot": (
            "facades.tar.gz",
            lambda: tar_bytes({"facades/ok.jpg": b"a", "../../evil.txt": b"x"}),
            "facades",
        ),
        "tar_absolute": ("facades.tar.gz", lambda: tar_bytes({"/tmp/evil.txt": b"x"}), "facades"),
        "tar_symlink": (
            "facades.tar.gz",
            lambda: tar_bytes({"facades/ok.jpg": b"a"}, {"facades/up": "../../.."}),
            "facades",
        ),
        "zip_dotdot": (
            "horse2zebra.zip",
            lambda: zip_bytes({"h/ok.jpg": b"a", "../../evil.txt": b"x"}),
            "horse2zebra",
        ),
        "zip_absolute": ("horse2zebra.zip", lambda: zip_bytes({"/evil.txt": b"x"}), "horse2zebra"),
    }
    file, make, name = evil[kind]
    data = make()
    (www / file).write_bytes(data)
    root = tmp_path / "deep" / "data"
    assert dl.main([name, "--root", str(root), "--base-url", url, "--sha256", sha(data)]) == 2
    assert "refusing member" in capsys.readouterr().err
    assert list(root.iterdir()) == []  # nothing extracted, archive removed
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


def test_unknown_dataset_names_the_known_ones(capsys):
    assert dl.main(["facadez", "--root", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "facadez" in err and "horse2zebra" in err and "edges2shoes" in err
