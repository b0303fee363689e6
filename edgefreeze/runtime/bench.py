"""`edgefreeze bench`: latency, throughput, size and peak memory of a bundle's models.

Each model is measured in a fresh process of its own (so peak memory is its own, and one
model's warm caches do not flatter the next), one after another, on the same inputs:
batch 1 latency percentiles and batch 32 throughput at a fixed sequence length.
PyTorch eager is measured where torch is installed, on the architecture the bundle's
config.json names, built from that config (the weights' values do not change the compute).
"""

from __future__ import annotations

import inspect
import multiprocessing
import resource
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from edgefreeze.errors import ConfigError, EdgefreezeError
from edgefreeze.runtime.bundle import Bundle
from edgefreeze.runtime.forms import FORMS, FP32, INT8, REFERENCE
from edgefreeze.runtime.inputs import input_kind, load_tokenizer
from edgefreeze.runtime.session import OnnxModel

SPEEDUP = f"{INT8.name}_speedup_p50"  # how much faster int8 is than each other model
SAMPLE = (
    "An absorbing, often funny and finally moving film about people who keep missing "
    "each other, with two fine performances at its centre and a score that knows when "
    "to stay quiet. "
) * 32  # over 1,000 tokens: enough for any max_length up to 1,024


def inputs(bundle: Bundle, batch: int, length: int) -> dict[str, np.ndarray]:
    """(batch, length) int64 inputs: a real review's tokens, cut to exactly `length`
    (a word-labelling model reads the same tokens, its words pre-split); for an image
    model, `batch` copies of a test pattern's pixels (`length` does not apply)."""
    kind = input_kind(bundle.manifest.task.inputs)
    if kind.modality == "image":
        return _image_inputs(bundle, batch)
    if kind.modality != "text":
        raise ConfigError(
            f"bench: measures text and image models; {bundle.path} takes "
            f"{bundle.manifest.task.inputs} inputs"
        )
    encoding = load_tokenizer(bundle.verified("tokenizer.json"), length).encode(SAMPLE)
    if len(encoding.ids) != length:
        raise ConfigError(
            f"bench: the sample text gives {len(encoding.ids)} tokens, not "
            f"{length}; choose a shorter --sequence-length"
        )
    ids = np.array([encoding.ids], dtype=np.int64).repeat(batch, axis=0)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def _image_inputs(bundle: Bundle, batch: int) -> dict[str, np.ndarray]:
    """A 640x480 colour gradient prepared as the device prepares a photo: the model's
    compute does not depend on what the pixels show, only on their number."""
    from PIL import Image

    from edgefreeze.runtime.images import PREPROCESSOR, Preprocessing

    rows, columns = np.mgrid[0:480, 0:640]
    pattern = np.stack([rows * 255 // 479, columns * 255 // 639, (rows + columns) % 256], axis=-1)
    preprocessing = Preprocessing.from_folder(bundle.verified(PREPROCESSOR).parent)
    pixels = preprocessing.pixels(Image.fromarray(pattern.astype(np.uint8), mode="RGB"))
    return {"pixel_values": np.repeat(pixels[None], batch, axis=0)}


def timed_ms(run: Callable[[Any], Any], inputs: Any, runs: int) -> np.ndarray:
    """Milliseconds of each of `runs` calls of `run(inputs)`, after a warm-up."""
    for _ in range(max(5, runs // 10)):
        run(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - start)
    return np.array(times) * 1000


def batch1_latency_ms(run: Callable[[Any], Any], inputs: Any, runs: int = 50) -> float:
    """The median latency of one example: the gate's and the report's figure."""
    return float(np.median(timed_ms(run, inputs, runs)))


Feed = dict[str, np.ndarray]
Figures = dict[str, Any]  # one model's measurements


def _measure(
    run: Callable[[Feed], object], batch1: Feed, batch32: Feed, runs: int
) -> dict[str, float]:
    ms = timed_ms(run, batch1, runs)
    throughput_runs = max(3, runs // 20)
    start = time.perf_counter()
    for _ in range(throughput_runs):
        run(batch32)
    seconds = time.perf_counter() - start
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput_per_s": len(next(iter(batch32.values()))) * throughput_runs / seconds,
    }


def _worker(
    bundle_path: str,
    form: str,
    files: list[str] | None,
    threads: int,
    length: int,
    runs: int,
    queue: multiprocessing.Queue[Figures],
) -> None:
    """Measure one model in this (fresh) process; put its figures, or {"error": ...}."""
    try:
        queue.put(_measure_model(Bundle(bundle_path), form, files, threads, length, runs))
    except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _measure_model(
    bundle: Bundle, form: str, files: list[str] | None, threads: int, length: int, runs: int
) -> Figures:
    batch1, batch32 = inputs(bundle, 1, length), inputs(bundle, 32, length)
    run: Callable[[Feed], object]
    if form == REFERENCE:
        import torch
        import transformers

        if threads:
            torch.set_num_threads(threads)
        # The architecture the bundle's own config.json names: no download, and the
        # weights' values do not change the compute.
        config = transformers.AutoConfig.from_pretrained(bundle.verified("config.json").parent)
        named = getattr(transformers, (config.architectures or [""])[0], None)
        from_config = transformers.AutoModel.from_config
        model = (named(config) if named else from_config(config)).eval()
        size = sum(p.numel() * p.element_size() for p in model.parameters())

        accepted = inspect.signature(model.forward).parameters  # DistilBERT: no token types

        def run_torch(batch: Feed) -> object:
            with torch.inference_mode():
                return model(**{k: torch.from_numpy(v) for k, v in batch.items() if k in accepted})

        run = run_torch
    elif files:  # a model from elsewhere, measured on the bundle's inputs for comparison
        run = OnnxModel(files, threads).run
        size = sum(Path(f).stat().st_size for f in files)
    else:
        run = bundle.model(form, threads).run
        size = sum((bundle.path / name).stat().st_size for name in FORMS[form].files)
    result = _measure(run, batch1, batch32, runs)
    result["size_bytes"] = size
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def bench(
    bundle_path: Path,
    threads: int = 0,
    length: int = 32,
    runs: int = 200,
    forms: tuple[str, ...] = (INT8.name, FP32.name, REFERENCE),
    others: dict[str, list[Path]] | None = None,
    rounds: int = 1,
) -> Figures:
    """Measure the bundle's `forms` (and PyTorch) and any `others` (name -> ONNX files)
    alike.

    With rounds > 1 every model is measured once per round, in turn, and each figure is
    the median over rounds (peak memory the largest): a burst of load on a shared machine
    then lands on one round of one model instead of deciding a comparison.
    """
    bundle = Bundle(bundle_path)  # check everything here, before spawning anything
    sequential = input_kind(bundle.manifest.task.inputs).sequential
    if sequential and length > bundle.max_length:
        raise ConfigError(
            f"bench: sequence length {length} is over the bundle's max_length "
            f"{bundle.max_length} (the runtime never feeds longer inputs)"
        )
    inputs(bundle, 1, length)
    for form in forms:
        if form != REFERENCE:
            bundle.model_files(form)  # present and verified
    context = multiprocessing.get_context("spawn")
    results: Figures = {
        "bundle": str(bundle_path),
        "threads": threads,
        "sequence_length": length if sequential else None,
        "rounds": rounds,
    }
    jobs: list[tuple[str, list[str] | None]] = [(f, None) for f in forms]
    jobs += [(n, [str(f) for f in fs]) for n, fs in (others or {}).items()]
    if REFERENCE in forms and not _torch_available():
        results[REFERENCE] = None
        jobs = [job for job in jobs if job[0] != REFERENCE]
    measured: dict[str, list[Figures]] = {name: [] for name, _ in jobs}
    for _ in range(rounds):
        for form, files in list(jobs):
            result = _in_process(context, (str(bundle_path), form, files, threads, length, runs))
            if "error" not in result:
                measured[form].append(result)
            elif form == REFERENCE:  # a comparison only: report why it is missing
                results[REFERENCE], results[f"{REFERENCE}_error"] = None, result["error"]
                jobs.remove((form, files))
                del measured[form]
            else:
                raise EdgefreezeError(f"bench: measuring {form} failed: {result['error']}")
    for name, samples in measured.items():
        results[name] = {
            key: (max if key == "peak_rss_bytes" else _median)([sample[key] for sample in samples])
            for key in samples[0]
        }
    if INT8.name in measured:  # the comparison people read the bench for
        int8 = results[INT8.name]["p50_ms"]
        results[SPEEDUP] = {
            name: results[name]["p50_ms"] / int8 for name in measured if name != INT8.name
        }
    return results


def _in_process(
    context: multiprocessing.context.SpawnContext,
    args: tuple[str, str, list[str] | None, int, int, int],
    limit_s: float = 1800,
) -> Figures:
    """Run _worker(*args) in a fresh process; its result, or why it gave none (it died,
    or ran past `limit_s`)."""
    queue = context.Queue()
    process = context.Process(target=_worker, args=(*args, queue))
    process.start()
    deadline = time.monotonic() + limit_s
    result = None
    while result is None and time.monotonic() < deadline:
        alive = process.is_alive()  # read before the queue: a result put just before exit
        try:  # is still collected below
            result = queue.get(timeout=1)
        except Empty:
            if not alive:
                result = {"error": f"the measuring process died (exit code {process.exitcode})"}
    if result is None:
        process.kill()
        result = {"error": f"the measuring process ran past {limit_s:.0f} s"}
    process.join()
    return result


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _torch_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("torch") is not None
        and importlib.util.find_spec("transformers") is not None
    )
