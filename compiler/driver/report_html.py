"""The report as one self-contained HTML page: tables plus matplotlib plots embedded as PNG data
URIs (no files to lose, opens offline). Built from the report dict alone, so `hewn report
OUT.onnx` can re-render it from the JSON beside any model hewn wrote.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from typing import Optional

PLOT_DPI = 90


def render(report: dict, title: str) -> str:
    sections = [_summary(report), _plots(report), _layers(report), _passes(report), _left_intact(report),
                _rollbacks(report), _runtime(report)]
    body = "\n".join(s for s in sections if s)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>hewn report: {_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>hewn report: {_e(title)}</h1>\n<p class=\"meta\">target <b>{_e(report['target']['name'])}</b> "
            f"({_e(report['target']['description'])}), hewn {_e(report.get('hewn_version', '?'))}, "
            f"compiled in {report.get('compile_seconds', '?')} s</p>\n{body}\n</body>\n</html>\n")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.meta{color:#555}.bad{color:#b00}.good{color:#070}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}h2{border-bottom:1px solid #ddd;padding-bottom:3px}"""


def _e(value) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list], left: int = 1) -> str:
    head = "".join(f"<th class=\"{'l' if i < left else ''}\">{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class=\"{'l' if i < left else ''}\">{_e(_fmt(c))}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return "" if v is None else str(v)


def _summary(r: dict) -> str:
    b, a = r["before"], r["after"]
    rows = [["parameters", b["params"], a["params"], _ratio(a["params"], b["params"])],
            ["MACs", b["macs"], a["macs"], _ratio(a["macs"], b["macs"])],
            ["nodes", b["nodes"], a["nodes"], _ratio(a["nodes"], b["nodes"])]]
    if "file_bytes" in r:
        fb = r["file_bytes"]
        rows.append(["file MB", round(fb["before"] / 1e6, 3), round(fb["after"] / 1e6, 3),
                     _ratio(fb["after"], fb["before"])])
    if "latency" in r:
        lat = r["latency"]
        rows.append(["latency ms (this machine)", lat["before_ms"], lat["after_ms"], _ratio(lat["after_ms"],
                                                                                          lat["before_ms"])])
    out = "<h2>Before and after</h2>" + _table(["", "original", "compiled", "ratio"], rows)
    out += _accuracy(r)
    return out


def _ratio(after, before) -> str:
    return f"{after / before:.3f}" if before else ""


def _accuracy(r: dict) -> str:
    v = r.get("verification", {})
    final = r.get("plan", {}).get("final")
    lines = []
    if "rtol" in v:
        lines.append(f"<p class=\"good\">Lossless: outputs equal the original's on {v['samples']} input(s), "
                     f"max abs error {v['max_abs_err']:.3g} (rtol {v['rtol']}).</p>")
    elif "mean_cosine" in v:
        lines.append(f"<p>Lossy passes ({_e(', '.join(v.get('lossy_passes', [])))}): output cosine to the original "
                     f"<b>{v['mean_cosine']:.5f}</b>, max abs error {v['max_abs_err']:.3g} on {v['samples']} "
                     f"input(s).</p>")
        lines.append(_output_table(v.get("outputs", [])))
    if v.get("statement"):
        lines.append(f"<p class=\"bad\">{_e(v['statement'])}</p>")
    if final:
        cls = "good" if final.get("budget_met") else "bad"
        metric = (f", metric {final['metric']:.4f} vs {final['metric_original']:.4f}" if "metric" in final else "")
        lines.append(f"<p class=\"{cls}\">Budget {final['budget']}: error {final['error']}{metric} on "
                     f"{final['samples']} held-out input(s). {_e(final.get('statement', ''))}</p>")
    return "".join(lines)


def _output_table(outputs: list) -> str:
    """Each output by the measure that fits its dtype."""
    if not outputs:
        return ""
    rows = [[o["output"], o["kind"], o.get("cosine"), o.get("rel_l2_err"), o.get("exact_match"), o.get("flip_rate"),
             o.get("top1_agreement"), o["error"]] for o in outputs]
    return _table(["output", "kind", "cosine", "relative L2 error", "exact match", "flip rate", "top-1 agreement",
                   "error"], rows, left=2)


def _layers(r: dict) -> str:
    out = []
    q = r.get("quantization", {})
    if q.get("layers"):
        chosen = q.get("chosen", {})
        out.append(f"<h2>Quantization: {_e(chosen.get('scheme', ''))}</h2>")
        cov = q.get("int8_coverage", {})
        if cov:
            out.append(f"<p>int8 coverage {cov.get('coverage', 0):.1%} of MACs; latency "
                       f"{chosen.get('ratio_to_float', '?')}x the float model when measured.</p>")
        rows = [[l["node"], l.get("module") or "", l["op"], l["precision"], l["sqnr_db"]] for l in q["layers"]]
        out.append(_table(["node", "module", "op", "precision", "SQNR dB"], rows, left=3))
    plan = r.get("plan", {})
    if plan.get("choices"):
        out.append("<h2>Plan: per-layer choices</h2>")
        rows = [[c["layer"], c["kind"], c["level"], c.get("rank", c.get("channels_removed", "")), c["macs_saved"],
                 c["error"]] for c in plan["choices"]]
        out.append(_table(["layer", "technique", "level", "rank / channels removed", "MACs saved", "error alone"],
                          rows, left=2))
    pruning = r.get("pruning", {})
    if pruning.get("groups"):
        out.append("<h2>Pruning: channels kept</h2>")
        rows = [[g.get("name", g.get("group", "")), g.get("channels"), g.get("kept")] for g in pruning["groups"]
                if isinstance(g, dict)]
        out.append(_table(["channel group", "channels", "kept"], rows))
    sp = r.get("sparsity", {})
    if sp.get("layers"):
        out.append(f"<h2>Sparsity ({_e(sp['pattern'])})</h2><p>{_e(sp.get('speed_note', ''))}</p>")
        out.append(_table(["node", "zeros"], [[k, v] for k, v in sp["layers"].items()]))
    return "".join(out)


def _passes(r: dict) -> str:
    rows = [[p["pass"], "yes" if p["modified"] else "no", p["seconds"], json.dumps(p["stats"], default=str)[:160]]
            for p in r.get("passes", [])]
    return "<h2>Passes</h2>" + _table(["pass", "changed", "seconds", "effect"], rows) if rows else ""


def _left_intact(r: dict) -> str:
    notes = r.get("left_intact", [])
    if not notes:
        return ""
    rows = [[n["pass"], n["where"], n["why"]] for n in notes[:300]]
    more = f"<p>... and {len(notes) - 300} more (see the JSON report).</p>" if len(notes) > 300 else ""
    return "<h2>Left intact, with the reason</h2>" + _table(["pass", "where", "why"], rows, left=3) + more


def _rollbacks(r: dict) -> str:
    rows = [[x["pass"], x["rolled_back"]] for x in r.get("passes", []) if x.get("rolled_back")]
    rows += [["planner", json.dumps(x, default=str)[:200]] for x in r.get("plan", {}).get("rollbacks", [])]
    return "<h2>Rollbacks</h2>" + _table(["by", "what"], rows, left=2) if rows else ""


def _runtime(r: dict) -> str:
    opts = r.get("runtime_options")
    if not opts:
        return ""
    rows = [[k, v] for k, v in opts.items()]
    return "<h2>Recommended ONNX Runtime settings</h2>" + _table(["setting", "value"], rows, left=2)


def _plots(r: dict) -> str:
    images = [img for img in (_sensitivity_plot(r), _tradeoff_plot(r), _sqnr_plot(r)) if img]
    if not images:
        return ""
    return "<h2>Plots</h2>" + "".join(f"<img alt=\"{_e(alt)}\" src=\"data:image/png;base64,{data}\">"
                                      for alt, data in images)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight", metadata={"Software": None})
    _figure().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _sensitivity_plot(r: dict) -> Optional[tuple[str, str]]:
    table = r.get("plan", {}).get("sensitivity", [])
    if not table:
        return None
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, xlabel in ((axes[0], "prune", "share of channels removed"), (axes[1], "rank", "rank fraction kept")):
        layers: dict[str, list] = {}
        for row in table:
            if row["kind"] == kind and isinstance(row["error"], (int, float)):
                layers.setdefault(row["layer"], []).append((row["level"], max(row["error"], 1e-7)))
        for layer, points in sorted(layers.items(), key=lambda kv: -max(p[1] for p in kv[1]))[:12]:
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=layer[-28:])
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("output error alone (1 - cosine or metric drop)")
        ax.set_title(f"sensitivity: {kind}")
        if layers:
            ax.legend(fontsize=6)
    return "sensitivity curves", _png(fig)


