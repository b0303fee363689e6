"""A build in a release pipeline is killed, cancelled, raced and starved of disk: whatever
happens, the output holds a complete gated bundle or nothing, and the same command run
again finishes the job with the same bytes.

These run `python -m edgefreeze` as a real child process, since what is tested is what a
signal or a dead process leaves on disk, on the tiny checkpoint: nothing here depends on
what the model computes. Signals and second builds land at named hold points
(`EDGEFREEZE_FAILPOINT=STAGE:hold`), never by racing a stage."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgefreeze.errors import ConfigError
from edgefreeze.failpoints import POINTS
from edgefreeze.interrupts import Terminated, stopping_on_signals
from edgefreeze.progress import Reporter
from edgefreeze.publish import DestinationClaim
from tests.conftest import run_cli

pytestmark = pytest.mark.build  # builds killed, stopped, raced and starved

# Every file of a bundle except the manifest and report, which carry timings.
MODEL_FILES = (
    "model.onnx",
    "model.int8.onnx",
    "trainable.safetensors",
    "labels.json",
    "tokenizer.json",
    "config.json",
)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI as a terminal's foreground job runs it: SIGINT at its default even when the
    test run itself was started in the background, where shells ignore SIGINT and every
    child inherits that."""
    return subprocess.Popen(
        [sys.executable, "-m", "edgefreeze", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgefreeze", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def build_args(output: Path, cache: Path, pipeline: Path) -> list[str]:
    return ["build", str(pipeline), "--output", str(output), "--cache-dir", str(cache), "--json"]


@contextmanager
def held_at(point: str, *args: str) -> Iterator[subprocess.Popen]:
    """The CLI started with a hold at `point`, given once it holds there; killed on the way
    out if the test left it running (a failed assertion must not leave it waiting)."""
    process = start(*args, env={"EDGEFREEZE_FAILPOINT": f"{point}:hold"})
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith(f"edgefreeze: holding at failpoint {point} "):
                break
        else:
            raise AssertionError(f"the build ended before {point}: {''.join(lines)[-2000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def own_cache(built, tmp_path: Path) -> Path:
    """A copy of a shared build's cache: tests that build on it write to it (every hit
    marks its entry used), and another worker may be copying the shared one."""
    return shutil.copytree(built.cache, tmp_path / "cache")


def cached_entries(cache: Path) -> int:
    result = run_cli("cache", "stats", "--cache-dir", str(cache), "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["entries"]


def test_killed_at_every_stage_the_same_command_ships_the_same_bytes(tiny_pipeline, tmp_path):
    """SIGKILL inside each stage in turn (each run dies one stage later than the last),
    then the command once more: it resumes from what the cache kept, removes what the dead
    runs left beside the output, and ships model files byte-identical to a clean build."""
    clean = run(*build_args(tmp_path / "clean" / "bundle", tmp_path / "clean-cache", tiny_pipeline))
    assert clean.returncode == 0, clean.stderr

    output, cache = tmp_path / "out" / "bundle", tmp_path / "cache"
    for point in POINTS:
        killed = run(*build_args(output, cache, tiny_pipeline), env={"EDGEFREEZE_FAILPOINT": point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert not output.exists(), point
        if point == "cache":  # the training split's activations are in, the rest are not
            assert 0 < cached_entries(cache) < 420
        if point in ("export", "quantize", "gate", "publish"):
            assert [p.name for p in output.parent.glob(".bundle.*.partial")], point

    final = run(*build_args(output, cache, tiny_pipeline))
    assert final.returncode == 0, final.stderr
    assert sorted(p.name for p in output.parent.iterdir()) == ["bundle"]  # no leftovers
    result, reference = json.loads(final.stdout), json.loads(clean.stdout)
    assert result["cache"]["misses"] == 0 and result["cache"]["hits"] == 420
    assert result["metrics"] == reference["metrics"]
    for name in MODEL_FILES:
        assert (output / name).read_bytes() == (
            tmp_path / "clean" / "bundle" / name
        ).read_bytes(), name


@pytest.mark.parametrize(
    ("sent", "code", "word", "during"),
    [
        (signal.SIGTERM, 143, "terminated", "export"),
        (signal.SIGINT, 130, "interrupted", "train"),
    ],
)
def test_a_signal_exits_with_its_code_and_leaves_nothing(tiny, tmp_path, sent, code, word, during):
    output = tmp_path / "out" / "bundle"
    with held_at(during, *build_args(output, own_cache(tiny, tmp_path), tiny.pipeline)) as process:
        process.send_signal(sent)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code
    assert stderr.strip().splitlines()[-1] == f"edgefreeze: {word}"
    assert "Traceback" not in stderr
    assert json.loads(stdout) == {"exit_code": code, "status": word}
    assert list(output.parent.iterdir()) == []  # no bundle, staging folder or lock


def test_two_builds_into_one_folder_one_ships_the_other_exits_2(tiny, tmp_path):
    output = tmp_path / "out" / "bundle"
    args = build_args(output, own_cache(tiny, tmp_path), tiny.pipeline)
    with held_at("data", *args) as first:  # it holds the output's lock before reading data
        second = run(*args)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"edgefreeze: error: output: another build (pid "
            f"{first.pid}) is writing {output}; wait for it or "
            "choose another --output"
        ), second.stderr
        first.send_signal(signal.SIGUSR1)
        first.communicate(timeout=300)  # reads its pipes to the end: it never blocks on them
    assert first.returncode == 0
    verified = run_cli("predict", str(output), "a fine film")  # the bundle is whole, verified
    assert verified.exit_code == 0, verified.stderr
    again = run_cli(*args)
    assert again.exit_code == 2
    assert again.stderr.strip() == (
        f"edgefreeze: error: output: {output} already exists; remove it or choose another --output"
    )
    assert sorted(p.name for p in output.parent.iterdir()) == ["bundle"]


def test_a_claim_is_exclusive_and_clears_only_its_own_leftovers(tmp_path):
    destination = tmp_path / "v1"
    ours = tmp_path / ".v1.abcd1234.partial"
    other = tmp_path / ".v1.x.abcd1234.partial"  # a staging folder of the bundle "v1.x"
    for folder in (ours, other):
        folder.mkdir()
    claim = DestinationClaim(destination)
    assert claim.removed == [ours.name] and other.is_dir()
    with pytest.raises(ConfigError, match=f"another build \\(pid {os.getpid()}\\)"):
        DestinationClaim(destination)
    claim.release()
    assert not claim.path.exists()
    DestinationClaim(destination).release()  # free again once released


def _mount_namespace() -> list[str]:
    """The `unshare` call that gives a private mount namespace here: as root a plain one,
    else a user namespace mapped to root; the test is skipped, with the reason, where the
    kernel or a container's seccomp profile allows neither."""
    tries = ([["unshare", "--mount"]] if os.geteuid() == 0 else []) + [
        ["unshare", "--user", "--map-root-user", "--mount"]
    ]
    for command in tries:
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return command
    pytest.skip(
        "no private mount namespace here (unshare --mount and --user both refused), "
        "so no small filesystem to fill"
    )


def _in_small_filesystem(
    mount: Path, size: str, *commands: list[str]
) -> tuple[list[subprocess.CompletedProcess], list[str]]:
    """Run `commands` in turn with a tmpfs of `size` (mount's `size=`: "8m", "600k")
    mounted at `mount`, in a private mount namespace; returns their results and what the
    tmpfs held at the end."""
    namespace = _mount_namespace()
    mount.mkdir(parents=True, exist_ok=True)
    results = mount.parent / f"{mount.name}.results"
    results.mkdir()
    steps = [
        f"{shlex.join(command)} > {results}/{i}.out 2> {results}/{i}.err; "
        f"echo $? > {results}/{i}.code"
        for i, command in enumerate(commands)
    ]
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {mount} && "
        + " && ".join(f"{{ {step}; }}" for step in steps)
        + f" && find {mount} -mindepth 1 -printf '%P\\n' > {results}/listing"
    )
    subprocess.run([*namespace, "sh", "-c", script], check=True)
    return (
        [
            subprocess.CompletedProcess(
                command,
                int((results / f"{i}.code").read_text()),
                (results / f"{i}.out").read_text(),
                (results / f"{i}.err").read_text(),
            )
            for i, command in enumerate(commands)
        ],
        sorted((results / "listing").read_text().split()),
    )


def edgefreeze(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgefreeze", *args]


def test_a_full_disk_while_writing_the_bundle_is_one_line_and_leaves_nothing(tiny, tmp_path):
    """4 MB: less than the tiny model's 8.9 MB fp32 file."""
    small = tmp_path / "small"
    output = small / "bundle"
    cache = own_cache(tiny, tmp_path)
    (result,), left = _in_small_filesystem(
        small, "4m", edgefreeze(*build_args(output, cache, tiny.pipeline), "--quiet")
    )
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert re.fullmatch(
        f"edgefreeze: error: output: no space left for the bundle beside "
        f"{re.escape(str(output))} \\(4 MB free once its staging folder "
        "was removed\\); nothing was published",
        line,
    ), line
    assert left == []  # no bundle, no staging folder, no lock


def test_a_full_disk_while_filling_the_cache_runs_live_and_keeps_the_cache(tiny_pipeline, tmp_path):
    """A cache of 256 kB: less than the tiny model's 1.4 MB of activations."""
    cache = tmp_path / "small-cache"
    output = tmp_path / "out" / "bundle"
    (build, verify), left = _in_small_filesystem(
        cache,
        "256k",
        edgefreeze(*build_args(output, cache, tiny_pipeline), "--quiet"),
        edgefreeze("cache", "verify", "--cache-dir", str(cache), "--json"),
    )
    assert build.returncode == 0, build.stderr
    (warning,) = build.stderr.strip().splitlines()
    problem = json.loads(build.stdout)["cache"]["problem"]
    assert warning == f"edgefreeze: warning: {problem}; running without the activation cache"
    assert problem.endswith("No space left on device"), problem
    assert (output / "model.int8.onnx").is_file()
    assert verify.returncode == 0, verify.stderr  # what it holds is sound
    assert [name for name in left if name.endswith(".bin")] == []  # no half-written shard


def test_a_stop_swallowed_in_a_finaliser_is_raised_at_the_next_stage():
    """A signal landing in a `__del__` (a progress bar being closed) is printed as
    "Exception ignored" by Python and lost; the recorded stop is raised at the next stage
    boundary. SIGTERM here: the test run may itself be a background job, whose SIGINT the
    shell ignores (and edgefreeze leaves ignored)."""

    class Closing:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in here

    before = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(Terminated), stopping_on_signals():
        Closing()  # collected at once; its Terminated is swallowed
        reached.append("after the finaliser")
        with Reporter(quiet=True).stage("next"):
            reached.append("inside the next stage")
    assert reached == ["after the finaliser"]
    assert signal.getsignal(signal.SIGTERM) is before
