"""app.logpipe: size-based rotation of local mode's logs, at line boundaries, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.logpipe import RotatingFile, parse_size


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_parse_size() -> None:
    assert parse_size("512k") == 512 * 1024
    assert parse_size("20M") == 20 * 1024**2
    assert parse_size("1g") == 1024**3
    assert parse_size("100") == 100
    with pytest.raises(ValueError):
        parse_size("0k")
    with pytest.raises(ValueError):
        parse_size("lots")


def test_rotates_at_line_boundaries_and_keeps_max_files(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "gateway.log"
    out = RotatingFile(log, max_bytes=100, max_files=3)
    sent = [f"line {i:03d} " + "x" * 10 for i in range(40)]  # 20 bytes a line
    data = "".join(f"{line}\n" for line in sent).encode()
    for start in range(0, len(data), 7):  # arrives in pieces that split lines
        out.write(data[start : start + 7])
    out.close()
    files = [log, log.with_name("gateway.log.1"), log.with_name("gateway.log.2")]
    assert not log.with_name("gateway.log.3").exists()  # 3 files in all
    for f in files:
        assert f.stat().st_size <= 100, f
        assert all(line.startswith("line ") and len(line) == 19 for line in lines_of(f)), f
    kept = lines_of(files[2]) + lines_of(files[1]) + lines_of(files[0])
    assert kept == sent[-len(kept) :]  # the newest lines, in order, none cut or lost
    assert len(kept) >= 10


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path) -> None:
    log = tmp_path / "model.log"
    log.write_text("a" * 90 + "\n")
    out = RotatingFile(log, max_bytes=100, max_files=2)
    out.write(b"second line\n")
    out.close()
    assert lines_of(log.with_name("model.log.1")) == ["a" * 90]
    assert lines_of(log) == ["second line"]


def test_a_line_longer_than_the_limit_is_kept_whole(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    out = RotatingFile(log, max_bytes=10, max_files=2)
    out.write(b"0123456789abcdef\nok\n")
    out.close()
    assert lines_of(log.with_name("x.log.1")) == ["0123456789abcdef"]
    assert lines_of(log) == ["ok"]


def test_a_bad_limit_keeps_the_pipe_open_with_the_defaults(tmp_path: Path) -> None:
    import subprocess
    import sys

    from app.core.config import GATEWAY_DIR

    log = tmp_path / "gw.log"
    done = subprocess.run(
        [sys.executable, "-m", "app.logpipe", str(log), "--max-size", "lots", "--max-file", "x"],
        input=b"first\nsecond\n",
        cwd=GATEWAY_DIR,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = lines_of(log)
    assert lines[-2:] == ["first", "second"]
    assert "LOG_MAX_SIZE='lots' is not a size" in lines[0]
    assert "LOG_MAX_FILE='x' is not a number" in lines[1]
