"""Summaries of the runs: medians, medians of per-round ratios, the table, JSON and the chart."""

from __future__ import annotations

import json
import statistics
from typing import Optional, Sequence

from .workloads import COMMON, METRICS, WORKLOADS, Metric

SATURATED_PCT = 90.0  # load side busier than this (of its CPUs) => its figure may be capped


def saturated_phases(metrics: dict, load_cpus: int) -> list[str]:
    """Phases in which the load side was (nearly) saturated."""
    out = []
    for name, cpu in metrics.get("phase_cpu", {}).items():
        if cpu["load_peak_pct"] >= SATURATED_PCT or cpu["load_cpu_pct"] >= SATURATED_PCT * load_cpus:
            out.append(name)
    return out


def summarize(entry: dict, extra: Sequence[Metric] = ()) -> None:
    """Add medians and medians of per-round ratios (a/b) to a compare entry."""
    runs = entry["runs"]
    keys = [m.key for m in METRICS.get(entry["workload"], []) + COMMON + list(extra)]
    summary = {}
    for key in keys:
        a = {r["round"]: r["metrics"].get(key) for r in runs["a"] if "metrics" in r}
        b = {r["round"]: r["metrics"].get(key) for r in runs["b"] if "metrics" in r}
        a_vals = [v for v in a.values() if v is not None]
        b_vals = [v for v in b.values() if v is not None]
        ratios = [a[r] / b[r] for r in a if r in b and a[r] is not None and b[r]]
        summary[key] = {
            "a": statistics.median(a_vals) if a_vals else None,
            "b": statistics.median(b_vals) if b_vals else None,
            "ratio": statistics.median(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "n": len(ratios),
            "a_values": a_vals,
            "b_values": b_vals,
        }
    entry["summary"] = summary
    for side in ("a", "b"):
        phases = set()
        for run in runs[side]:
            phases.update(run.get("saturated", []))
        entry.setdefault("saturated", {})[side] = sorted(phases)


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: dict, labels: tuple[str, str], extra: Sequence[Metric] = ()) -> str:
    """The terminal table of a comparison."""
    head = (f"{'workload':17} {'metric':20} {labels[0]:>13} {labels[1]:>13} "
            f"{'ratio':>7} {'per-round':>13}  note")
    lines = [head, "-" * len(head)]
    for name, entry in results.items():
        unsupported = entry.get("unsupported", {})
        rows: list[Metric] = METRICS.get(name, []) + COMMON + list(extra)
        first = True
        for metric in rows:
            s = entry.get("summary", {}).get(metric.key)
            if s is None:
                continue
            if s["a"] is None and s["b"] is None:
                continue
            notes = []
            if metric.better:
                notes.append(f"{metric.better} is better")
            for side, label in (("a", labels[0]), ("b", labels[1])):
                if metric.phase and metric.phase in entry.get("saturated", {}).get(side, []):
                    notes.append(f"load saturated on {label}: may be capped")
            a_txt = "unsupported" if unsupported.get("a") and s["a"] is None else fmt(s["a"])
            b_txt = "unsupported" if unsupported.get("b") and s["b"] is None else fmt(s["b"])
            ratio = f"{s['ratio']:.2f}x" if s["ratio"] is not None else "-"
            spread = (f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f}" if s["ratio"] is not None else "")
            lines.append(f"{name if first else '':17} {metric.label:20} {a_txt:>13} {b_txt:>13} "
                         f"{ratio:>7} {spread:>13}  {'; '.join(notes)}")
            first = False
        if first:  # nothing measured at all
            reasons = "; ".join(f"{labels[0 if k == 'a' else 1]}: {v}" for k, v in unsupported.items() if v)
            lines.append(f"{name:17} {'(no result)':20} {reasons}")
        for side, label in (("a", labels[0]), ("b", labels[1])):
            if unsupported.get(side):
                lines.append(f"{'':17} {label} unsupported: {unsupported[side][:150]}")
            errors = [r["error"] for r in entry["runs"][side] if "error" in r]
            if errors:
                lines.append(f"{'':17} {label}: {len(errors)} failed run(s): {errors[0][:150]}")
    warnings = []
    for name, entry in results.items():
        for side, label in (("a", labels[0]), ("b", labels[1])):
            phases = entry.get("saturated", {}).get(side)
            if phases:
                warnings.append(f"{name} ({label}: {', '.join(phases)})")
    if warnings:
        lines.append("")
        lines.append(f"WARNING: the load side used >= {SATURATED_PCT:.0f}% of its CPU in: " + "; ".join(warnings)
                     + ". Figures from those phases are lower bounds for that server.")
    return "\n".join(lines)


