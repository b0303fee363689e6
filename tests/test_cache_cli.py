"""`edgefreeze cache stats|verify|prune|clear` on a real store on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edgefreeze.cache import ActivationStore
from tests.conftest import run_cli


def filled_store(root, keyset="a" * 24, entries=50, rows=4, width=16):
    store = ActivationStore(
        root,
        keyset,
        {"model_type": "bert", "boundary": 4, "depth": 6, "max_length": 32, "kept_rows": None},
        "fp16",
        width,
    )
    rng = np.random.default_rng(0)
    for start in range(0, entries, 10):
        store.write([(f"key{i}", rng.normal(size=(rows, width))) for i in range(start, start + 10)])
    store.close()
    return store


def test_stats_reports_entries_and_bytes_per_keyset(tmp_path):
    filled_store(tmp_path, "a" * 24, entries=50)
    filled_store(tmp_path, "b" * 24, entries=20)
    result = run_cli("cache", "stats", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 0
    payload = result.json()
    by_key = {k["keyset"]: k for k in payload["keysets"]}
    assert by_key["a" * 24]["entries"] == 50 and by_key["b" * 24]["entries"] == 20
    assert by_key["a" * 24]["bytes"] == 50 * 4 * 16 * 2  # fp16
    assert payload["entries"] == 70 and payload["disk_bytes"] == payload["bytes"]


def test_verify_finds_and_drops_corrupt_entries(tmp_path):
    store = filled_store(tmp_path)
    assert run_cli("cache", "verify", "--cache-dir", str(tmp_path)).exit_code == 0
    shard = sorted((tmp_path / store.keyset).glob("*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x01
    shard.write_bytes(bytes(data))
    result = run_cli("cache", "verify", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 1 and result.json()["exit_code"] == 1
    assert "1 corrupt" in result.stderr
    assert run_cli("cache", "stats", "--cache-dir", str(tmp_path), "--json").json()["entries"] == 49
    assert run_cli("cache", "verify", "--cache-dir", str(tmp_path)).exit_code == 0


def test_prune_by_size_keeps_the_most_recently_used_and_reclaims_disk(tmp_path):
    store = filled_store(tmp_path, entries=50)
    store = ActivationStore(tmp_path, store.keyset, {}, "fp16", 16)
    time.sleep(0.01)
    store.touch([f"key{i}" for i in range(40, 50)])  # the last ten were used most recently
    store.close()
    result = run_cli(
        "cache", "prune", "--max-size", f"{10 * 4 * 16 * 2}", "--cache-dir", str(tmp_path), "--json"
    )
    assert result.exit_code == 0
    payload = result.json()
    assert payload["removed"] == 40 and payload["disk_bytes_after"] == 10 * 4 * 16 * 2
    store = ActivationStore(tmp_path, store.keyset, {}, "fp16", 16)
    left = store.lookup(f"key{i}" for i in range(50))
    assert sorted(left) == sorted(f"key{i}" for i in range(40, 50))
    assert all(store.load(entry) is not None for entry in left.values())  # compacted intact


def test_prune_by_age(tmp_path):
    store = filled_store(tmp_path, entries=20)
    old = time.time() - 10 * 86400
    store = ActivationStore(tmp_path, store.keyset, {}, "fp16", 16)
    with store.db:
        store.db.execute("UPDATE entries SET last_used = ? WHERE key IN ('key0', 'key1')", (old,))
    store.close()
    result = run_cli("cache", "prune", "--older-than", "7", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 0 and result.json()["removed"] == 2


def test_clear_and_bad_arguments(tmp_path):
    filled_store(tmp_path)
    assert run_cli("cache", "clear", "--cache-dir", str(tmp_path)).exit_code == 0
    assert run_cli("cache", "stats", "--cache-dir", str(tmp_path), "--json").json()["entries"] == 0
    nothing = run_cli("cache", "prune", "--cache-dir", str(tmp_path))
    assert nothing.exit_code == 2 and "--older-than" in nothing.stderr
    bad_size = run_cli("cache", "prune", "--max-size", "lots", "--cache-dir", str(tmp_path))
    assert bad_size.exit_code == 2 and "'lots'" in bad_size.stderr


# --- A folder that is not (only) the cache's, a broken cache, odd settings -------------

KEYSET = "ab12" * 6  # 24 hex digits, like describe_keyset's


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextmanager
def read_only(path: Path):
    """`path` made unwritable for real: chmod for a user, the immutable flag for root."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode
    ):
        pytest.skip("running as root on a file system without chattr +i")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_clear_refuses_a_folder_that_is_not_a_cache(tmp_path):
    folder = tmp_path / "notcache"
    (folder / "src").mkdir(parents=True)
    (folder / "thesis.tex").write_text("important")
    (folder / "src" / "main.py").write_text("print()")
    result = run_cli("cache", "clear", "--cache-dir", str(folder), "--json")
    assert result.exit_code == 2 and result.json()["exit_code"] == 2
    line = one_line(result)
    assert str(folder) in line and "does not look like an edgefreeze cache" in line
    assert (folder / "thesis.tex").read_text() == "important"
    assert (folder / "src" / "main.py").is_file()
    # A key-set-like folder holding only what is not a shard is not enough to clear either.
    (folder / KEYSET).mkdir()
    (folder / KEYSET / "notes.bin").write_text("mine")
    assert run_cli("cache", "clear", "--cache-dir", str(folder)).exit_code == 2
    assert (folder / KEYSET / "notes.bin").is_file()


