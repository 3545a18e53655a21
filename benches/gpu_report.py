"""The GPU check's report: ``gpu_check.json`` (everything) and ``gpu_check.md`` (the tables people read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The real loader should deliver at least this share of the GPU ceiling (issue 15).
TARGET = 0.8


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def derived(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios to the ceiling, the idle fraction of the GPU in training, the verdict on the target."""
    sections = report.get("sections", {})
    ceiling = sections.get("ceiling", {}).get("images_per_s")
    out: dict[str, Any] = {"target_share_of_ceiling": TARGET}
    if not ceiling:
        return out
    e2e = sections.get("end_to_end", {}).get("images_per_s")
    if e2e:
        out["end_to_end_share_of_ceiling"] = e2e / ceiling
        out["gpu_idle_fraction"] = max(0.0, 1.0 - e2e / ceiling)
        out["meets_target"] = e2e / ceiling >= TARGET
    for run in sections.get("loader", {}).get("runs", []):
        run["share_of_ceiling"] = run["images_per_s"] / ceiling
    return out


def _section_lines(name: str, section: dict[str, Any]) -> list[str]:
    if "error" in section or "skipped" in section:
        return [f"* **{name}**: {section.get('error') or 'skipped: ' + section['skipped']}"]
    if name == "loader":
        lines = [f"* **loader** ({section['seconds']:.0f} s):", "",
                 "  | workers | batch | img/s | share of ceiling | first batch s | MiB/batch |",
                 "  |---|---|---|---|---|---|"]
        for r in section["runs"]:
            share = _fmt(r.get("share_of_ceiling"), 2)
            lines.append(f"  | {r['workers']} | {r['batch_dtype']} | {r['images_per_s']:.0f} | {share} | "
                         f"{r['first_batch_s']:.1f} | {r['batch_mib']:.0f} |")
        return lines + [""]
    if name == "resume":
        parts = [f"{variant}: bit-exact {v['bit_exact_weights']}, max |Δw| {v['max_weight_difference']:.2g}, "
                 f"same metrics {v['same_metrics']}" for variant, v in section.items() if isinstance(v, dict)]
        return [f"* **resume** ({section['seconds']:.0f} s): " + "; ".join(parts)]
    shown = {k: v for k, v in section.items() if k not in ("seconds", "traceback", "messages", "scales")}
    text = ", ".join(f"{k} {_fmt(v, 3 if isinstance(v, float) and abs(v) < 10 else 1)}"
                     for k, v in shown.items())
    return [f"* **{name}** ({section['seconds']:.0f} s): {text}"]


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    title = "GPU check (dry run on the CPU, tiny sizes)" if report["dry_run"] else "GPU check"
    lines = [f"# {title}", "", f"{env.get('gpu', 'no GPU')}, torch {env['torch']}, Python {env['python']}, "
             f"dycl {env['dycl']}; {report['seconds']:.0f} s in all.", "", "## Environment", ""]
    lines += [f"* {k}: {_fmt(v, 2)}" for k, v in env.items()]
    sizes = report["sizes"]
    lines += ["", "## Results", "", f"{sizes['backbone']}, {sizes['image_size']} px, {sizes['batch']} pairs "
              f"a step ({2 * sizes['batch']} images), device {sizes['device']}.", ""]
    for name, section in report.get("sections", {}).items():
        lines += _section_lines(name, section)
    d = report.get("derived", {})
    if "end_to_end_share_of_ceiling" in d:
        lines += ["", f"End-to-end training reaches {100 * d['end_to_end_share_of_ceiling']:.0f} % of the "
                  f"GPU ceiling (the GPU idles {100 * d['gpu_idle_fraction']:.0f} % of the time); target "
                  f"≥ {100 * TARGET:.0f} %: {'met' if d['meets_target'] else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    report["derived"] = derived(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
