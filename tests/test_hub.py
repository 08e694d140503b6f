"""Released checkpoints in one line: downloads verified by SHA-256 from a local HTTP server (good, corrupt,
truncated, missing), atomic writes, and ``torch.hub.load`` of the converted models."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
from reference import reference_file

from engine import hub
from models import build_model, load_model


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``truncated.pth`` announces its full size and sends half of it."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.endswith("/sdnet_from_scratch.pth") and "truncated" in self.path:
            body = (Path(self.directory) / "truncated" / "sdnet_from_scratch.pth").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """127.0.0.1: /good/ the released SDNet, /corrupt/ altered bytes, /truncated/ half of it, /video/ a video file."""
    released = reference_file("checkpoints/sdnet_from_scratch.pth").read_bytes()
    served = tmp_path / "served"
    for folder, body in (("good", released), ("corrupt", released[:-10] + b"0123456789"), ("truncated", released),
                         ("video", b"not hashed")):
        (served / folder).mkdir(parents=True)
        name = "stdnet_from_scratch_DAVSOD.pth" if folder == "video" else "sdnet_from_scratch.pth"
        (served / folder / name).write_bytes(body)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_recorded_hashes_are_those_of_the_released_files() -> None:
    for name, digest in hub.RELEASED.items():
        if digest is not None:
            assert hashlib.sha256(reference_file(f"checkpoints/{name}.pth").read_bytes()).hexdigest() == digest


def test_download_verifies_and_refuses_bad_files(server: str, tmp_path: Path) -> None:
    out = tmp_path / "checkpoints"
    path = hub.download("sdnet_from_scratch", out, f"{server}/good")
    assert path == out / "sdnet_from_scratch.pth"
    assert path.read_bytes() == reference_file("checkpoints/sdnet_from_scratch.pth").read_bytes()
    fresh = tmp_path / "fresh"
    for folder, message in (("corrupt", "differs from the recorded"), ("truncated", "cut short"),
                            ("missing", "HTTP 404")):
        with pytest.raises(hub.HubError, match=message) as info:
            hub.download("sdnet_from_scratch", fresh, f"{server}/{folder}")
        assert "\n" not in str(info.value) and "by hand into" in str(info.value)
        assert not fresh.exists() or not any(fresh.iterdir())  # nothing, not even a temporary file
    with pytest.raises(hub.HubError, match="no recorded SHA-256 yet"):
        hub.download("stdnet_from_scratch_DAVSOD", fresh, f"{server}/video")
    assert hub.download("stdnet_from_scratch_DAVSOD", fresh, f"{server}/video", verify=False).read_bytes() == \
        b"not hashed"
    with pytest.raises(hub.HubError, match="unknown checkpoint"):
        hub.download("sdnet", fresh, server)


def test_download_command(server: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(hub.BASE_URL_VARIABLE, f"{server}/good")
    hub.main(["download", "sdnet_from_scratch", "--out", str(tmp_path)])
    assert (tmp_path / "sdnet_from_scratch.pth").is_file()
    with pytest.raises(SystemExit) as exit_info:
        hub.main(["download", "sdnet_from_scratch", "--out", str(tmp_path / "x"), "--base-url", f"{server}/corrupt"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "corrupt" in errors[0] and not (tmp_path / "x" / "sdnet_from_scratch.pth").exists()


def test_torch_hub_load_gives_the_converted_released_model(server: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(hub.BASE_URL_VARIABLE, f"{server}/good")
    repo = Path(__file__).resolve().parents[1]
    model = torch.hub.load(str(repo), "sdnet", source="local", pretrained=True, checkpoint_dir=tmp_path)
    assert not model.training and (tmp_path / "sdnet_from_scratch.pth").is_file()
    expected = load_model(reference_file("checkpoints/sdnet_from_scratch.pth"))[0]
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(images), expected(images))
    random = torch.hub.load(str(repo), "stdneta", source="local")
    assert not random.training and sum(p.numel() for p in random.parameters()) == 987_275


def test_an_unhashed_video_checkpoint_loads_from_disk_and_says_what_to_do_when_absent(tmp_path: Path) -> None:
    """The video checkpoints have no recorded hash: torch.hub loads one put in place by hand, and without it says
    so (where to put it, or verify=False), never a download error."""
    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(hub.HubError, match=r"stdnet, pretrained=True: .*stdnet_from_scratch_VOS.pth is not there.*"
                                           r"put stdnet_from_scratch_VOS.pth there by hand, or pass verify=False"):
        torch.hub.load(str(repo), "stdnet", source="local", pretrained=True, checkpoint_dir=tmp_path, dataset="VOS")
    weights = build_model("stdnet", bn=True, tid=("cv", "cd", "ad"), scales=(0, 1, 1)).state_dict()
    torch.save({f"module.{key}": value for key, value in weights.items()}, tmp_path / "stdnet_from_scratch_VOS.pth")
    model = torch.hub.load(str(repo), "stdnet", source="local", pretrained=True, checkpoint_dir=tmp_path,
                           dataset="VOS")
    assert not model.training and sum(p.numel() for p in model.parameters()) == 874_469


def test_hub_dependencies_are_what_loading_a_model_imports() -> None:
    """hubconf's ``dependencies`` (torch.hub checks they are installed before anything loads): each is imported when
    a model loads, and every package the project requires that loading imports beyond torch's own is listed."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]

    def loaded(code: str) -> set[str]:
        code += "; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
        return set(subprocess.run([sys.executable, "-c", "import sys; " + code], cwd=repo, capture_output=True,
                                  text=True, check=True).stdout.split())

    by_hub, by_torch = loaded("import hubconf; hubconf.sdnet()"), loaded("import torch")
    required = {line.split("==")[0].replace("opencv-python-headless", "cv2").replace("pillow", "PIL")
                for line in (repo / "requirements.txt").read_text().split()}
    import hubconf

    assert set(hubconf.dependencies) <= by_hub, sorted(set(hubconf.dependencies) - by_hub)
    assert (by_hub - by_torch) & required <= set(hubconf.dependencies), sorted((by_hub - by_torch) & required)
