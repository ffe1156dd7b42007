"""The report as one self-contained HTML page: tables plus matplotlib plots embedded as PNG data
URIs (no files to lose, opens offline). Built from the report dict alone, so `hewn report
OUT.onnx` can re-render it from the JSON beside any model hewn wrote.
"""
from __future__ import annotations

import base64
import html
import io
import math
from typing import Optional


PLOT_DPI = 90


def render(report: dict, title: str) -> str:
    """The page. Every string of the report reaches it escaped, wherever the code puts it (a report
    read back from disk may have been edited: a text where a number belongs is shown as text)."""
    report = untrusted(report)
    sections = [_summary(report), _plots(report), _layers(report), _weights(report), _passes(report), _left_intact(report),
                _rollbacks(report), _runtime(report)]
    body = "\n".join(s for s in sections if s)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>hewn report: {_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>hewn report: {_e(title)}</h1>\n<p class=\"meta\">target <b>{_e(report['target']['name'])}</b> "
            f"({_e(report['target']['description'])}), hewn {_e(report.get('hewn_version', '?'))}, "
            f"compiled in {report.get('compile_seconds', '?')} s</p>\n{body}\n</body>\n</html>\n")


# Long node names wrap anywhere and every table sits in its own horizontal scroller: the page never
# grows wider than the window (checked in headless Chromium by the tests).
CSS = """*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222}.wrap{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.l,th.l{text-align:left;overflow-wrap:anywhere;max-width:38ch}td.n{min-width:14ch}td.t{text-align:left;
max-width:60ch;overflow-wrap:anywhere}.meta{color:#555}.bad{color:#b00}.good{color:#070}.warn{color:#a60}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:3px}p{overflow-wrap:anywhere}"""


class _Text(str):
    """A string from the report: HTML-escaped whenever it is formatted into the page, and shown as
    text when a number's format (`:.3f`) is applied to it."""

    def __format__(self, spec: str) -> str:
        raw = str.__str__(self)
        try:
            shown = format(raw, spec)
        except (ValueError, TypeError):
            shown = raw
        return html.escape(shown)


