"""A JupyterLab server and a headless Chromium for the browser suite, or a skip saying what is missing.

The server runs on 127.0.0.1 with a random free port and a random token, from the repository root,
serving a temporary folder of notebooks converted from the jupytext sources with ``profile = "smoke"``
in their parameters cell. Its kernel spec ``frankenllama`` is written into a temporary Jupyter path
and points at this Python, so the kernel imports this checkout (``PYTHONPATH``) whatever kernel is
installed elsewhere. The server is stopped at the end of the module.

Chromium is the system's (Debian package ``chromium``; ``$FRANKENLLAMA_CHROMIUM`` overrides the path);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from frankenllama.paths import ROOT
from test_notebooks import NOTEBOOKS

# JupyterLab renders every cell (no windowing), so cells and widgets below the fold are in the page.
LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                   "checkForUpdates": False}}


def chromium_path() -> str | None:
    """The system Chromium: ``$FRANKENLLAMA_CHROMIUM``, else ``chromium`` on the PATH, else None."""
    path = os.environ.get("FRANKENLLAMA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab: where it listens, its token, the folder it serves and its log."""

    url: str
    token: str
    folder: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def write_smoke_notebooks(folder: Path) -> None:
    """Each jupytext source as ``<stem>.ipynb`` with the parameters cell set to the smoke profile."""
    import jupytext

    for path in NOTEBOOKS:
        nb = jupytext.read(path)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert 'profile = "default"' in cell.source, f"{path.name}: parameters cell without the profile switch"
        cell.source = cell.source.replace('profile = "default"', 'profile = "smoke"')
        jupytext.write(nb, folder / f"{path.stem}.ipynb")


def lab_environment(tmp: Path) -> dict[str, str]:
    """The server's environment: a private kernel spec, settings and workspaces; this checkout importable."""
    kernel = tmp / "share/jupyter/kernels/frankenllama"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "frankenllama (.venv)", "language": "python"}))
    settings = tmp / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = dict(os.environ, JUPYTER_PATH=str(tmp / "share/jupyter"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), FRANKENLLAMA_CWD=str(ROOT), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("MPLBACKEND", None)  # the kernel picks the inline backend itself
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a random port and token; stopped (and its kernels with it) at the end."""
    tmp = tmp_path_factory.mktemp("lab")
    folder = tmp / "notebooks"
    folder.mkdir()
    write_smoke_notebooks(folder)
    port, token, log = free_port(), secrets.token_hex(16), tmp / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--ServerApp.open_browser=False",
               "--ServerApp.allow_root=True"]  # CI containers run as root
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=lab_environment(tmp), stdout=out, stderr=subprocess.STDOUT)
    running = Lab(f"http://127.0.0.1:{port}", token, folder, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                running.api("/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start (exit {server.poll()}):\n{running.log_tail()}")
                time.sleep(0.5)
        yield running
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium through Playwright, or a skip naming what to install."""
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests need the system Chromium: apt-get install chromium (or set FRANKENLLAMA_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright for Python: pip install playwright==1.65.2 (no `playwright install`)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
