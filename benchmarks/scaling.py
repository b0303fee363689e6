"""How caching and training scale: rows (1k, 4k, all), max_length (64, 128, 256) and the
depth of the frozen stem (6 and 12 layers), top 2 layers trainable, one epoch each.

Per configuration, in a fresh process of its own (so its peak memory is its own): filling
a cold activation cache, an epoch from the cache, an epoch with the stem live, the cache's
bytes on disk, and the process's peak resident memory.

The built-in snippets are shorter than 64 tokens, so a larger max_length alone changes
nothing (the cache stores no padding); the joined configurations make the texts longer
(several reviews of one film and label per text, from `joined_corpus`).

The 12-layer model is MiniLM-L6 with its six layers repeated (`deepen`): real weights, the
shape of MiniLM-L12 (what the cache saves depends on the shape, not the values).

    python benchmarks/scaling.py [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import copy
import csv
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from queue import Empty

import torch
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from transformers import AutoModel, AutoTokenizer

from edgefreeze.backbones import load_model
from edgefreeze.cache.features import CacheSettings, stem_features
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.data.sources import rotten_tomatoes
from edgefreeze.freeze import PlannedModel
from edgefreeze.progress import Reporter
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for
from edgefreeze.train.device import resolve_precision
from edgefreeze.train.loop import Examples, Splits, train

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"
# name -> (rows, max_length, layers, snippets joined into each text)
CONFIGURATIONS = {
    "1k rows": (1000, 64, 6, 1),
    "4k rows": (4000, 64, 6, 1),
    "all rows": (None, 64, 6, 1),
    "max_length 128": (None, 128, 6, 1),
    "texts of 3 snippets, max_length 128": (None, 128, 6, 3),
    "texts of 6 snippets, max_length 256": (None, 256, 6, 6),
    "12 layers": (None, 64, 12, 1),
}


def joined_corpus(snippets: int, folder: Path) -> Path:
    """The built-in corpus as a CSV whose texts are `snippets` reviews of one film with
    one label, joined: real text, longer (the snippets alone are under 64 tokens)."""
    table = rotten_tomatoes()
    groups: dict[tuple, list[str]] = defaultdict(list)
    for row in table.rows:
        groups[(row[table.group_column], row[table.label_column])].append(str(row["text"]))
    path = folder / f"joined-{snippets}.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label", "movie_name"])
        for (film, label), texts in groups.items():
            for start in range(0, len(texts), snippets):
                writer.writerow([" ".join(texts[start : start + snippets]), label, film])
    return path


def deepen(model_folder: Path, layers: int, folder: Path) -> Path:
    """A local checkpoint of the model with its layer stack repeated up to `layers`."""
    model = AutoModel.from_pretrained(model_folder)
    stack = model.encoder.layer
    model.encoder.layer = torch.nn.ModuleList(
        [copy.deepcopy(stack[i % len(stack)]) for i in range(layers)]
    )
    model.config.num_hidden_layers = layers
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_folder).save_pretrained(folder)
    return folder


def measure(
    rows: int | None,
    max_length: int,
    layers: int,
    snippets: int,
    scratch: str,
    queue,
    model: str | None = None,
) -> None:
    """One configuration, in this (fresh) process; puts its figures on `queue`. `model`
    replaces the pipeline's (a checkpoint folder)."""
    pipeline = load_pipeline(PIPELINE)
    spec = pipeline.spec
    task = task_for(spec.task)
    data_spec = spec.data.model_copy(update={"sample_rows": rows, "max_length": max_length})
    if snippets > 1:
        data_spec = data_spec.model_copy(
            update={
                "source": str(joined_corpus(snippets, Path(scratch))),
                "labels": ["rotten", "fresh"],
            }
        )
    data = load_data(data_spec, task, pipeline.resolve)
    model = model or spec.model
    if layers != 6:
        source = load_model(spec.model, task, data.label_names, pipeline.resolve, False, 0)
        model = str(deepen(Path(source.source["location"]), layers, Path(scratch) / "deep"))
    loaded = load_model(model, task, data.label_names, pipeline.resolve, False, 0, max_length)
    model = PlannedModel.of(loaded, spec.freeze, None, spec.train.seed)
    plan = model.plan
    encoded = {
        name: task.encode(loaded.processor, split.inputs, max_length)
        for name, split in data.named_splits().items()
    }
    quiet = RunContext(Reporter(quiet=True))
    one_epoch = spec.train.with_epochs(1)
    cache = Path(scratch) / "cache"

    def features(root: Path | None):
        settings = CacheSettings(root, spec.cache.dtype, max_length)
        return stem_features(model, task, data, encoded, settings, quiet)[0]["train"]

    def epoch(train_set) -> float:
        start = time.perf_counter()
        train(
            loaded.backbone,
            plan,
            task,
            Splits(Examples(train_set, data.train.targets)),
            one_epoch,
            quiet,
        )
        return time.perf_counter() - start

    start = time.perf_counter()
    cached = features(cache)
    fill = time.perf_counter() - start
    lengths = encoded["train"].lengths()
    queue.put(
        {
            "rows": len(data.train),
            "tokens": float(lengths.mean()),
            "fill_s": fill,
            "cached_s": epoch(cached),
            "live_s": epoch(features(None)),
            "cache_bytes": sum(p.stat().st_size for p in cache.rglob("*.bin")),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "precision": resolve_precision(spec.train.precision, torch.device("cpu")),
        }
    )