def untrusted(value):
    """`value` with every string (keys too) a _Text."""
    if isinstance(value, dict):
        return {untrusted(k): untrusted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [untrusted(v) for v in value]
    if isinstance(value, str):
        return _Text(value)
    return value


def _e(value) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list], left: int = 1, text: tuple = (), names: bool = False) -> str:
    """`left`: leading columns of names (left-aligned, wrapping); `text`: columns of prose; `names`:
    the first column holds long names that must not be squeezed (a wide table's layer column)."""
    def cls(i):
        return "t" if i in text else ("l n" if names and i == 0 else "l") if i < left else ""
    head = "".join(f"<th class=\"{cls(i)}\">{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class=\"{cls(i)}\">{_e(_fmt(c))}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<div class=\"wrap\"><table><tr>{head}</tr>{body}</table></div>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "n/a"
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
    w, lat = r.get("weights") or {}, r.get("latency") or {}
    if w:
        rows.append(["perplexity (calibration text)", w["float_perplexity"], w["perplexity"],
                     _ratio(w["perplexity"], w["float_perplexity"])])
    if "prefill" in lat:   # a decoder: a prefill and a decode step after a past
        for kind in ("prefill", "decode"):
            label = f"{kind} ms, {lat.get('tokens', '')} tokens" + (" of past" if kind == "decode" else "")
            rows.append([label + " (this machine)", lat[kind]["before_ms"], lat[kind]["after_ms"], lat[kind]["ratio"]])
    elif lat:
        rows.append(["latency ms (this machine)", lat["before_ms"], lat["after_ms"], _ratio(lat["after_ms"],
                                                                                          lat["before_ms"])])
    out = "<h2>Before and after</h2>" + _outcome(r) + _table(["", "original", "compiled", "ratio"], rows)
    if w:
        out += (f"<p>Perplexity budget: at most +{w['budget']:.1%} over the float model's ({w['limit']:.4g}) on "
                f"{w['calibration_tokens']} calibration tokens in {w['calibration_windows']} window(s).</p>")
        if w.get("over_budget"):
            out += f"<p class=\"bad\">{_e(w['over_budget'])}</p>"
    out += _accuracy(r)
    return out


def _weights(r: dict) -> str:
    w = r.get("weights", {})
    if not w.get("layers"):
        return ""
    rows = [[_layer(x["node"]), x["kind"], f"{x['shape'][0]}x{x['shape'][1]}", x["bits"], x["block"],
             x["accuracy_level"] if x["kind"] == "matmul" else "", x["error"], x["method"],
             (x.get("kernel_ms") or {}).get("decode"), (x.get("kernel_ms") or {}).get("prefill"),
             " / ".join(f"{o['bits']}b{o['block']}" for o in x.get("options", [])), x.get("tied_to") or ""]
            for x in w["layers"]]
    probes = [[p["moves"], p["perplexity"]] for p in w.get("probes", [])]
    headers = ["layer", "kind", "K x N", "bits", "block", "accuracy level", "output error", "rounding", "decode ms",
               "prefill ms", "ladder (measured)", "shares table with"]
    keep = [i for i in range(len(headers)) if i == 0 or any(row[i] not in ("", None) for row in rows)]
    headers, rows = [headers[i] for i in keep], [[row[i] for i in keep] for row in rows]   # no empty columns
    out = ("<h2>Weights: bits per layer</h2>" + _table(headers, rows, names=True)
           + "<h2>Perplexity search</h2>" + _table(["steps down the ladders", "perplexity"], probes, left=0))
    fusions = r.get("fusions") or {}
    if fusions:
        out += "<h2>Decoder fusions</h2>"
        for name, f in fusions.items():
            checks = "; ".join(f"batch {c['batch']}, past {c['past']}, {c['sequence']} new: {c['max_rel_error']:.1e}"
                               for c in f.get("checks", []))
            out += (f"<p>{_e(name)}: {f.get('fused', 0)} rewritten, each into one {_e(f.get('into', ''))}."
                    f"{' Dropped: ' + _e(f['dropped']) if f.get('dropped') else ''}"
                    f"{' Checked against the graph before it (max relative error): ' + _e(checks) if checks else ''}</p>")
            if f.get("left"):
                out += _table([f"{name} left unfused", "why"], [[x["node"], x["reason"]] for x in f["left"]], text=(1,), names=True)
    if w.get("left_float"):
        out += "<h2>Left float, with the reason</h2>" + _table(["node", "why"], [[x["node"], x["reason"]] for x in w["left_float"]], text=(1,), names=True)
    return out


def _layer(node: str) -> str:
    """A weight's layer as its module path (layers.0.self_attn.q_proj), not the exporter's node path
    ("/model/layers.0/self_attn/q_proj/MatMul", which wrapped to a column one character wide)."""
    parts = [p for p in node.strip("/").split("/") if p]
    return ".".join(parts[:-1]) if len(parts) > 1 else node


def _outcome(r: dict) -> str:
    """The one-sentence result, the latency warning, and what would help (driver.outcome)."""
    result, lat = r.get("outcome", {}), r.get("latency", {})
    gained = (result.get("smaller") or result.get("faster")) and result.get("faster") is not False
    out = f"<p class=\"{'good' if gained else 'warn'}\"><b>{_e(result.get('summary', ''))}</b></p>" if result else ""
    if lat.get("warning"):
        out += f"<p class=\"bad\">{_e(lat['warning'])}</p>"
    q = r.get("quality") or {}
    if q.get("warning"):
        out += f"<p class=\"bad\">{_e(q['warning'])}</p>"
        if q.get("drift"):
            out += _table(["tensor (graph order)", "op", "cosine to the original"],
                          [[d["tensor"], d["op"], d["cosine"]] for d in q["drift"]], left=2)
    if result.get("advice"):
        out += "<ul>" + "".join(f"<li>{_e(a)}</li>" for a in result["advice"]) + "</ul>"
    if r.get("nonfinite_values"):
        out += (f"<p class=\"warn\">{len(r['nonfinite_values'])} value(s) were not finite and show as n/a "
                f"(listed under nonfinite_values in the JSON report).</p>")
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
    greedy = v.get("greedy_tokens")
    if greedy:
        lines.append(f"<p>Greedy generation: {greedy['agreement']:.0%} of {greedy['new_tokens']} new tokens equal to the "
                     f"float model's before the first difference ({greedy['prompts']} prompt(s)).</p>")
    if v.get("statement"):
        lines.append(f"<p class=\"bad\">{_e(v['statement'])}</p>")
    if final:
        cls = "good" if final.get("budget_met") else "bad"
        metric = (f", metric {final['metric']:.4f} vs {final['metric_original']:.4f}" if "metric" in final else "")
        lines.append(f"<p class=\"{cls}\">Budget {final['budget']}: error {final['error']}{metric} on "
                     f"{_e(final.get('inputs', str(final['samples']) + ' input(s)'))}. "
                     f"{_e(final.get('statement', ''))}</p>")
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
        ratio = chosen.get("ratio_to_float")
        # one speed-up per page: the end-to-end latency in "Before and after" (the pass's own timing chose the scheme)
        speed = "latency not timed for this target" if not isinstance(ratio, (int, float)) else \
            "end-to-end latency under Before and after"
        if cov:
            out.append(f"<p>int8 coverage {cov.get('coverage', 0):.1%} of MACs; {_e(speed)}. Precision is read "
                       f"from the emitted graph.</p>")
        timed = any("int8_ms" in l for l in q["layers"])   # the measured kernel times each decision used
        rows = [[l["node"], l.get("module") or "", l["op"], l["precision"],
                 "no noise" if l["sqnr_db"] is None else l["sqnr_db"]]
                + ([l.get("float_ms", ""), l.get("int8_ms", ""), l.get("sensitivity", ""), l.get("decision", "")]
                   if timed else []) for l in q["layers"]]
        head = ["node", "module", "op", "precision", "SQNR dB"]
        out.append(_table(head + (["float ms", "int8 ms", "sensitivity", "decision"] if timed else []), rows, left=2,
                          text=(8,) if timed else ()))
        if timed and q.get("layer_times", {}).get("how"):
            out.append(f"<p>Kernel times: {_e(q['layer_times']['how'])}.</p>")
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
    rows = [[p["pass"], "yes" if p["modified"] else "no", p["seconds"], _effect(p.get("stats", {}))]
            for p in r.get("passes", [])]
    return "<h2>Passes</h2>" + _table(["pass", "changed", "seconds", "effect"], rows, text=(3,)) if rows else ""


def _effect(stats: dict, limit: int = 240) -> str:
    """A pass's stats as words: scalars as 'name value', nested parts by their size (the JSON report
    has them whole); cut at a comma, never mid-word."""
    parts = []
    for key, value in (stats or {}).items():
        name = str(key).replace("_", " ")
        if isinstance(value, (list, tuple)):
            parts.append(f"{name}: {len(value)} item(s)")
        elif isinstance(value, dict):
            parts.append(f"{name}: {len(value)} entr{'y' if len(value) == 1 else 'ies'}")
        elif isinstance(value, float):
            parts.append(f"{name} {_fmt(value)}")
        else:
            parts.append(f"{name} {value}")
    text = ""
    for part in parts:
        if len(text) + len(part) + 2 > limit:
            return text + ", ... (see the JSON report)"
        text = f"{text}, {part}" if text else part
    return text



def _left_intact(r: dict) -> str:
    notes = r.get("left_intact", [])
    if not notes:
        return ""
    rows = [[n["pass"], n["where"], n["why"]] for n in notes[:300]]
    more = f"<p>... and {len(notes) - 300} more (see the JSON report).</p>" if len(notes) > 300 else ""
    return "<h2>Left intact, with the reason</h2>" + _table(["pass", "where", "why"], rows, left=2, text=(2,)) + more


def _rollbacks(r: dict) -> str:
    rows = [[x["pass"], x["rolled_back"]] for x in r.get("passes", []) if x.get("rolled_back")]
    rows += [["planner", _effect(x) if isinstance(x, dict) else str(x)] for x in r.get("plan", {}).get("rollbacks", [])]
    return "<h2>Rollbacks</h2>" + _table(["by", "what"], rows, left=1, text=(1,)) if rows else ""


def _runtime(r: dict) -> str:
    opts = r.get("runtime_options")
    if not opts:
        return ""
    rows = [[k, v] for k, v in opts.items()]
    return "<h2>Recommended ONNX Runtime settings</h2>" + _table(["setting", "value"], rows, left=1, text=(1,))


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
    if lat and lat.get("before_ms"):
        err = v.get("error", 1 - (v.get("mean_cosine") or 1.0))
        points.append((lat["after_ms"] / lat["before_ms"], err, "compiled model"))
    points = [(x, y if isinstance(y, (int, float)) and math.isfinite(y) else 1.0, label) for x, y, label in points
              if isinstance(x, (int, float)) and math.isfinite(x)]
    if not points:
        return None
    plt = _figure()
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(7, 4))
    floor = 1e-7
    ys = [max(y, floor) for _, y, _ in points]
    for (x, _, label), y in zip(points, ys):
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axvline(1.0, color="#999", linestyle="--", linewidth=1)
    xs = [x for x, _, _ in points] + [1.0]
    pad = max(0.05, 0.15 * (max(xs) - min(xs)))   # points close together still get a readable axis
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    if max(ys) / min(ys) > 20:
        ax.set_yscale("log")
    else:  # within one decade a log axis shows no tick labels: linear, plain numbers
        span = max(ys) - min(ys)
        ax.set_ylim(max(0.0, min(ys) - span - 0.1 * max(ys)), max(ys) + span + 0.1 * max(ys))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
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
    colors = ["#c44" if not l["precision"].startswith("int8") else "#48c" for l in finite]
    ax.bar(range(len(finite)), [l["sqnr_db"] for l in finite], color=colors)
    ax.set_xlabel("quantized layer, in graph order (red: kept float)")
    ax.set_ylabel("SQNR of its output, dB")
    ax.set_title("per-layer quantization error")
    return "per-layer SQNR", _png(fig)