def _tradeoff_plot(r: dict) -> Optional[tuple[str, str]]:
    points = []
    for c in r.get("quantization", {}).get("candidates", []):
        if isinstance(c.get("ratio_to_float"), (int, float)) and math.isfinite(c["ratio_to_float"]):
            points.append((c["ratio_to_float"], c.get("error", 1 - c.get("mean_cosine", 1.0)), f"int8 {c['scheme']}"))
    lat = r.get("latency")
    v = r.get("verification", {})
    if lat:
        err = v.get("error", 1 - v.get("mean_cosine", 1.0))
        points.append((lat["after_ms"] / lat["before_ms"], err, "compiled model"))
    if not points:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    for x, y, label in points:
        ax.scatter([x], [max(y, 1e-7)], s=40)
        ax.annotate(label, (x, max(y, 1e-7)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axvline(1.0, color="#999", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("latency / original latency (lower is faster)")
    ax.set_ylabel("output error (1 - cosine)")
    ax.set_title("accuracy / latency trade-off by technique")
    return "accuracy latency trade-off", _png(fig)


def _sqnr_plot(r: dict) -> Optional[tuple[str, str]]:
    layers = r.get("quantization", {}).get("layers", [])
    finite = [l for l in layers if isinstance(l.get("sqnr_db"), (int, float)) and l["sqnr_db"] != float("inf")]
    if not finite:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    colors = ["#c44" if l["precision"] == "float" else "#48c" for l in finite]
    ax.bar(range(len(finite)), [l["sqnr_db"] for l in finite], color=colors)
    ax.set_xlabel("quantized layer, in graph order (red: kept float)")
    ax.set_ylabel("SQNR of its output, dB")
    ax.set_title("per-layer quantization error")
    return "per-layer SQNR", _png(fig)
