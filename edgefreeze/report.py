"""The human-readable report.md, rendered from the manifest alone."""

from __future__ import annotations

LABELS = {"pytorch": "PyTorch", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8",
          "onnx_split_fp32": "ONNX stem + top fp32", "onnx_split_int8": "ONNX stem + top int8",
          "onnx_fp16": "ONNX fp16 (GPU targets)"}


def render_report(manifest: dict) -> str:
    gate, metrics, training = manifest["gate"], manifest["metrics"], manifest["training"]
    verdict = "PASSED, shipped" if gate["passed"] else "REFUSED, not shipped"
    lines = [f"# {manifest['pipeline']['name']}: gate {verdict}", "",
             f"Model `{manifest['model']['spec']}`, data `{manifest['data']['sources']['source']['origin']}`, "
             f"built by edgefreeze {manifest['edgefreeze_version']} on {manifest['created']}.", "",
             "## Held-out metrics", "",
             "| model | accuracy | macro-F1 | agreement with PyTorch | max abs logit error | size |",
             "| --- | --- | --- | --- | --- | --- |"]
    sizes = manifest.get("sizes", {})
    for key, m in metrics.items():
        label = LABELS.get(key, key)
        size = f"{sizes[key] / 1e6:.1f} MB" if key in sizes else ""
        lines.append(f"| {label} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                     f"{m['agreement']:.4f} | {m['max_logit_error']:.2e} | {size} |")
    lines += ["", "## Gate", ""]
    lines += [f"- {'✅' if r['passed'] else '❌'} {r['what']}: {r['measured']:.6g} "
              f"({'≤' if r['kind'] == 'max' else '≥'} {r['limit']:.6g})"
              for r in gate["rules"].values()]
    for key, shapes in manifest["shape_check"].items():
        lines += ["", f"{LABELS.get(key, key)} shape check: batch sizes {shapes['batch_sizes']} × "
                  f"sequence lengths {shapes['sequence_lengths']}, max abs logit error "
                  f"{shapes['max_logit_error']:.2e}."]
    lines += ["", "## Quantization", ""]
    for name, record in manifest["quantize"].items():
        if "attempts" not in record:
            lines.append(f"- {LABELS.get(name, name)}: {record['mode']}.")
            continue
        attempts = record["attempts"]
        final, first = attempts[-1], attempts[0]
        kept = ", ".join(final["fp32_segments"]) or "nothing"
        lines.append(f"- {LABELS.get(name, name)}: {len(attempts)} attempt(s); kept in fp32: "
                     f"{kept}.")
        if len(attempts) > 1:
            lines.append(f"  Fallback cost: {(final['size_bytes'] - first['size_bytes']) / 1e6:+.1f}"
                         f" MB, batch-1 latency {first['p50_ms']:.2f} -> {final['p50_ms']:.2f} ms;"
                         f" agreement {first['agreement']:.4f} -> {final['agreement']:.4f}.")
    lines += ["", "## Training", "",
              f"Trainable parameters: {training['trainable_parameters']:,} of "
              f"{training['total_parameters']:,} ({100 * training['trainable_share']:.1f} %), "
              f"layers {training['trainable_layers']} of {manifest['model']['layers']} plus the head; "
              f"device {training['device']} ({training['precision']}).", "",
              "| epoch | loss | validation accuracy | seconds |", "| --- | --- | --- | --- |"]
    for e in training["epochs"]:
        val = f"{e['val_accuracy']:.4f}" if "val_accuracy" in e else "–"
        lines.append(f"| {e['epoch']} | {e['loss']:.4f} | {val} | {e['seconds']:.1f} |")
    lines += ["", "## Wall time per stage", ""]
    lines += [f"- {stage}: {seconds:.1f} s" for stage, seconds in manifest["timings_s"].items()]
    return "\n".join(lines) + "\n"