def test_clear_removes_only_what_the_cache_owns(tmp_path):
    store = filled_store(tmp_path, KEYSET)
    (tmp_path / "thesis.tex").write_text("important")
    (tmp_path / "src").mkdir()
    (tmp_path / KEYSET / "notes.bin").write_text("mine")  # not a shard name
    owned = [*tmp_path.glob("index.sqlite*"), *(tmp_path / KEYSET).glob("*.bin")]
    assert len(owned) >= 6  # five shards, the index (and maybe its -wal and -shm)
    result = run_cli("cache", "clear", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    payload = result.json()
    assert payload["removed_files"] == len(owned) - 1  # all but notes.bin
    assert payload["freed_bytes"] > 50 * 4 * 16 * 2
    assert sorted(payload["left"]) == sorted([f"{KEYSET}/notes.bin", "src", "thesis.tex"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([KEYSET, "src", "thesis.tex"])
    assert [p.name for p in (tmp_path / store.keyset).iterdir()] == ["notes.bin"]
    assert "left 3" in result.stderr
    # Cleared: a second clear finds a folder without an index but with foreign files.
    assert run_cli("cache", "clear", "--cache-dir", str(tmp_path)).exit_code == 2


def test_clear_of_a_missing_folder_creates_nothing(tmp_path):
    missing = tmp_path / "none"
    for command in ("clear", "stats"):
        result = run_cli("cache", command, "--cache-dir", str(missing))
        assert result.exit_code == 0 and "does not exist" in result.stdout + result.stderr
    assert run_cli("cache", "stats", "--cache-dir", str(missing), "--json").json()["entries"] == 0
    assert not missing.exists()


def test_prune_never_touches_files_that_are_not_shards(tmp_path):
    store = filled_store(tmp_path, KEYSET, entries=20)
    mine = tmp_path / KEYSET / "results.bin"
    mine.write_text("mine")
    long_ago = time.time() - 30 * 86400
    os.utime(mine, (long_ago, long_ago))  # as old as an abandoned orphan shard
    (tmp_path / "notes.txt").write_text("mine")
    orphan = tmp_path / KEYSET / f"{'0' * 32}.bin"  # the cache's own, unindexed, old
    orphan.write_bytes(b"\0" * 64)
    os.utime(orphan, (long_ago, long_ago))
    result = run_cli("cache", "prune", "--max-size", "0", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 0 and result.json()["removed"] == 20
    assert mine.read_text() == "mine" and (tmp_path / "notes.txt").is_file()
    assert not orphan.exists()
    assert list((tmp_path / store.keyset).glob("????????????????????????????????.bin")) == []


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_a_corrupt_index_is_exit_2_naming_it_and_clear_recovers(tmp_path, damage):
    filled_store(tmp_path, KEYSET)
    index = tmp_path / "index.sqlite"
    if damage == "text":
        index.write_text("this is not a database\n")
    else:
        index.write_bytes(index.read_bytes()[:5000])
    for command in (["stats"], ["verify"], ["prune", "--older-than", "1"]):
        result = run_cli("cache", *command, "--cache-dir", str(tmp_path), "--json")
        assert result.exit_code == 2, (command, result.stderr)
        assert result.json()["exit_code"] == 2
        line = one_line(result)
        assert str(index) in line and "corrupt" in line and "edgefreeze cache clear" in line
    result = run_cli("cache", "clear", "--cache-dir", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    assert run_cli("cache", "stats", "--cache-dir", str(tmp_path), "--json").json()["entries"] == 0


def test_a_read_only_cache_can_be_inspected_but_not_changed(tmp_path):
    root = tmp_path / "cache"
    filled_store(root, KEYSET)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with read_only(root):
        stats = run_cli("cache", "stats", "--cache-dir", str(root), "--json")
        assert stats.exit_code == 0, stats.stderr
        assert stats.json()["entries"] == 50
        assert run_cli("cache", "verify", "--cache-dir", str(root)).exit_code == 0
        for command in (["prune", "--older-than", "0"], ["clear"]):
            result = run_cli("cache", *command, "--cache-dir", str(root))
            assert result.exit_code == 2, (command, result.stderr)
            assert str(root) in one_line(result)
    with read_only(root / KEYSET):
        result = run_cli("cache", "clear", "--cache-dir", str(root))
        assert result.exit_code == 2 and str(root / KEYSET) in one_line(result)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing deleted


def test_cache_dir_from_the_environment_must_be_a_folder(tmp_path, monkeypatch):
    a_file = tmp_path / "f.txt"
    a_file.write_text("keep")
    for value in (a_file, a_file / "sub"):
        monkeypatch.setenv("EDGEFREEZE_CACHE_DIR", str(value))
        for command in ("stats", "clear"):
            result = run_cli("cache", command, "--json")
            assert result.exit_code == 2 and result.json()["exit_code"] == 2
            line = one_line(result)
            assert "EDGEFREEZE_CACHE_DIR" in line and str(a_file) in line
    assert a_file.read_text() == "keep"


def test_verify_json_keeps_the_counts_when_it_finds_corruption(tmp_path):
    store = filled_store(tmp_path)
    shard = sorted((tmp_path / store.keyset).glob("*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x01
    shard.write_bytes(bytes(data))
    result = run_cli("cache", "verify", "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 1
    payload = result.json()
    assert payload["exit_code"] == 1 and payload["status"] == "error"
    assert payload["checked"] == 50 and payload["corrupt"] == 1
    assert payload["dir"] == str(tmp_path) and "1 corrupt" in payload["message"]


@pytest.mark.parametrize("option", [["--max-size", "1e400"], ["--older-than", "nan"]])
def test_prune_rejects_sizes_and_ages_that_are_not_numbers(tmp_path, option):
    filled_store(tmp_path)
    result = run_cli("cache", "prune", *option, "--cache-dir", str(tmp_path), "--json")
    assert result.exit_code == 2 and result.json()["exit_code"] == 2
    assert option[0] in one_line(result)


def test_cache_dir_help_says_a_pipeline_can_point_builds_elsewhere():
    for command in ("stats", "verify", "prune", "clear"):
        assert "cache.dir" in run_cli("cache", command, "--help").stdout


def test_a_store_on_a_corrupt_index_says_why_once_and_runs_uncached(tmp_path, capsys):
    """The storage layer prints nothing: it records why it gave up, and the build reports it
    (test_cache.py shows the build's one warning line)."""
    (tmp_path / "index.sqlite").write_text("this is not a database\n")
    store = ActivationStore(tmp_path, KEYSET, {}, "fp16", 16)
    assert store.lookup(["a", "b"]) == {}
    assert store.write([("a", np.ones((2, 16)))]) == 0
    first = store.problem
    store.touch(["a"])
    store.forget(["a"])
    store.close()
    assert capsys.readouterr().err == ""
    assert store.problem == first and str(tmp_path / "index.sqlite") in first
    assert "corrupt" in first and "edgefreeze cache clear" in first


def test_a_store_refuses_an_activation_of_the_wrong_width(tmp_path):
    store = ActivationStore(tmp_path, KEYSET, {}, "fp16", 16)
    with pytest.raises(ValueError, match=r"shape \(2, 8\).*\(rows, 16\)"):
        store.write([("a", np.ones((2, 8)))])
    store.close()
    assert not (tmp_path / KEYSET).exists() or list((tmp_path / KEYSET).iterdir()) == []
