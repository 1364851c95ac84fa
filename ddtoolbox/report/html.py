"""The report pages: one self-contained HTML file, pictures embedded as base64 PNG, no script.

Nothing on the page is fetched when it is opened (no network, no external CSS or JavaScript), so
a report can be mailed, archived next to its run or opened on a machine without the toolbox.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import struct
from dataclasses import fields
from pathlib import Path

from .. import __version__
from . import plots
from .data import Evaluation, Picture, RunData, _is_number

#: at most this many pictures in one strip (evenly spaced, the first and last kept)
MAX_PICTURES = 12
#: PNG files larger than this are left out of the page (and the page says so)
MAX_PNG_BYTES = 8 * 2**20

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --accent: #2c5fa8; --bg-soft: #f5f7fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0; background: #fff; font-size: 14px; line-height: 1.45; }
header { background: #1f3a60; color: #fff; padding: 18px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #d5def0; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); background: var(--bg-soft); font-size: 13px; }
nav a { color: var(--accent); margin-right: 16px; text-decoration: none; }
main { padding: 8px 32px 32px; max-width: 1320px; }
section { margin-top: 22px; }
h2 { font-size: 17px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; background: #fff; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 19px; font-weight: 600; }
.card .s { color: var(--muted); font-size: 12px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 10px; }
.plots img { border: 1px solid var(--line); border-radius: 4px; }
.strip { display: flex; gap: 6px; overflow-x: auto; align-items: flex-start; padding-bottom: 6px; }
.strip figure { width: min-content; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 2px; }
img.pixels { image-rendering: pixelated; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.changed td { background: #fff7e0; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 8px 0; }
.missing { background: var(--bg-soft); border-left: 4px solid #9aa3b2; padding: 6px 12px; margin: 8px 0; }
.big { font-size: 26px; font-weight: 600; }
code { background: var(--bg-soft); padding: 1px 4px; border-radius: 3px; font-size: 12.5px; }
.columns { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
footer { color: var(--muted); font-size: 12px; padding: 14px 32px; border-top: 1px solid var(--line); }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(v) -> str:
    return f"{v * 100:.2f}%" if _is_number(v) else "-"


def _num(v, digits: int = 4) -> str:
    if isinstance(v, bool) or not _is_number(v):
        return "-" if v is None else esc(v)
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _value(v) -> str:
    """A settings value, written as a user would type it."""
    if v is None:
        return "<span class='s'>(none)</span>"
    if isinstance(v, (list, tuple)):
        return esc(" ".join(map(str, v))) if v else "<span class='s'>[]</span>"
    if isinstance(v, dict):
        return esc(", ".join(f"{k}={x}" for k, x in v.items()))
    return esc(v)


# ---------------------------------------------------------------------------- pictures


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def img(data: bytes, alt: str, cls: str = "") -> str:
    """An ``<img>`` holding the PNG itself (with its size, so the page does not jump while it loads)."""
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} alt="{esc(alt)}"{dims} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _read_png(path: Path, notes: list) -> bytes | None:
    try:
        if path.stat().st_size > MAX_PNG_BYTES:
            notes.append(f"{path} is larger than {MAX_PNG_BYTES // 2**20} MiB and is left out")
            return None
        data = path.read_bytes()
    except OSError as exc:
        notes.append(f"{path} could not be read ({exc.strerror or exc})")
        return None
    if _png_size(data) is None:
        notes.append(f"{path} is not a PNG file and is left out")
        return None
    return data


def _spread(pictures: list, limit: int = MAX_PICTURES) -> list:
    """At most ``limit`` pictures, evenly spaced, the first and the last always among them."""
    if len(pictures) <= limit:
        return list(pictures)
    step = (len(pictures) - 1) / (limit - 1)
    return [pictures[round(i * step)] for i in range(limit)]


def _without_labels(data: bytes, height: int) -> bytes:
    """The picture without its class-name margin (the first picture of a strip keeps it)."""
    from PIL import Image

    from ..viz import LABEL_WIDTH

    with Image.open(io.BytesIO(data)) as im:
        if im.height != height or im.width <= LABEL_WIDTH + 8:
            return data
        if im.convert("L").crop((LABEL_WIDTH - 4, 0, LABEL_WIDTH, im.height)).getextrema()[0] < 250:
            return data   # not a grid with a blank label margin: keep it whole
        cropped = im.crop((LABEL_WIDTH - 2, 0, im.width, im.height))
        buf = io.BytesIO()
        cropped.save(buf, format="PNG")
        return buf.getvalue()


def strip(pictures: list[Picture], what: str, notes: list) -> str:
    """Pictures of one run over time, side by side; class names only on the first."""
    from ..viz import LABEL_WIDTH

    shown = _spread(pictures)
    parts, first_height = [], None
    for pic in shown:
        data = _read_png(pic.path, notes)
        if data is None:
            continue
        size = _png_size(data)
        caption = ""
        if first_height is None:
            first_height = size[1]
            if size[0] > LABEL_WIDTH + 8:   # centre the caption under the images, not the class names
                caption = f" style='padding-left:{LABEL_WIDTH}px'"
        else:
            data = _without_labels(data, first_height)
        parts.append(f"<figure>{img(data, f'{what}, {pic.caption}', 'pixels')}<figcaption{caption}>"
                     f"{esc(pic.caption)}</figcaption></figure>")
    if not parts:
        return ""
    more = (f"<p class='s'>{len(shown)} of {len(pictures)} pictures shown, evenly spaced; all of them are in "
            f"<code>{esc(pictures[0].path.parent)}</code>.</p>" if len(shown) < len(pictures) else "")
    return f"<div class='strip'>{''.join(parts)}</div>{more}"


# ---------------------------------------------------------------------------- sections


def _page(title: str, subtitle: str, nav: list[tuple[str, str]], body: str, sources: str) -> str:
    links = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<link rel='icon' href='data:,'><title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
            f"<header><h1>{esc(title)}</h1><p>{subtitle}</p></header><nav>{links}</nav>\n<main>{body}</main>\n"
            f"<footer>Written by ddtoolbox {esc(__version__)} (<code>ddtool report</code>) on {now} from {sources}. "
            f"Self-contained: every picture is embedded, nothing is fetched.</footer></body></html>\n")


def _section(ident: str, title: str, content: str) -> str:
    return f"<section id='{esc(ident)}'><h2>{esc(title)}</h2>{content}</section>\n"


def _card(key: str, value: str, sub: str = "") -> str:
    return (f"<div class='card'><div class='k'>{esc(key)}</div><div class='v'>{value}</div>"
            + (f"<div class='s'>{sub}</div>" if sub else "") + "</div>")


def _describe(run: RunData) -> str:
    meta, config = run.meta, run.config
    plugins = [p for p in meta.get("plugins", []) if p != meta.get("matcher")]
    parts = [meta.get("dataset") or config.get("dataset"),
             (meta.get("matcher") or config.get("matcher") or "?") + "".join(f" + {p}" for p in plugins),
             f"IPC {meta.get('ipc', config.get('ipc', '?'))}",
             f"{len(run.history)} iterations"]
    if meta.get("model"):
        opts = meta.get("model_options") or {}
        parts.append(meta["model"] + (f" ({', '.join(f'{k} {v}' for k, v in opts.items())})" if opts else ""))
    return " · ".join(esc(p) for p in parts if p)


def _recovery_text(e: Evaluation) -> str:
    if e.recovery is None:
        return ("unknown: no full-data accuracy is stored for this dataset and network "
                "(<code>ddtool train-full</code> stores one)")
    return f"{e.recovery * 100:.1f}% of the full-data accuracy {_pct(e.full_accuracy)}"


def evaluation_section(run: RunData) -> str:
    e = run.evaluation
    if e is None:
        synthetic = run.path / "synthetic.pt"
        return _section("evaluation", "Final evaluation", (
            "<p class='missing'><b>This run has no evaluation.</b> It ran without <code>--eval-every</code> and "
            "there is no eval.json beside it. To add one: <code>ddtool eval --synthetic "
            f"{esc(synthetic)} --json {esc(run.path / 'eval.json')}</code>, then <code>ddtool report "
            f"{esc(run.path)}</code> again.</p>"))
    runs = ", ".join(_pct(v) for v in e.runs) or "-"
    body = (f"<p><span class='big'>{e.mean * 100:.2f} ± {e.std * 100:.2f}%</span> test accuracy, mean ± std "
            f"over {len(e.runs)} fresh network{'s' if len(e.runs) != 1 else ''}</p>"
            f"<table><tr><th>from</th><td>{esc(e.source)}</td></tr>"
            f"<tr><th>each network</th><td>{runs}</td></tr>"
            f"<tr><th>recovery ratio</th><td>{_recovery_text(e)}</td></tr></table>")
    if e.models:
        rows = "".join(f"<tr><td>{esc(m.get('model'))}</td><td class='num'>{_pct(m['mean'])} ± "
                       f"{_pct(m.get('std'))}</td><td>{', '.join(_pct(v) for v in m.get('runs', []))}</td>"
                       f"<td class='num'>{_pct(m.get('recovery'))}</td></tr>" for m in e.models)
        body += ("<h3>Every evaluated network</h3><table><tr><th>model</th><th>accuracy</th><th>each network</th>"
                 f"<th>recovery</th></tr>{rows}</table>")
    if run.in_run_evals:
        rows = "".join(
            f"<tr><td class='num'>{r['iteration'] + 1}</td><td class='num'>{_pct(r['eval_mean'])} ± "
            f"{_pct(r.get('eval_std'))}</td><td>{', '.join(_pct(v) for v in r.get('eval_runs') or [] if _is_number(v))}"
            f"</td><td class='num'>{_num(r.get('eval_seconds'), 3)}</td></tr>" for r in run.in_run_evals)
        body += ("<h3>Evaluations during the run (--eval-every)</h3><table><tr><th>after iteration</th>"
                 f"<th>accuracy</th><th>each network</th><th>seconds</th></tr>{rows}</table>")
    return _section("evaluation", "Final evaluation", body)


def _plots_html(runs: list[RunData], plots_ok: bool) -> str:
    if not plots_ok:
        return f"<p class='note'>No plots: {esc(plots.MISSING)}.</p>"
    panels = [(title, fn(runs)) for title, fn in plots.PANELS]
    keys = []
    for run in runs:
        keys += [k for k in run.other_keys() if k not in keys]
    panels += [(k, plots.other(runs, k)) for k in keys[:12]]
    shown = [f"<figure>{img(png, title)}</figure>" for title, png in panels if png is not None]
    if not shown:
        return "<p class='missing'>Nothing to plot: the history is empty (0 iterations).</p>"
    absent = [title for title, png in panels[:len(plots.PANELS)] if png is None]
    note = (f"<p class='s'>Not logged by this run{'s' if len(runs) > 1 else ''}: {esc(', '.join(absent))}.</p>"
            if absent else "")
    return f"<div class='plots'>{''.join(shown)}</div>{note}"


def _provenance(run: RunData) -> str:
    meta, env, config = run.meta, run.environment, run.config
    total, without_eval = run.seconds_per_iteration()
    rows = [
        ("ddtoolbox", meta.get("ddtoolbox_version") or env.get("ddtoolbox")),
        ("python, torch, kornia, CUDA", ", ".join(str(env.get(k) or "-") for k in ("python", "torch", "kornia", "cuda"))
         if env else "not recorded (made before ddtoolbox recorded its environment)"),
        ("device", env.get("device") or f"{config.get('device', '?')} (as asked; the device used was not recorded)"),
        ("host, CPU", f"{env.get('host', '-')}, {env.get('cpu', '-')}" if env else "-"),
        ("finished", env.get("date", "-")),
        ("seed", meta.get("seed", config.get("seed"))),
        ("dataset", meta.get("dataset", config.get("dataset"))),
        ("matcher, plugins", f"{meta.get('matcher', config.get('matcher'))}; "
                             f"{', '.join(meta.get('plugins', [])) or '-'}"),
        ("network", f"{meta.get('model', '-')} " + ", ".join(f"{k}={v}" for k, v in (meta.get("model_options") or {}).items())),
        ("buffer", meta.get("buffer") or config.get("buffer")),
        ("synthetic set", f"{meta.get('ipc', '?')} per class x {meta.get('num_classes', '?')} classes, "
                          f"{'learned soft labels' if meta.get('soft_labels') else 'hard labels'}"),
        ("student unroll", meta.get("unroll")),
        ("iterations", len(run.history)),
        ("total time", f"{meta['seconds']:.1f} s" if _is_number(meta.get("seconds")) else None),
        ("time per iteration", (f"{total:.3f} s" + (f" ({without_eval:.3f} s without the evaluations)"
                                                    if without_eval is not None and without_eval != total else ""))
         if total is not None else None),
    ]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{_value(v) if not isinstance(v, str) else esc(v)}</td></tr>"
                   for k, v in rows if v not in (None, ""))
    return f"<table>{body}</table>"


def _defaults() -> dict:
    from ..config import DistillConfig

    return {f.name: getattr(DistillConfig(out="-"), f.name) for f in fields(DistillConfig)}


def _settings_table(values: dict, defaults: dict | None) -> str:
    """Options and their values; with ``defaults``, a default column and the changed rows highlighted."""
    rows = []
    for k, v in values.items():
        flag = f"<td><code>--{esc(k.replace('_', '-'))}</code></td><td>{_value(v)}</td>"
        if defaults is None:
            rows.append(f"<tr>{flag}</tr>")
        else:
            changed = k in defaults and v != defaults[k] and k != "out"
            default = _value(defaults[k]) if k in defaults else ""
            rows.append(f"<tr{' class=changed' if changed else ''}>{flag}<td>{default}</td></tr>")
    head = "<tr><th>option</th><th>value</th>" + ("<th>default</th>" if defaults is not None else "") + "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def settings_section(run: RunData) -> str:
    defaults = _defaults()
    config = run.config
    changed = {k: v for k, v in config.items() if k == "out" or (k in defaults and v != defaults[k])}
    columns = [f"<div><h3>Provenance</h3>{_provenance(run)}</div>",
               f"<div><h3>ddtool distill settings that differ from the default</h3>{_settings_table(changed, defaults)}"
               f"<details><summary>All {len(config)} settings</summary>{_settings_table(config, defaults)}"
               f"<p class='s'>Highlighted: not the default.</p></details></div>"]
    plugin_tables = "".join(f"<h3>Options of plugin {esc(plugin)}</h3>{_settings_table(values, None)}"
                            for plugin, values in run.options.items() if values)
    if plugin_tables:
        columns.append(f"<div>{plugin_tables}</div>")
    return _section("settings", "Settings and provenance", f"<div class='columns'>{''.join(columns)}</div>")


def _summary(run: RunData) -> str:
    e = run.evaluation
    total, without_eval = run.seconds_per_iteration()
    skipped = [r for r in run.history if r.get("skipped") is True]
    cards = [
        _card("final accuracy", f"{e.mean * 100:.2f}%" if e else "none",
              f"± {e.std * 100:.2f} over {len(e.runs)} networks" if e else "not evaluated"),
        _card("recovery ratio", f"{e.recovery * 100:.1f}%" if e and e.recovery is not None else "-",
              f"of full data {_pct(e.full_accuracy)}" if e and e.recovery is not None else "no full-data accuracy"),
        _card("final loss", _num(run.last("loss")), "matching loss, last iteration"),
        _card("learned lr", _num(run.last("syn_lr")), f"started at {_num(run.history[0].get('syn_lr'))}"
              if run.history else ""),
        _card("skipped updates", f"{len(skipped)}", f"of {len(run.history)} iterations"),
        _card("time per iteration", f"{(without_eval if without_eval is not None else total):.3f} s"
              if total is not None else "-", "without evaluations" if without_eval is not None else ""),
    ]
    if run.last("dae_area") is not None:
        first = next((r["dae_area"] for r in run.history if _is_number(r.get("dae_area"))), None)
        final = run.last("dae_area_final")
        cards.append(_card("discriminative area", _num(final if final is not None else run.last("dae_area"), 3),
                           f"first {_num(first, 3)}, DAE"))
    return _section("summary", "Summary", f"<div class='cards'>{''.join(cards)}</div>")


def render_run(run: RunData, plots_ok: bool) -> str:
    """The page of one run."""
    notes = list(run.notes)
    images = strip(run.snapshots, "synthetic images", notes)
    if not images:
        images = "<p class='missing'>No pictures of the synthetic images in this run folder (no synthetic.png).</p>"
    elif len(run.snapshots) == 1:
        images += ("<p class='s'>Only the final images: this run kept no snapshots (<code>--snapshot-every 0</code>, "
                   "or a run made before ddtoolbox wrote them).</p>")
    images = "<p class='s'>One row per class; each column the images after that many iterations.</p>" + images
    body = _summary(run) + evaluation_section(run)
    body += _section("curves", "Curves", _plots_html([run], plots_ok))
    body += _section("images", "Synthetic images", images)
    nav = [("summary", "Summary"), ("evaluation", "Evaluation"), ("curves", "Curves"), ("images", "Images")]
    if run.dae_maps:
        maps = strip(run.dae_maps, "DAE maps", notes)
        body += _section("dae", "DAE activation maps", (
            "<p class='s'>Grad-CAM maps of the activation model, overlaid in red on the images they were computed "
            "on; the brighter the red, the more discriminative the pixel.</p>" + maps))
        nav.append(("dae", "DAE maps"))
    body += settings_section(run)
    nav.append(("settings", "Settings"))
    if notes:
        body = "".join(f"<p class='note'>{esc(n)}</p>" for n in notes) + body
    sources = f"<code>{esc(run.path)}</code>"
    return _page(f"Run report: {run.name}", _describe(run), nav, body, sources)


# ---------------------------------------------------------------------------- several runs


def _results_table(runs: list[RunData], links: dict) -> str:
    means = [r.evaluation.mean for r in runs if r.evaluation is not None]
    best = max(means) if means else None
    rows = []
    for run in runs:
        e, meta = run.evaluation, run.meta
        plugins = [p for p in meta.get("plugins", []) if p != meta.get("matcher")]
        acc = "not evaluated"
        if e is not None:
            acc = f"{e.mean * 100:.2f} ± {e.std * 100:.2f}"
            if e.mean == best and len(means) > 1:
                acc = f"<b>{acc}</b>"
        first_area = next((r["dae_area"] for r in run.history if _is_number(r.get("dae_area"))), None)
        area = (f"{first_area:.3f} → {run.last('dae_area_final'):.3f}" if first_area is not None
                and run.last("dae_area_final") is not None else "-")
        total, without_eval = run.seconds_per_iteration()
        spi = without_eval if without_eval is not None else total
        link = f"<a href='{esc(links[run.path])}'>report</a>" if run.path in links else "-"
        rows.append(
            f"<tr><td><b>{esc(run.name)}</b></td><td>{esc(meta.get('matcher', run.config.get('matcher', '-')))}</td>"
            f"<td>{esc(', '.join(plugins) or '-')}</td><td class='num'>{len(run.history)}</td>"
            f"<td class='num'>{acc}</td><td>{', '.join(_pct(v) for v in e.runs) if e else '-'}</td>"
            f"<td class='num'>{f'{e.recovery * 100:.1f}%' if e and e.recovery is not None else '-'}</td>"
            f"<td class='num'>{_num(run.last('loss'))}</td><td class='num'>{area}</td>"
            f"<td class='num'>{f'{spi:.3f}' if spi is not None else '-'}</td><td>{link}</td></tr>")
    return ("<table><tr><th>run</th><th>matcher</th><th>plugins</th><th>iterations</th><th>accuracy (%)</th>"
            "<th>each network</th><th>recovery</th><th>final loss</th><th>DAE area (first → final)</th>"
            "<th>s / iteration</th><th>own page</th></tr>" + "".join(rows) + "</table>"
            "<p class='s'>Accuracy: the final evaluation of each run (its eval.json, else its last in-run "
            "evaluation), mean ± std over fresh networks; the best in bold. s / iteration without evaluations "
            "where the run recorded their time; it depends on the machine's load.</p>")


def _flat_settings(run: RunData) -> dict:
    values = {f"--{k.replace('_', '-')}": v for k, v in run.config.items() if k != "out"}
    for plugin, opts in run.options.items():
        for k, v in (opts or {}).items():
            values[f"--{k.replace('_', '-')}"] = v
    values["plugins"] = [p for p in run.meta.get("plugins", []) if p != run.meta.get("matcher")]
    return values


def _settings_comparison(runs: list[RunData]) -> str:
    flat = [_flat_settings(r) for r in runs]
    keys = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    differ = [k for k in keys if len({repr(f.get(k, "(absent)")) for f in flat}) > 1]
    same = [k for k in keys if k not in differ]
    head = "<tr><th>option</th>" + "".join(f"<th>{esc(r.name)}</th>" for r in runs) + "</tr>"

    def rows(ks):
        return "".join(f"<tr><td><code>{esc(k)}</code></td>" + "".join(
            f"<td>{_value(f[k]) if k in f else '<span class=s>(absent)</span>'}</td>" for f in flat) + "</tr>"
            for k in ks)

    body = (f"<h3>What differs</h3><table>{head}{rows(differ)}</table>" if differ
            else "<p>Every run has the same settings.</p>")
    if same:
        body += (f"<details><summary>The {len(same)} settings every run shares</summary>"
                 f"<table>{head}{rows(same)}</table></details>")
    envs = {r.name: r.environment for r in runs}
    prov = "".join(f"<tr><td>{esc(n)}</td><td>{esc(e.get('device', '-'))}</td><td>{esc(e.get('host', '-'))}</td>"
                   f"<td>{esc(e.get('torch', '-'))}</td><td>{esc(e.get('date', '-'))}</td></tr>" for n, e in envs.items())
    body += ("<h3>Provenance</h3><table><tr><th>run</th><th>device</th><th>host</th><th>torch</th><th>finished</th>"
             f"</tr>{prov}</table>")
    return body


def render_comparison(runs: list[RunData], labels: list[str], plots_ok: bool, links: dict) -> str:
    """The page comparing several runs (an ablation's rows): overlaid curves, a table of final numbers."""
    named = [_Named(run, label) for run, label in zip(runs, labels)]
    notes = [n for r in runs for n in r.notes]
    body = _section("results", "Final numbers", _results_table(named, links))
    body += _section("curves", "Curves", _plots_html(named, plots_ok))
    finals = strip([Picture(r.snapshots[-1].path, r.name) for r in named if r.snapshots], "final images", notes)
    maps = strip([Picture(r.dae_maps[-1].path, r.name) for r in named if r.dae_maps], "DAE maps", notes)
    images = ("<h3>Final synthetic images, one column per run</h3>" + finals) if finals else \
        "<p class='missing'>No pictures.</p>"
    if maps:
        images += "<h3>DAE activation maps, the last of each run (its final images where DAE mapped them)</h3>" + maps
    body += _section("images", "Synthetic images", images)
    body += _section("settings", "Settings", _settings_comparison(named))
    if notes:
        body = "".join(f"<p class='note'>{esc(n)}</p>" for n in notes) + body
    nav = [("results", "Final numbers"), ("curves", "Curves"), ("images", "Images"), ("settings", "Settings")]
    sources = ", ".join(f"<code>{esc(r.path)}</code>" for r in runs)
    datasets = sorted({str(r.meta.get("dataset") or r.config.get("dataset")) for r in runs})
    subtitle = esc(f"{len(runs)} runs · {', '.join(datasets)} · " + ", ".join(labels))
    return _page(f"Comparison of {len(runs)} runs", subtitle, nav, body, sources)


class _Named:
    """A run seen under a label (its folder's path below the runs' common folder)."""

    def __init__(self, run: RunData, label: str):
        self._run, self.name = run, label

    def __getattr__(self, item):
        return getattr(self._run, item)
