"""`python -m app.logpipe FILE [--max-size 20m] [--max-file 5]`: a size-rotated log from stdin.

Local mode's log writer (no logrotate, no copy-truncate that loses lines): the gateway's output
(`./start`) and a model server's (the process runtime) go through a pipe into this process,
which appends to FILE and, once FILE has reached `--max-size`, renames it FILE.1 (FILE.1 becomes
FILE.2 ..., the oldest beyond `--max-file` files in all is deleted) and starts a new FILE, always
at a line boundary. It ends when every writer has closed the pipe; SIGINT and SIGHUP do not end
it (a writer would die of a broken pipe), so a terminal's Ctrl-C or hang-up leaves the logs whole.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

CHUNK = 64 * 1024
DEFAULT_MAX_BYTES = 20 * 1024**2
DEFAULT_MAX_FILES = 5


def parse_size(text: str) -> int:
    """Docker's spelling: `512k`, `20m`, `1g`, or bytes."""
    text = text.strip().lower()
    unit = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1:], 1)
    number = int(text[:-1] if unit != 1 else text)
    if number < 1:
        raise ValueError("the size must be positive")
    return number * unit


class RotatingFile:
    def __init__(self, path: Path, max_bytes: int, max_files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max(1, max_files)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.size = os.fstat(self.fd).st_size

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if i == self.max_files - 1:
                older.unlink(missing_ok=True)
            else:
                newer = self.path.with_name(f"{self.path.name}.{i + 1}")
                if older.exists():
                    older.rename(newer)
        if self.max_files > 1:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)

    def write(self, data: bytes) -> None:
        """Append `data`; past the limit, rotate after its last complete line."""
        while data:
            if self.size + len(data) <= self.max_bytes:
                self._write_all(data)
                return
            room = max(0, self.max_bytes - self.size)
            cut = data.rfind(b"\n", 0, room) + 1  # the last line end that still fits
            if cut == 0 and self.size == 0:
                # one line longer than the whole limit: write it alone, then rotate
                end = data.find(b"\n") + 1 or len(data)
                self._write_all(data[:end])
                data = data[end:]
            else:
                self._write_all(data[:cut])
                data = data[cut:]
            self.rotate()

    def close(self) -> None:
        os.close(self.fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.logpipe")
    parser.add_argument("file", type=Path)
    parser.add_argument("--max-size", default=os.environ.get("LOG_MAX_SIZE", "20m"))
    parser.add_argument("--max-file", default=os.environ.get("LOG_MAX_FILE", "5"))
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # a bad limit must not end the pipe (its writer would die of SIGPIPE): defaults, said once
    problems = []
    try:
        max_bytes = parse_size(args.max_size)
    except ValueError:
        max_bytes = DEFAULT_MAX_BYTES
        problems.append(f"LOG_MAX_SIZE={args.max_size!r} is not a size")
    try:
        max_files = max(1, int(args.max_file))
    except ValueError:
        max_files = DEFAULT_MAX_FILES
        problems.append(f"LOG_MAX_FILE={args.max_file!r} is not a number")
    out = RotatingFile(args.file, max_bytes, max_files)
    for problem in problems:
        out.write(f"logpipe: {problem}; rotating at 20m, 5 files\n".encode())
    stdin = sys.stdin.buffer.fileno()
    try:
        while chunk := os.read(stdin, CHUNK):
            out.write(chunk)
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