def noise(results: dict) -> dict:
    """How far A/B ratios stray from 1 over the metrics that have a better direction."""
    devs = []
    for name, entry in results.items():
        for metric in METRICS.get(name, []):
            s = entry.get("summary", {}).get(metric.key)
            if not metric.better or not s or s["ratio"] is None:
                continue
            devs.append((abs(s["ratio"] - 1), name, metric.label, s["ratio"],
                         max(abs(s["ratio_min"] - 1), abs(s["ratio_max"] - 1))))
    if not devs:
        return {}
    worst = max(devs)
    worst_round = max(devs, key=lambda d: d[4])
    return {
        "metrics": len(devs),
        "median_abs_dev": statistics.median(d[0] for d in devs),
        "worst_median_ratio": {"workload": worst[1], "metric": worst[2], "ratio": worst[3]},
        "worst_round_dev": {"workload": worst_round[1], "metric": worst_round[2], "dev": worst_round[4]},
        "within_10pct": sum(1 for d in devs if d[0] <= 0.10),
        "within_20pct": sum(1 for d in devs if d[0] <= 0.20),
    }


def noise_text(n: dict) -> str:
    if not n:
        return "A/A: no ratios"
    w, r = n["worst_median_ratio"], n["worst_round_dev"]
    return (f"A/A noise over {n['metrics']} metrics: median |ratio - 1| = {100 * n['median_abs_dev']:.1f}%; "
            f"{n['within_10pct']} within 10%, {n['within_20pct']} within 20%; "
            f"worst median ratio {w['ratio']:.2f}x ({w['workload']} {w['metric']}); "
            f"worst single round {100 * r['dev']:.0f}% off ({r['workload']} {r['metric']})")


def builds_text(builds: Optional[dict]) -> str:
    """", build: beanstalk-py compiled" for the report's first line ("" when not known)."""
    known = {label: b for label, b in (builds or {}).items() if b}
    return "".join(f", build: {label} {b}" for label, b in known.items())


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as handle:
        json.dump(doc, handle, indent=1, default=str)
        handle.write("\n")


def chart(results: dict, path: str, labels: tuple[str, str], title: str) -> Optional[str]:
    """A PNG: per workload, throughput (left) and latency (right), medians with min-max bars.

    The figure above each pair of bars is the median ratio (green when the
    first server is better).  Returns a note instead when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart written"
    names = [n for n in results if results[n].get("summary")]
    if not names:
        return "nothing to chart"
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 2.1 * len(names) + 1.0), squeeze=False)
    colors = ("#d95f02", "#1b9e77")
    for row, name in enumerate(names):
        entry, workload = results[name], WORKLOADS[name]
        metric_of = {m.key: m for m in METRICS.get(name, [])}
        for col, keys in enumerate((workload.throughput, workload.latency)):
            ax = axes[row][col]
            keys = [k for k in keys if k in entry["summary"]]
            tops = []
            for side, (offset, color, label) in enumerate(zip((-0.2, 0.2), colors, labels)):
                sk = "ab"[side]
                values, lows, highs = [], [], []
                for k in keys:
                    s = entry["summary"][k]
                    vals = s[f"{sk}_values"]
                    med = s[sk] or 0.0
                    values.append(med)
                    lows.append(med - min(vals) if vals else 0)
                    highs.append(max(vals) - med if vals else 0)
                    tops.append(max(vals) if vals else 0)
                xs = [i + offset for i in range(len(keys))]
                ax.bar(xs, values, 0.38, color=color, label=label, yerr=[lows, highs], capsize=3)
            positive = [t for t in tops if t > 0]
            if positive and max(positive) / min(positive) > 30:
                ax.set_yscale("log")
            for i, k in enumerate(keys):
                s = entry["summary"][k]
                top = max([s["a"] or 0, s["b"] or 0] + s["a_values"] + s["b_values"])
                better = metric_of[k].better if k in metric_of else ""
                if s["ratio"] is not None:
                    text = f"{s['ratio']:.2f}x"
                    good = s["ratio"] >= 1 if better == "higher" else s["ratio"] <= 1
                    color = "#1a7f37" if good else "#b42318"
                else:
                    text, color = "n/a", "black"
                    if s["a"] is None and entry.get("unsupported", {}).get("a"):
                        text = f"{labels[0]}: unsupported"
                ax.text(i, top * 1.05 if top else 0, text, ha="center", va="bottom", fontsize=8,
                        color=color, fontweight="bold")
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels([metric_of[k].label if k in metric_of else k for k in keys], fontsize=8)
            ax.set_xlim(-0.6, len(keys) - 0.4)
            ax.tick_params(axis="y", labelsize=7)
            ax.margins(y=0.25)
            kind = "throughput (higher is better)" if col == 0 else "latency (lower is better)"
            if name == "memory":
                kind = "fill rate (higher is better)" if col == 0 else "memory (lower is better)"
            ax.set_title(f"{name}: {kind}", fontsize=9)
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="upper right", ncol=2, fontsize=9)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.1 * len(names) + 1.0)))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