def render(results: dict[str, dict], command: str) -> str:
    precision = next(iter(results.values()))["precision"]
    lines = [
        "<!-- scaling:start -->",
        "## Scaling: rows, sequence length, depth",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_name()}. The default pipeline's data and MiniLM, top 2 layers "
        f"trainable, batch 32, one epoch, the top in {precision}; each configuration in "
        "a fresh process, one after another. Times in seconds.",
        "",
        "| configuration | training rows | mean tokens | filling the cache | "
        "epoch from the cache | epoch with the stem live | live / cached | "
        "cache on disk MB | peak memory MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rows']:,} | {r['tokens']:.0f} | {r['fill_s']:.1f} | "
            f"{r['cached_s']:.1f} | "
            f"{r['live_s']:.1f} | **{r['live_s'] / r['cached_s']:.2f}x** | "
            f"{r['cache_bytes'] / 1e6:.1f} | {r['peak_rss'] / 1e6:.0f} |"
        )
    lines += [
        "",
        (
            "Cost grows linearly with rows and with tokens per text (the cache stores no padding, "
            "so max_length beyond the texts' length changes nothing); the cache's gain depends on "
            "how much of the model is frozen: 1.8x an epoch with 4 of 6 layers frozen, 3.1x with 10"
            " of 12. Filling the cache costs about one live epoch's stem pass, so it pays from the "
            "second epoch, and from the first build on for every later build and sweep trial."
        ),
    ]
    lines.append("<!-- scaling:end -->")
    return "\n".join(lines) + "\n"


def _result(queue, process) -> dict:
    """What the configuration's process put on `queue`; a crash (its traceback is on
    stderr) ends the run instead of waiting for it."""
    while True:
        try:
            return queue.get(timeout=5)
        except Empty:
            if not process.is_alive():
                sys.exit(f"the process measuring it ended with code {process.exitcode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS)
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = {}
    for name in args.only:
        print(f"{name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="edgefreeze-scaling-") as scratch:
            queue = context.Queue()
            process = context.Process(target=measure, args=(*CONFIGURATIONS[name], scratch, queue))
            process.start()
            results[name] = _result(queue, process)
            process.join()
        print(results[name], file=sys.stderr, flush=True)
    section = render(results, " ".join(["python benchmarks/scaling.py", *sys.argv[1:]]))
    write_section(args.out, section, "scaling")
    print(section)


if __name__ == "__main__":
    main()
