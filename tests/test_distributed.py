"""Training on two processes (gloo on the CPU) takes the step one process takes, fills the
one cache in shares, and only process 0 publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from edgefreeze.backbones import load_model
from edgefreeze.context.world import World
from tests.conftest import QUICK, ROOT, TEXT, run_cli, write_pipeline
from tests.sgd_step import sgd_step

pytestmark = pytest.mark.build  # both tests step or build a model on two processes


def _one_step(world: World, out: Path) -> None:
    """One plain-SGD step on this process's share; the updated weights are saved to `out`."""
    torch.set_num_threads(1)
    _, after = sgd_step(world)
    torch.save(after, out)


def _rank(rank: int, store: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _one_step(World(rank=rank, size=2), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_step_on_two_processes_is_the_step_on_one(tmp_path):
    # lr 1 makes each weight's change its gradient: a share weighted wrongly, or a gradient
    # not summed, moves the weights by whole gradients.
    _one_step(World(), tmp_path / "alone.pt")
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    alone = torch.load(tmp_path / "alone.pt", weights_only=True)
    before = {
        n: p
        for n, p in load_model(
            "builtin:all-MiniLM-L6-v2", TEXT, ["neg", "pos"], Path, False, 0
        ).model.named_parameters()
        if n in alone
    }
    for rank in (0, 1):
        together = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(together) == set(alone)
        for name, tensor in alone.items():
            torch.testing.assert_close(together[name], tensor, atol=2e-6, rtol=1e-4, msg=name)
    moved = max(float((alone[n] - before[n].detach()).abs().max()) for n in alone)
    assert moved > 1e-3  # the step did something the comparison could miss


def test_two_processes_fill_the_cache_one_process_reads_and_only_rank_0_publishes(
    tiny_pipeline, tmp_path
):
    pipeline = write_pipeline(
        tmp_path,
        {**QUICK, "train": {"epochs": 2, "dropout": 0.0, "precision": "fp32"}},
        base=tiny_pipeline,
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEFREEZE_CACHE_DIR": ""}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "edgefreeze",
            "build",
            str(pipeline),
            "--output",
            str(tmp_path / "two"),
            "--quiet",
            "--json",
            "--cache-dir",
            str(cache),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    statuses, text = [], two.stdout.strip()
    while text:  # one JSON object per process, one after the other
        result, end = json.JSONDecoder().raw_decode(text)
        statuses.append(result["status"])
        text = text[end:].strip()
    assert sorted(statuses) == ["shipped", "trained"], two.stdout  # one bundle, one rank
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    rows = sum(manifest["data"]["splits"][name]["rows"] for name in ("train", "validation"))
    assert manifest["cache"]["misses"] == rows and manifest["cache"]["hits"] == 0  # shares

    # One process on the cache the two filled: every row is there under the same key.
    one = run_cli(
        "build",
        str(pipeline),
        "--output",
        str(tmp_path / "one"),
        "--quiet",
        "--cache-dir",
        str(cache),
    )
    assert one.exit_code == 0, one.stderr
    alone = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert alone["cache"]["misses"] == 0 and alone["cache"]["hits"] == rows
    # Same activations, same batches, same steps: the models differ only by float sums in
    # another order (each share is padded to its own longest row); measured 1e-5 after 12
    # steps alone, and 1.6e-4 once inside the whole suite (the in-process build there runs
    # with the suite's torch threads). Attention dropout left on (a float SDPA reads) once
    # made it 5e-3; the metrics below must still be equal.
    weights = {
        name: load_file(str(tmp_path / name / "trainable.safetensors")) for name in ("one", "two")
    }
    assert set(weights["one"]) == set(weights["two"])
    drift = max(float((weights["one"][n] - weights["two"][n]).abs().max()) for n in weights["one"])
    assert drift < 5e-4, drift
    assert manifest["metrics"]["pytorch"] == alone["metrics"]["pytorch"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
