"""The edge runtime must run where torch is not installed (a Raspberry Pi with only the edge extra).

A subprocess installs an import hook that refuses and records every attempt to import torch
(or the training / export packages, which need it), then runs the edge code. Refusing is not
enough (an optional `try: import torch` would hide it), so the test also checks the record.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

GUARD = textwrap.dedent("""
    import sys

    FORBIDDEN = ("torch", "torchvision", "training", "export", "tensorflow")
    attempts = []

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                attempts.append(name)
                raise ImportError(f"{name} is not installed on this edge device")
            return None

    sys.meta_path.insert(0, NoTorch())

    def verdict(rc=0):
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        print("ATTEMPTS", attempts, "LOADED", loaded, flush=True)
        sys.exit(1 if (attempts or loaded) else rc)
""")


def run_guarded(body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    code = GUARD + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_every_edge_module_imports_without_torch():
    modules = sorted(p.stem for p in (REPO / "edge").glob("*.py") if p.stem != "__init__")
    result = run_guarded(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module("edge." + name)
        import firmware_bridge.protocol, firmware_bridge.recording, firmware_bridge.simulate
        verdict()
    """)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ATTEMPTS [] LOADED []" in result.stdout


@pytest.mark.slow
def test_replay_and_run_never_import_torch(bundle_dir, hapt_recording, tmp_path):
    from firmware_bridge.simulate import VirtualDevice

    out_replay, out_run = tmp_path / "replay.jsonl", tmp_path / "run.jsonl"
    link = tmp_path / "imu"
    with VirtualDevice(hapt_recording, speed=20.0, link=link):
        result = run_guarded(f"""
            from edge.cli import main
            rc = main(["replay", {str(hapt_recording)!r}, "--bundle", {str(bundle_dir)!r}, "--quiet",
                       "--jsonl", {str(out_replay)!r}])
            rc = rc or main(["run", "--port", {str(link)!r}, "--bundle", {str(bundle_dir)!r}, "--quiet",
                             "--jsonl", {str(out_run)!r}, "--duration", "4", "--connect-timeout", "10"])
            rc = rc or main(["replay", {str(hapt_recording)!r}, "--bundle", {str(bundle_dir)!r}, "--quiet",
                             "--backend", "onnx", "--precision", "fp32", "--jsonl", {str(out_replay)!r}])
            verdict(rc)
        """)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ATTEMPTS [] LOADED []" in result.stdout
    assert len(out_replay.read_text().splitlines()) > 100
    assert len(out_run.read_text().splitlines()) >= 5  # 4 s at 20x = 80 s of stream


def test_the_guard_catches_a_torch_import():
    """The check itself can fail: an edge process that imports torch is caught."""
    result = run_guarded("""
        try:
            import torch  # what a careless optional import would do
        except ImportError:
            pass
        verdict()
    """)
    assert result.returncode == 1 and "ATTEMPTS ['torch']" in result.stdout
