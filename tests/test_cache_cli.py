"""`edgefreeze cache stats|verify|prune|clear` on a real store on disk."""

from __future__ import annotations

import time

import numpy as np

from edgefreeze.cache import ActivationStore
from tests.conftest import run_cli


def filled_store(root, keyset="a" * 24, entries=50, rows=4, width=16):
    store = ActivationStore(root, keyset, {"model_type": "bert", "boundary": 4, "depth": 6,
                                           "max_length": 32, "kept": "all-tokens"}, "fp16", width)
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
    result = run_cli("cache", "prune", "--max-size", f"{10 * 4 * 16 * 2}", "--cache-dir",
                     str(tmp_path), "--json")
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
