"""`trustchain dns serve` and `trustchain dns query` as real processes on ::1."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from doqkit import ZONE_TEXT, Tls, make_tls

from trustchain.node.cli import main
from trustchain.node.localcluster import free_udp_ports

TRUSTCHAIN = [sys.executable, "-m", "trustchain.node.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRUSTCHAIN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def served(tmp_path: Path, tls: Tls) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    zone = tmp_path / "example.zone"
    zone.write_text(ZONE_TEXT)
    process = subprocess.Popen(
        [
            *TRUSTCHAIN,
            "dns",
            "serve",
            "--zone",
            str(zone),
            "--default-zone",
            "--listen",
            "[::1]:0",
            "--tls-cert",
            str(tls.certificate),
            "--tls-key",
            str(tls.key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"over DoQ on \[::1\]:(\d+)$", line.strip())
        assert found, f"no ready line: {line!r} {process.stderr.read() if process.stderr else ''}"
        yield int(found.group(1)), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(10)


@pytest.mark.slow
def test_serve_and_query(served: tuple[int, subprocess.Popen[str]], tls: Tls) -> None:
    port, process = served
    server = f"[::1]:{port}"
    answer = run(
        "dns",
        "query",
        "ca.trust.hypermesh.online",
        "AAAA",
        "--server",
        server,
        "--ca",
        str(tls.certificate),
    )
    assert answer.returncode == 0, answer.stderr
    assert "ca.trust.hypermesh.online. 300 IN CNAME trust.hypermesh.online." in answer.stdout
    assert "trust.hypermesh.online. 300 IN AAAA 2001:db8::10" in answer.stdout
    assert "flags QR AA" in answer.stdout

    missing = run(
        "dns", "query", "nope.example.test", "--server", server, "--ca", str(tls.certificate)
    )
    assert missing.returncode == 0 and "rcode NXDOMAIN" in missing.stdout

    # SIGTERM: the server closes its connections and exits cleanly.
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert process.stderr is not None
    assert '"event":"dns.serving"' in process.stderr.read()


@pytest.mark.slow
def test_query_refuses_an_untrusted_server(
    served: tuple[int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    port, _ = served
    stranger = make_tls(tmp_path, "stranger")
    result = run(
        "dns",
        "query",
        "example.test",
        "--server",
        f"[::1]:{port}",
        "--ca",
        str(stranger.certificate),
    )
    assert result.returncode == 1
    assert "TLS alert" in result.stderr and "--ca" in result.stderr
    assert "Traceback" not in result.stderr


def test_query_says_when_nothing_listens() -> None:
    port = free_udp_ports(1)[0]
    result = run("dns", "query", "--server", f"[::1]:{port}", "a.example.", "A", timeout=30)
    assert result.returncode == 1
    assert f"no response from [::1]:{port}: connection refused; check" in result.stderr
    assert "DOQ_NO_ERROR" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_reports_a_busy_port(
    served: tuple[int, subprocess.Popen[str]], tls: Tls, tmp_path: Path
) -> None:
    port, _ = served
    result = run(
        "dns",
        "serve",
        "--default-zone",
        "--listen",
        f"[::1]:{port}",
        "--tls-cert",
        str(tls.certificate),
        "--tls-key",
        str(tls.key),
        timeout=30,
    )
    assert result.returncode == 2
    assert f"--listen: UDP [::1]:{port}: cannot listen: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["dns", "serve", "--zone", "/nonexistent.zone", "--tls-cert", "c", "--tls-key", "k"],
            "zone file not found",
        ),
        (["dns", "serve", "--tls-cert", "c", "--tls-key", "k"], "no zone to serve"),
        (
            [
                "dns",
                "serve",
                "--default-zone",
                "--listen",
                "127.0.0.1:8853",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
            ],
            "expected an IPv6 address",
        ),
        (
            [
                "dns",
                "serve",
                "--default-zone",
                "--apex-address",
                "192.0.2.1",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
            ],
            "AAAA only",
        ),
        (
            ["dns", "serve", "--default-zone", "--tls-cert", "/nonexistent.pem", "--tls-key", "k"],
            "no such file",
        ),
        (["dns", "query", "x.test", "--server", "[::1]:8853", "--ca", "/nonexistent.pem"], "--ca"),
        (["dns", "query", "x.test", "NOTATYPE", "--server", "[::1]:8853"], "NOTATYPE"),
        (
            [
                "dns",
                "serve",
                "--default-zone",
                "--idle-timeout",
                "-1",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
            ],
            "--idle-timeout -1.0 is out of",
        ),
        (
            [
                "dns",
                "serve",
                "--default-zone",
                "--max-open-queries",
                "0",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
            ],
            "--max-open-queries 0 is out of",
        ),
        (["dns", "query", "x.test", "--server", "[::ffff:192.0.2.1]:8853"], "IPv4-mapped"),
    ],
)
def test_user_errors_are_explained(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trustchain: error: ") and fragment in err
    assert time.monotonic() - started < 10
