"""The evaluation report: `report.md` and a self-contained `report.html` from a run's result rows.

`python -m evaluation` calls `write_run_info(run_dir, info)` when a run starts and `write_report(run_dir, rows,
info)` when it ends; `--compare runA runB` calls `compare(run_a, run_b, out_dir)`, which only reads the two
folders. `info` is a plain dict:

    config            dict, the run's configuration (shown as JSON)
    environment       dict, hardware, device, library versions
    models            dict, model name -> one-line description ("tiny preset, SYNTHETIC WEIGHTS ...")
    synthetic         bool, True puts SYNTHETIC_WARNING at the top of both files
    asr_model         name of the ASR model behind WER/CER
    similarity_model  name of the independent speaker-verification model behind `similarity`
    similarity_note   optional: what to keep in mind about that model (shown under the first lines)
    reference_audio   optional: the reference clip(s); reference_origin: where they came from

Both files are rendered from one list of blocks (headings, tables, figures, ...), so they say the same thing.
The markdown links its plots (`plots/*.png`) and WAVs relatively; the HTML embeds the plots as base64 data
URIs and inlines its CSS (it can be mailed on its own); only its audio links stay relative. All text from
rows and `info` is escaped in both formats.

Matplotlib is driven through `Figure` and the Agg canvas, as in `training/metrics.py`: no pyplot, no window.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, Union
from urllib.parse import quote

import numpy as np

from evaluation import stats
from evaluation.jsonfiles import json_object, read_json_object, write_json
from evaluation.results import RESULTS_FILE, SampleResult, read_results
from inference.asr import word_error_rate
from inference.settings import flatten

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
COMPARE_MD = "compare.md"
COMPARE_HTML = "compare.html"
RUN_INFO_FILE = "run_info.json"
RunInfo = json_object(  # the fields of run_info.json that resume and the reports read
    "RunInfo", config=json_object("Config", stream=dict), models=dict[str, str], environment=dict,
    resume_key=json_object("ResumeKey", resolved_models=dict[str, str]), stream_used=dict[str, dict], synthetic=bool,
    sides=list[str],
    reference_audio=list[str], similarity_ceiling=dict[str, float] | None, asr_floor=dict[str, float] | None,
    sentences=int)
PLOTS_DIR = "plots"
SYNTHETIC_WARNING = ("WARNING: SYNTHETIC WEIGHTS. At least one model here has random weights and produces no "
                     "intelligible speech; these numbers test the harness, not a voice.")
WORST_N = 5
MAX_SHOWN_WORDS = 40  # of a transcript in the per-sentence table
ALPHA = stats.ALPHA  # p below this is called a difference in the verdict column
SELF_SIMILARITY_NOTE = "(model's own voice encoder — biased, conditioned on)"
FIGURE_DPI = 100


@dataclass(frozen=True)
class Metric:
    """How one SampleResult field is shown. `scale` multiplies every number (similarity is shown x100)."""

    name: str
    label: str
    higher_is_better: bool | None = False  # None: no better direction (audio length)
    scale: float = 1.0
    digits: int = 3


PRIMARY = (  # the summary table's columns, labels exactly as users look for them
    Metric("wer", "WER"),
    Metric("cer", "CER"),
    Metric("similarity", "speaker similarity", higher_is_better=True, scale=100.0, digits=1),
    Metric("quality", "quality (DNSMOS OVRL)", higher_is_better=True, digits=2),
    Metric("time_to_first_audio", "time to first audio (s)"),
    Metric("rtf", "real-time factor"),
    Metric("underruns", "underruns", digits=2),
)
SECONDARY = (
    Metric("similarity_self", f"speaker similarity, self {SELF_SIMILARITY_NOTE}", higher_is_better=True,
           scale=100.0, digits=1),
    Metric("quality_sig", "quality, speech signal (DNSMOS SIG)", higher_is_better=True, digits=2),
    Metric("quality_bak", "quality, background (DNSMOS BAK)", higher_is_better=True, digits=2),
    Metric("quality_p808", "quality (DNSMOS P.808)", higher_is_better=True, digits=2),
    Metric("underrun_seconds", "underrun time (s)"),
    Metric("total_seconds", "total stream time (s)"),
    Metric("audio_seconds", "audio length (s)", higher_is_better=None),
    Metric("chunk_compute", "chunk compute (s, mean per sample)"),
)
METRICS = PRIMARY + SECONDARY
_BY_NAME = {m.name: m for m in METRICS}


# ----------------------------------------------------------------------------------------------------------
# run_info.json
# ----------------------------------------------------------------------------------------------------------
def write_run_info(run_dir: Path, info: dict) -> Path:
    """Save `info` beside the results, so `compare` can describe a run without the process that made it."""
    return write_json(Path(run_dir) / RUN_INFO_FILE, info)  # atomic: a resumed run reads it back


def read_run_info(run_dir: Path) -> dict:
    """The `info` a run saved; {} when it saved none (an older run). BrokenFileError when it cannot be used."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return {}
    return read_json_object(path, RunInfo, "it was not written by `python -m evaluation`, or was edited: "
                                                  "restore it, or give another --output-dir to start a new run")


# ----------------------------------------------------------------------------------------------------------
# The document: blocks both renderers understand
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    text: str
    target: Path  # the file; rendered relative to the report's folder
    audio: bool = False
    embed: bool = False  # an audio player whose sound is inside report.html (it plays when the file is mailed)


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Marked:
    """A word of a transcript that differs from the reference: "sub" (said instead), "ins" (extra), "del"
    (missing: the reference's word, struck through)."""

    text: str
    kind: str


@dataclass(frozen=True)
class Words:
    parts: tuple[Union[str, Marked], ...]


Inline = Union[str, Link, Strong, Words]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    parts: tuple[Inline, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Alert:
    text: str


Block = Union[Heading, Para, Table, Image, Code, Alert]


def _para(*parts: Inline) -> Para:
    return Para(tuple(parts))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Inline]]) -> Table:
    return Table(tuple(headers), tuple(tuple(r) for r in rows))


# ----------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------
def _md_text(text: str) -> str:
    """Text that markdown shows literally: one line, markup characters backslash-escaped where they could act
    ("mean [CI]" and "p < 0.05" stay readable; "<script>" and "](" do not)."""
    text = re.sub(r"([\\`*|])", r"\\\1", " ".join(str(text).split()))
    text = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", text)  # only "<" that could open an HTML tag or autolink
    text = re.sub(r"\](?=[(\[])", r"\\]", text)
    return "\\" + text if re.match(r"[>#]|[-+] ", text) else text  # would start a quote, heading or list


def _href(target: Path, out_dir: Path) -> str:
    return quote(Path(os.path.relpath(target, out_dir)).as_posix())


def _md_inline(part: Inline, out_dir: Path) -> str:
    if isinstance(part, Link):
        return f"[{_md_text(part.text)}]({_href(part.target, out_dir)})"
    if isinstance(part, Strong):
        return f"**{_md_text(part.text)}**"
    if isinstance(part, Words):
        marks = {"sub": "**{}**", "ins": "**+{}**", "del": "~~{}~~"}
        return " ".join(_md_text(w) if isinstance(w, str) else marks[w.kind].format(_md_text(w.text))
                        for w in part.parts)
    return _md_text(part)


def _to_markdown(blocks: Sequence[Block], out_dir: Path) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _md_text(block.text))
        elif isinstance(block, Para):
            out.append("".join(_md_inline(p, out_dir) for p in block.parts))
        elif isinstance(block, Alert):
            out.append(f"> **{_md_text(block.text)}**")
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_text(h) for h in block.headers) + " |",
                     "|" + "---|" * len(block.headers)]
            lines += ["| " + " | ".join(_md_inline(c, out_dir) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{_md_text(block.caption)}]({_href(block.path, out_dir)})")
        elif isinstance(block, Code):
            longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
            fence = "`" * max(3, longest + 1)
            out.append(f"{fence}json\n{block.text}\n{fence}")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.warning { background: #fdd; border: 2px solid #c00; padding: 0.8em 1em; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
audio { height: 1.8em; width: 11em; vertical-align: middle; }
mark.sub { background: #ffe08a; } ins.ins { background: #c8f0c8; text-decoration: none; } del.del { color: #b00; }
"""


def _html_inline(part: Inline, out_dir: Path) -> str:
    if isinstance(part, Link):
        href = html.escape(_href(part.target, out_dir))
        uri = _audio_uri(Path(part.target)) if part.embed else None
        if uri:
            return f'<audio controls preload="none" src="{uri}"></audio>'
        link = f'<a href="{href}">{html.escape(part.text)}</a>'
        return link + (f' <audio controls preload="none" src="{href}"></audio>' if part.audio else "")
    if isinstance(part, Strong):
        return f"<strong>{html.escape(part.text)}</strong>"
    if isinstance(part, Words):
        tags = {"sub": "mark", "ins": "ins", "del": "del"}
        return " ".join(html.escape(w) if isinstance(w, str) else
                        f'<{tags[w.kind]} class="{w.kind}">{html.escape(w.text)}</{tags[w.kind]}>' for w in part.parts)
    return html.escape(str(part))


def _audio_uri(path: Path) -> str | None:
    """The clip as an MP3 data URI (about 6 kB per second, a tenth of the WAV), so report.html plays it alone;
    None when the file is missing or unreadable (the page then links it, and still renders)."""
    import soundfile as sf

    from inference.server.audio_formats import StreamEncoder

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError):  # LibsndfileError is a RuntimeError
        return None
    encoder = StreamEncoder("mp3", rate)
    data = encoder.encode(audio.mean(axis=1)) + encoder.finish()
    return "data:audio/mpeg;base64," + base64.b64encode(data).decode("ascii")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _to_html(blocks: Sequence[Block], out_dir: Path, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append("<p>" + "".join(_html_inline(p, out_dir) for p in block.parts) + "</p>")
        elif isinstance(block, Alert):
            out.append(f'<div class="warning">{html.escape(block.text)}</div>')
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(c, out_dir)}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            caption = html.escape(block.caption)
            out.append(f'<figure><img src="{_data_uri(block.path)}" alt="{caption}">'
                       f"<figcaption>{caption}</figcaption></figure>")
        elif isinstance(block, Code):
            out.append(f"<pre>{html.escape(block.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------
def _num(value: float, metric: Metric) -> str:
    return "–" if not math.isfinite(value) else f"{value * metric.scale:.{metric.digits}f}"


def _mean_ci(s: stats.Summary, metric: Metric) -> str:
    if s.n == 0:
        return "–"
    return f"{_num(s.mean, metric)} [{_num(s.ci_low, metric)}, {_num(s.ci_high, metric)}]"


def _signed(value: float, metric: Metric) -> str:
    text = _num(value, metric)
    return text if text == "–" or float(text) == 0 else f"{value * metric.scale:+.{metric.digits}f}"


def _p(p: float, exact: bool) -> str:
    if not math.isfinite(p):
        return "–"
    text = "<0.001" if p < 0.001 else f"{p:.3f}"
    return text + (" (exact)" if exact else "")


def _verdict(d: stats.Delta, metric: Metric, a: str, b: str) -> str:
    """better / worse / no detectable difference (with the smallest difference the run could have found)."""
    if not math.isfinite(d.p_value):
        return "–"
    if d.paired and d.n_sentences < stats.min_sentences():
        return f"too few sentences to decide ({d.n_sentences}; a paired test needs {stats.min_sentences()})"
    if d.paired and d.mean == 0 and d.ci_low == d.ci_high:
        return "no difference (the same on every sentence)"
    if d.p_value < ALPHA:
        if metric.higher_is_better is None:
            return f"{b} {'higher' if d.mean > 0 else 'lower'} (neither is better)"
        improved = (d.mean > 0) == metric.higher_is_better
        return f"{b} {'better' if improved else 'worse'}"
    if d.paired and math.isfinite(d.detectable):
        return (f"no detectable difference (one of ±{_num(d.detectable, metric)} would be found "
                f"{stats.POWER:.0%} of the time)")
    return "no detectable difference"


def word_diff(reference: str | None, hypothesis: str | None) -> Words:
    """The hypothesis word by word against the reference (both normalised as scored): substituted and inserted
    words marked, missing reference words struck through."""
    import jiwer

    ref, hyp = (reference or "").split(), (hypothesis or "").split()
    if not ref:
        return Words(tuple(Marked(w, "ins") for w in hyp))
    if not hyp:
        return Words(tuple(Marked(w, "del") for w in ref))
    parts: list[Union[str, Marked]] = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        said, meant = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx], ref[chunk.ref_start_idx:chunk.ref_end_idx]
        if chunk.type == "equal":
            parts += said
        elif chunk.type == "delete":
            parts += [Marked(w, "del") for w in meant]
        else:
            parts += [Marked(w, "sub" if chunk.type == "substitute" else "ins") for w in said]
    if len(parts) > MAX_SHOWN_WORDS:  # Whisper can loop on noise ("i am sorry i am sorry ..."): keep rows readable
        parts = parts[:MAX_SHOWN_WORDS] + [f"… (+{len(parts) - MAX_SHOWN_WORDS} words)"]
    return Words(tuple(parts))


def corpus_wer(rows: Sequence[SampleResult], model: str) -> float:
    """All words of all successful samples scored together (errors / reference words), beside the mean of
    per-sentence WER, which weighs a 4-word sentence as much as a 20-word one."""
    pairs = [(r.reference_norm, r.hypothesis_norm or "") for r in rows
             if r.model == model and r.ok and r.reference_norm]
    return word_error_rate([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else math.nan


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=FIGURE_DPI)
    return path


def _values(rows: Sequence[SampleResult], model: str, metric: str) -> np.ndarray:
    return stats.finite(stats.metric_value(r, metric) for r in rows if r.model == model and r.ok)


def plot_latency(rows: Sequence[SampleResult], models: Sequence[str], path: Path) -> Path | None:
    """Latency distributions per model: time to first audio and real-time factor as cumulative distributions
    (the whole tail, not just the mean), underruns as a histogram."""
    series = {m: {k: np.sort(_values(rows, m, k)) for k in ("time_to_first_audio", "rtf", "underruns")}
              for m in models}
    if not any(len(v["time_to_first_audio"]) for v in series.values()):
        return None
    figure = _figure(13, 4)
    axes = figure.subplots(1, 3)
    for ax, key, label in zip(axes[:2], ("time_to_first_audio", "rtf"), ("time to first audio (s)",
                                                                         "real-time factor (< 1 keeps up)")):
        for i, (model, values) in enumerate(series.items()):
            x = values[key]
            if len(x):
                y = np.arange(1, len(x) + 1) / len(x)
                ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0], y]), where="post", color=f"C{i}",
                        label=f"{model} (n={len(x)})")
        ax.set(xlabel=label, ylabel="fraction of samples", ylim=(0, 1.02), xlim=(0, None), title=f"{label} (CDF)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    ax = axes[2]
    top = int(max((v["underruns"].max() for v in series.values() if len(v["underruns"])), default=0))
    bins = np.arange(top + 2) - 0.5
    width = 0.8 / len(models)
    for i, (model, values) in enumerate(series.items()):
        counts, _ = np.histogram(values["underruns"], bins=bins)
        ax.bar(np.arange(top + 1) + (i - (len(models) - 1) / 2) * width, counts, width, color=f"C{i}", label=model)
    ax.set(xlabel="underruns per sample", ylabel="samples", title="Underruns of a real-time player")
    ax.set_xticks(range(top + 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(figure, path)


# Full scales for the mean plot, so a small difference looks small: (metric, y-limits or None for 0..top).
_MEAN_PANELS = (("wer", (0.0, 1.0)), ("similarity", (0.0, 100.0)), ("quality", (1.0, 5.0)),
                ("time_to_first_audio", None))


def plot_means(summaries: dict[str, stats.ModelSummary], path: Path) -> Path | None:
    """Each model's mean with its 95% interval, on the metric's full scale (WER 0-1, similarity 0-100, MOS
    1-5): the axes do not turn a 0.7-point difference into a cliff."""
    if not any(s[m].n for s in summaries.values() for m, _ in _MEAN_PANELS):
        return None
    figure = _figure(13, 3.8)
    axes = figure.subplots(1, len(_MEAN_PANELS))
    models = list(summaries)
    for ax, (name, limits) in zip(axes, _MEAN_PANELS):
        metric = _BY_NAME[name]
        means = np.array([summaries[m][name].mean for m in models]) * metric.scale
        low = np.array([summaries[m][name].ci_low for m in models]) * metric.scale
        high = np.array([summaries[m][name].ci_high for m in models]) * metric.scale
        ok = np.isfinite(means)
        x = np.arange(len(models))
        ax.bar(x[ok], means[ok], 0.6, color=[f"C{i}" for i in x[ok]], alpha=0.8)
        ax.errorbar(x[ok], means[ok], yerr=[means[ok] - low[ok], high[ok] - means[ok]], fmt="none", ecolor="black",
                    capsize=6)
        top = max(1e-9, float(np.nanmax(high)) * 1.15) if ok.any() else 1.0
        ax.set_ylim(*(limits if limits and (not ok.any() or np.nanmax(high) <= limits[1]) else (0.0, top)))
        better = {True: "higher is better", False: "lower is better", None: ""}[metric.higher_is_better]
        ax.set_title(f"{metric.label}\n{better}", fontsize="medium")
        ax.set_xticks(x, models)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("Means with 95% BCa intervals over sentences")
    return _save(figure, path)


def plot_wer_per_sentence(rows: Sequence[SampleResult], models: Sequence[str], path: Path) -> Path | None:
    """Mean WER per sentence, one bar per model: shows whether a change helps everywhere or on a few lines."""
    sentences = sorted({r.sentence_id for r in rows if r.ok and stats.metric_value(r, "wer") is not None})
    if not sentences:
        return None
    figure = _figure(min(24.0, max(7.0, 0.25 * len(sentences) * len(models) + 2)), 4.5)
    ax = figure.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(sentences))
    for i, model in enumerate(models):
        means = []
        for sentence in sentences:
            v = stats.finite(stats.metric_value(r, "wer") for r in rows
                             if r.model == model and r.ok and r.sentence_id == sentence)
            means.append(v.mean() if len(v) else np.nan)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, color=f"C{i}", label=model)
    ax.set_xticks(x, sentences, rotation=90, fontsize="small")
    ax.set(ylabel="mean WER", title="WER per sentence (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(figure, path)


def plot_similarity(rows: Sequence[SampleResult], models: Sequence[str], path: Path,
                    similarity_model: str) -> Path | None:
    """Speaker similarity per model as a box plot with every sample drawn on top."""
    data = [_values(rows, m, "similarity") * 100 for m in models]
    if not any(len(v) for v in data):
        return None
    figure = _figure(max(5.0, 1.6 * len(models) + 2), 4.5)
    ax = figure.subplots()
    keep = [i for i, v in enumerate(data) if len(v)]
    ax.boxplot([data[i] for i in keep], positions=keep, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)
    for i in keep:
        ax.scatter(i + jitter.uniform(-0.15, 0.15, len(data[i])), data[i], s=10, alpha=0.6, color=f"C{i}")
    ax.set_xticks(range(len(models)), models)
    ax.set(ylabel="cosine similarity x100", title=f"Speaker similarity ({similarity_model}, higher is better)")
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_pairs(rows: Sequence[SampleResult], pairs: Sequence[tuple[str, str]], path: Path) -> Path | None:
    """Per-sample scatter of model b against model a (same sentence and sample): points below the diagonal
    had lower WER in b, points above it higher similarity in b."""
    panels = [(a, b, m) for a, b in pairs for m in ("wer", "similarity")]
    points = []
    for a, b, metric in panels:
        xa, xb = stats.per_sample(rows, a, metric), stats.per_sample(rows, b, metric)
        keys = [k for k in xa if k in xb and xa[k] is not None and xb[k] is not None]
        points.append((np.array([xa[k] for k in keys], dtype=float), np.array([xb[k] for k in keys], dtype=float)))
    if not any(len(x) for x, _ in points):
        return None
    figure = _figure(10, 4.5 * len(pairs))
    axes = np.atleast_2d(figure.subplots(len(pairs), 2))
    for ax, (a, b, metric), (x, y) in zip(axes.flat, panels, points):
        metric_info = _BY_NAME[metric]
        x, y = x * metric_info.scale, y * metric_info.scale
        ax.scatter(x, y, s=12, alpha=0.6)
        if len(x):
            low, high = min(x.min(), y.min()), max(x.max(), y.max())
            ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
        where = "above" if metric_info.higher_is_better else "below"  # only wer and similarity are drawn
        ax.set(xlabel=a, ylabel=b)
        ax.set_title(f"{metric_info.label} per sample (n={len(x)})\n{b} better {where} the diagonal",
                     fontsize="medium")
        ax.grid(alpha=0.3)
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------
def _summary_section(summaries: dict[str, stats.ModelSummary], asr_model: str, similarity_model: str,
                     rows: Sequence[SampleResult] = ()) -> list[Block]:
    headers = ["model", *(m.label for m in PRIMARY), "corpus WER", "samples ok/failed"]
    wer = _BY_NAME["wer"]
    table = [[model, *(_mean_ci(s[m.name], m) for m in PRIMARY), _num(corpus_wer(rows, model), wer),
              f"{s.ok}/{s.failed}"] for model, s in summaries.items()]
    return [
        Heading("Summary"), _table(headers, table),
        _para("Each cell is the mean over successful samples with its 95% bootstrap confidence interval in "
              "brackets; failed samples count only in the last column. WER and CER (lower is better) come from "
              f"ASR model {asr_model}. speaker similarity is the cosine similarity x100 (higher is better) "
              f"between each sample and the reference voice, from the independent verification model "
              f"{similarity_model}. quality is DNSMOS's predicted overall MOS (1-5, higher is better; trained on "
              "noisy speech, it hears noise and artefacts better than prosody). corpus WER scores all words of "
              "all sentences together, so long sentences weigh more than in the mean. "
              "real-time factor is stream time over audio length (below 1 keeps up); "
              "underruns counts the stalls a real-time player would hit after the first chunk."),
    ]


def _headline_section(rows: Sequence[SampleResult], summaries: dict[str, stats.ModelSummary], info: dict,
                      a: str, b: str) -> list[Block]:
    """The answer first: per metric, both models, the difference with its interval, p and a verdict."""
    found = stats.deltas(rows, [m.name for m in PRIMARY], base=a, tuned=b)
    body = []
    for metric in PRIMARY:
        d = found[metric.name]
        ci = "–" if not math.isfinite(d.ci_low) else f"[{_signed(d.ci_low, metric)}, {_signed(d.ci_high, metric)}]"
        if d.n_sentences < stats.min_sentences():
            ci = "(no interval: too few sentences)"
        body.append([metric.label, _mean_ci(summaries[a][metric.name], metric),
                     _mean_ci(summaries[b][metric.name], metric), f"{_signed(d.mean, metric)} {ci}",
                     _p(d.p_value, d.exact), _verdict(d, metric, a, b)])
    n = max((d.n_sentences for d in found.values()), default=0)
    out: list[Block] = [Heading(f"Is {b} better than {a}?"),
                        _table(["metric", a, b, f"difference ({b} − {a}) [95% CI]", "p", "verdict"], body),
                        _para(_design_text(rows, n, info))]
    if n < stats.min_sentences():
        out.insert(1, Alert(f"{n} sentence(s): no difference can reach p < {ALPHA} with fewer than "
                            f"{stats.min_sentences()} (the smallest exact p with {n} is {2 / 2 ** max(n, 1):.3g}). "
                            f"Run at least {stats.sentences_needed(0.5)} sentences to detect a difference of half "
                            "the spread of per-sentence differences."))
    return out


def _design_text(rows: Sequence[SampleResult], sentences: int, info: dict) -> str:
    samples = 1 + max((r.sample for r in rows), default=0)
    env = info.get("environment") or {}
    loads = [r.load_average for r in rows if r.load_average is not None]
    load = (f"1-minute load average during the samples: mean {np.mean(loads):.2f}, max {max(loads):.2f} "
            f"on {env.get('cpu_count', '?')} CPUs" if loads else "machine load not recorded")
    ceiling, floor = info.get("similarity_ceiling"), info.get("asr_floor")
    scale = (f"Same-speaker ceiling of speaker similarity: {100 * ceiling['mean']:.1f} ({ceiling['n']} pairs of the "
             "speaker's own recordings; a perfect clone scores about this). " if ceiling else
             "No other recording of the speaker to put similarity on a scale. ")
    scale += (f"ASR floor: WER {floor['wer']:.3f} on {floor['n']} of the speaker's own recordings with "
              "transcripts (the ASR's own errors, under any model's WER). " if floor else
              "ASR floor not measured (no recording of the speaker with a transcript beside it: clip.txt, clip.lab). ")
    return scale + (f"{sentences} sentences × {samples} sample(s) per model, paired by sentence and seed. Each cell: mean "
            f"with its 95% BCa bootstrap interval ({stats.N_BOOT} resamples, seed 0) over sentence means; p: "
            "two-sided sign-flip permutation test over sentences (exact up to "
            f"{stats.EXACT_MAX_PAIRS} sentences). The sentence is the unit because samples of one sentence are "
            f"not independent. Machine: {env.get('hardware', 'not recorded')}; {load}. The models took turns to go "
            "first (by sentence) after one untimed warm-up stream each. Latency figures (time to first audio, "
            "real-time factor, underruns) compare fairly here because both sides ran on the same machine in the "
            "same run; against another run's, only on the same machine under the same load.")


def _settings_section(rows: Sequence[SampleResult], info: dict, models: Sequence[str]) -> list[Block]:
    """Each side's full settings as its samples used them (model, family, precisions, every stream and sampling
    setting with the family's defaults filled in), the settings that differ first; and the samples cut by the
    token cap."""
    used = info.get("stream_used") or {}
    configured = (info.get("config") or {}).get("stream") or {}
    if not used and not configured:
        return []
    keys = list(dict.fromkeys([*(k for m in models for k in (used.get(m) or {})), *configured]))
    values = {k: [_plain((used.get(m) or {}).get(k, "–")) for m in models] for k in keys}
    differ = [k for k in keys if len(set(values[k])) > 1]
    body = [[Strong(k) if k in differ else k, "" if configured.get(k) is None else _plain(configured[k]),
             *values[k]] for k in [*differ, *(k for k in keys if k not in differ)]]
    out: list[Block] = [Heading("Settings used"),
                        _table(["setting", "[evaluation.stream]", *(f"used by {m}" for m in models)], body)]
    if len(models) == 2:
        out.append(_para(f"Settings in bold differ between {models[0]} and {models[1]} ("
                         + (", ".join(differ) if differ else "none") + "). Empty [evaluation.stream] cells are "
                         "the family's default, filled in per side."))
    for m in models:
        mine = [r for r in rows if r.model == m]
        capped = sum(r.token_cap for r in mine)
        if capped:
            limit = (used.get(m) or configured).get("max_new_tokens", "?")
            out.append(_para(f"{capped} of {len(mine)} {m} samples stopped at max_new_tokens ({limit}) instead of "
                             "at their stop token: their speech may be cut short (marked 'token cap' below)."))
    return out


def _per_sentence_section(rows: Sequence[SampleResult], models: Sequence[str], root: Path,
                          info: dict) -> list[Block]:
    """One line per (sentence, sample): what each model was heard to say, its scores, and its audio."""
    out: list[Block] = [Heading("Per sentence")]
    references = [Path(p) for p in info.get("reference_audio") or []]
    if references:
        out.append(_table(["reference clip (the voice both models speak with)", "audio"],
                          [[str(p), Link(p.name, p, audio=True, embed=True)] for p in references]))
    by_key = {(r.model, r.sentence_id, r.sample): r for r in rows}
    order = {sid: i for i, sid in enumerate(dict.fromkeys(r.sentence_id for r in sorted(rows, key=lambda r: r.seed)))}
    texts = {r.sentence_id: r.text for r in rows}
    keys = sorted({(r.sentence_id, r.sample) for r in rows}, key=lambda k: (order[k[0]], k[1]))
    wer, sim, quality = _BY_NAME["wer"], _BY_NAME["similarity"], _BY_NAME["quality"]
    body = []
    for sentence_id, sample in keys:
        line: list[Inline] = [f"{sentence_id} #{sample}", texts[sentence_id]]
        for m in models:
            r = by_key.get((m, sentence_id, sample))
            if r is None or not r.ok:
                line += ["failed: " + _short(r.error or "", 120) if r else "–", "–", "–", "–", "–"]
                continue
            flag = " (token cap)" if r.token_cap else ""
            line += [word_diff(r.reference_norm, r.hypothesis_norm), _num(_nan(r.wer), wer) + flag,
                     _num(_nan(r.similarity), sim), _num(_nan(r.quality), quality),
                     Link("wav", root / r.wav, audio=True, embed=True) if r.wav else "–"]
        body.append(line)
    headers = ["sentence", "text"]
    for m in models:
        headers += [f"{m}: heard", f"{m} WER", f"{m} similarity", f"{m} quality", f"{m} audio"]
    out += [_table(headers, body),
            _para("Transcripts are normalised as scored; highlighted words were heard instead of the text's, "
                  "green ones were extra, struck-through ones were missing (markdown: bold, +bold, struck). "
                  "report.html carries every clip as MP3 inside the page, so it plays when mailed on its own; "
                  "report.md links the WAV files in samples/.")]
    return out


def _details_section(summaries: dict[str, stats.ModelSummary]) -> list[Block]:
    rows = []
    for metric in METRICS:
        for model, s in summaries.items():
            d = s[metric.name]
            rows.append([metric.label, model, str(d.n), _num(d.mean, metric),
                         "–" if d.n == 0 else f"[{_num(d.ci_low, metric)}, {_num(d.ci_high, metric)}]",
                         _num(d.median, metric), _num(d.p90, metric)])
    return [Heading("Details"), _table(["metric", "model", "n", "mean", "95% CI", "median", "p90"], rows),
            _para(f"speaker similarity, self {SELF_SIMILARITY_NOTE} scores each sample with the voice encoder "
                  "whose embedding the model was conditioned on, so it flatters the model: a secondary check, "
                  "never a replacement for speaker similarity.")]


def _delta_section(rows: Sequence[SampleResult], a: str, b: str, paired: bool, how: str) -> list[Block]:
    found = stats.deltas(rows, [m.name for m in METRICS], base=a, tuned=b, paired=paired)
    table = []
    for metric in METRICS:
        d = found[metric.name]
        n = str(d.n_pairs) if d.paired else f"{d.n_base} / {d.n_tuned}"
        ci = "–" if not math.isfinite(d.ci_low) else f"[{_num(d.ci_low, metric)}, {_num(d.ci_high, metric)}]"
        better = {True: "higher", False: "lower", None: "–"}[metric.higher_is_better]
        table.append([metric.label, better, n, _signed(d.mean, metric), ci, _p(d.p_value, d.exact), _verdict(d, metric, a, b)])
    headers = ["metric", "better when", "pairs" if paired else f"samples ({a} / {b})",
               f"delta ({b} − {a})", "95% CI", "p-value", "verdict"]
    test = ("two-sided sign-flip permutation test on the per-pair differences (exact up to "
            f"{stats.EXACT_MAX_PAIRS} pairs, else {stats.N_PERM} random sign patterns)" if paired else
            f"two-sided permutation test of the difference of means ({stats.N_PERM} random relabellings)")
    return [Heading(f"{b} vs {a}"), _para(how), _table(headers, table),
            _para(f"p-value: {test}. With many metrics, expect about one in twenty to pass p < {ALPHA} by "
                  "chance; audio length has no better direction and is listed for context.")]


def _worst_table(rows: Sequence[SampleResult], roots: dict[str, Path]) -> Table:
    wer, sim = _BY_NAME["wer"], _BY_NAME["similarity"]
    body = []
    for r in rows:
        audio: Inline = "–"
        if r.wav:
            target = roots[r.model] / r.wav
            audio = Link("wav" if target.is_file() else "wav (missing)", target, audio=True)
        body.append([r.sentence_id, str(r.sample), _num(_nan(r.wer), wer), _num(_nan(r.similarity), sim), audio,
                     r.text, r.hypothesis or "–"])
    return _table(["sentence", "sample", "WER", "speaker similarity", "audio", "reference", "hypothesis"], body)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _worst_section(rows: Sequence[SampleResult], models: Sequence[str], roots: dict[str, Path]) -> list[Block]:
    out: list[Block] = [Heading("Worst samples"),
                        _para(f"The {WORST_N} samples with the highest WER and the {WORST_N} with the lowest "
                              "speaker similarity per model: listen to them before trusting a mean.")]
    for model in models:
        ok = [r for r in rows if r.model == model and r.ok]
        by_wer = sorted((r for r in ok if _finite(r.wer)), key=lambda r: -r.wer)[:WORST_N]
        by_sim = sorted((r for r in ok if _finite(r.similarity)), key=lambda r: r.similarity)[:WORST_N]
        out.append(Heading(f"{model}: highest WER", 3))
        out.append(_worst_table(by_wer, roots) if by_wer else _para("No WER scores."))
        out.append(Heading(f"{model}: lowest speaker similarity", 3))
        out.append(_worst_table(by_sim, roots) if by_sim else _para("No similarity scores."))
    return out


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _failed_section(rows: Sequence[SampleResult]) -> list[Block]:
    failed = [r for r in rows if not r.ok]
    if not failed:
        return [Heading("Failed samples"), _para("None.")]
    body = [[r.model, r.sentence_id, str(r.sample), str(r.seed), _short(r.error or "")] for r in failed]
    return [Heading("Failed samples"),
            _para(f"{len(failed)} sample(s) failed; they are left out of every score above."),
            _table(["model", "sentence", "sample", "seed", "error"], body)]


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _plots_section(rows: Sequence[SampleResult], models: Sequence[str], pairs: Sequence[tuple[str, str]],
                   plots_dir: Path, prefix: str, similarity_model: str,
                   summaries: dict[str, stats.ModelSummary]) -> list[Block]:
    made = [
        (plot_means(summaries, plots_dir / f"{prefix}means.png"),
         "Means with 95% intervals, each metric on its full scale"),
        (plot_latency(rows, models, plots_dir / f"{prefix}latency.png"),
         "Latency: time to first audio, real-time factor, underruns"),
        (plot_wer_per_sentence(rows, models, plots_dir / f"{prefix}wer_per_sentence.png"),
         "Mean WER per sentence"),
        (plot_similarity(rows, models, plots_dir / f"{prefix}similarity.png", similarity_model),
         "Speaker similarity per model"),
        (plot_pairs(rows, pairs, plots_dir / f"{prefix}pairs.png") if pairs else None,
         "Per-sample WER and speaker similarity, one model against the other"),
    ]
    out: list[Block] = [Heading("Plots")]
    for path, caption in made:
        if path is not None:
            out.append(Image(path, caption))
    if len(out) == 1:
        out.append(_para("No scores to plot."))
    return out


def _info_table(values: dict) -> Table:
    return _table(["key", "value"], [[str(k), _plain(v)] for k, v in values.items()])


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _config_block(config: Any) -> Block:
    if not config:
        return _para("Not recorded.")
    return Code(json.dumps(config, indent=2, ensure_ascii=False, default=str))


def _write(blocks: Sequence[Block], out_dir: Path, md_name: str, html_name: str, title: str) -> tuple[Path, Path]:
    md, page = out_dir / md_name, out_dir / html_name
    md.write_text(_to_markdown(blocks, out_dir), encoding="utf-8")
    page.write_text(_to_html(blocks, out_dir, title), encoding="utf-8")
    return md, page


def _generated() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------
def write_report(run_dir: Path, rows: Sequence[SampleResult], info: dict) -> tuple[Path, Path]:
    """Write `report.md`, `report.html` and `plots/*.png` into `run_dir` (where the rows' WAV paths start)."""
    run_dir = Path(run_dir)
    rows = list(rows)
    sides = info.get("sides") or ["base", "tuned"]  # A, then B (runs before sides were named: base, tuned)
    models = stats.model_order((r.model for r in rows), sides)
    summaries = stats.summarize(rows, [m.name for m in METRICS], sides=sides)
    asr, sim = info.get("asr_model", "unknown"), info.get("similarity_model", "unknown")
    pairs = [(sides[0], sides[1])] if len(sides) == 2 and set(sides) <= set(models) else []
    title = f"Chatterbox evaluation: {run_dir.resolve().name}"

    blocks: list[Block] = [Heading(title, 1)]
    if info.get("synthetic"):
        blocks.append(Alert(SYNTHETIC_WARNING))
    for a, b in pairs:
        blocks += _headline_section(rows, summaries, info, a, b)
    blocks.append(_para(f"Generated {_generated()} from {len(rows)} sample(s) in {run_dir}. ASR: {asr}. "
                        f"Speaker similarity: {sim}. Quality: {info.get('quality_model', 'not recorded')}."))
    if info.get("reference_audio"):
        blocks.append(_para(f"Reference voice (both models speak with the first clip; similarity is measured "
                            f"against all): {', '.join(map(str, info['reference_audio']))} — "
                            f"{info.get('reference_origin', 'origin not recorded')}."))
    if info.get("similarity_note"):
        blocks.append(_para(str(info["similarity_note"])))
    described = info.get("models") or {}
    blocks += [Heading("Models"),
               _table(["model", "description"], [[m, str(described.get(m, "–"))] for m in models])]
    blocks += _settings_section(rows, info, models)
    blocks += _per_sentence_section(rows, models, run_dir, info)
    blocks += _summary_section(summaries, asr, sim, rows)
    for a, b in pairs:
        blocks += _delta_section(rows, a, b, True, f"Paired by sentence and seed: both models read the same "
                                                   f"sentences with the same seeds. Delta is {b} − {a}.")
    blocks += _details_section(summaries)
    blocks += _plots_section(rows, models, pairs, run_dir / PLOTS_DIR, "", sim, summaries)
    blocks += _worst_section(rows, models, {m: run_dir for m in models})
    blocks += _failed_section(rows)
    blocks += [Heading("Configuration"), _config_block(info.get("config"))]
    blocks += [Heading("Environment"), _info_table(info.get("environment") or {})]
    return _write(blocks, run_dir, REPORT_MD, REPORT_HTML, title)


def _load_run(run_dir: Path) -> list[SampleResult]:
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no {RESULTS_FILE}; not an evaluation run folder, or the run "
                                "wrote no samples yet")
    rows = read_results(run_dir)
    if not rows:
        raise ValueError(f"{run_dir / RESULTS_FILE}: no readable result rows")
    return rows


def _pairing(rows: Sequence[SampleResult], a: str, b: str) -> tuple[bool, str]:
    """Pair when the two models share at least half the samples of the smaller one; say what was done."""
    ka = {(r.sentence_id, r.sample) for r in rows if r.model == a and r.ok}  # failed samples cannot pair
    kb = {(r.sentence_id, r.sample) for r in rows if r.model == b and r.ok}
    shared = len(ka & kb)
    if shared >= 2 and shared * 2 >= min(len(ka), len(kb)):
        return True, (f"Paired by (sentence_id, sample): {shared} shared sample(s) ({len(ka)} in {a}, "
                      f"{len(kb)} in {b}); unshared samples are left out of the delta. Delta is {b} − {a}.")
    return False, (f"Unpaired: the runs share {shared} of {len(ka)} / {len(kb)} samples, too few to pair, so "
                   f"the delta is the difference of the two means ({b} − {a}).")


def _config_diff_section(a: dict, b: dict) -> list[Block]:
    """What was set differently in the two runs: the first thing to know before reading their deltas."""
    fa, fb = flatten(a), flatten(b)
    differ = [k for k in dict.fromkeys([*fa, *fb]) if k != "output_dir" and fa.get(k) != fb.get(k)]
    if not (a and b):
        return [Heading("Configuration differences"), _para("A run has no saved configuration to compare.")]
    if not differ:
        return [Heading("Configuration differences"), _para("None: both runs used the same settings.")]
    return [Heading("Configuration differences"),
            _table(["setting", "run A", "run B"], [[k, _plain(fa.get(k, "–")), _plain(fb.get(k, "–"))] for k in differ])]


def compare(run_a: Path, run_b: Path, out_dir: Path) -> tuple[Path, Path]:
    """Compare two finished runs from their files alone: each model of run A against the same model of run B.

    Writes `compare.md`, `compare.html` and `plots/compare_*.png` into `out_dir`. Raises FileNotFoundError
    (or ValueError) naming the folder when a run has no results.
    """
    run_a, run_b, out_dir = Path(run_a), Path(run_b), Path(out_dir)
    runs = {"A": (run_a, _load_run(run_a), read_run_info(run_a)),
            "B": (run_b, _load_run(run_b), read_run_info(run_b))}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, roots, labels = [], {}, {}  # label "A/base" -> (run tag, model name)
    for tag, (folder, run_rows, _) in runs.items():
        for model in stats.model_order(r.model for r in run_rows):
            labels[f"{tag}/{model}"] = (tag, model)
            roots[f"{tag}/{model}"] = folder
        rows += [dataclasses.replace(r, model=f"{tag}/{r.model}") for r in run_rows]
    shared = [m for m in stats.model_order(r.model for r in runs["A"][1])
              if m in {r.model for r in runs["B"][1]}]
    summaries = stats.summarize(rows, [m.name for m in METRICS])
    info_a, info_b = runs["A"][2], runs["B"][2]
    asr_names = dict.fromkeys(str(i.get("asr_model", "unknown")) for i in (info_a, info_b))
    sim_names = dict.fromkeys(str(i.get("similarity_model", "unknown")) for i in (info_a, info_b))
    asr, sim = " (A) vs ".join(asr_names), " (A) vs ".join(sim_names)
    asr, sim = (asr + " (B)" if len(asr_names) > 1 else asr), (sim + " (B)" if len(sim_names) > 1 else sim)
    title = f"Chatterbox evaluation: {run_a.resolve().name} (A) vs {run_b.resolve().name} (B)"

    blocks: list[Block] = [Heading(title, 1)]
    if info_a.get("synthetic") or info_b.get("synthetic"):
        blocks.append(Alert(SYNTHETIC_WARNING))
    if len(asr_names) > 1 or len(sim_names) > 1:
        blocks.append(Alert(f"The runs were scored with different models (ASR: {asr}; similarity: {sim}): "
                            "their scores are not directly comparable."))
    blocks.append(_para(f"Generated {_generated()} from the saved results only; nothing was regenerated."))
    run_table = []
    for tag, (folder, run_rows, info) in runs.items():
        run_table.append([tag, str(folder), str(len(run_rows)), "yes" if info.get("synthetic") else "no",
                          str(info.get("asr_model", "unknown")), str(info.get("similarity_model", "unknown")),
                          "" if info else f"no {RUN_INFO_FILE}"])
    blocks += [Heading("Runs"), _table(["run", "folder", "samples", "synthetic", "ASR", "similarity", "note"],
                                       run_table)]
    machines = [str((info.get("environment") or {}).get("hardware", "not recorded")) for info in (info_a, info_b)]
    latency = (f"Latency figures of two runs compare fairly only when both ran on the same machine under the same "
               f"load: run A ran on {machines[0]}, run B on {machines[1]}.")
    blocks.append(Alert(latency + " These differ: compare their latency with care, or not at all.")
                  if machines[0] != machines[1] else _para(latency))
    model_rows = [[label, str((runs[tag][2].get("models") or {}).get(model, "–"))]
                  for label, (tag, model) in labels.items()]
    blocks += [Heading("Models"), _table(["model", "description"], model_rows)]
    blocks += _summary_section(summaries, asr, sim, rows)
    blocks += _config_diff_section(info_a.get("config") or {}, info_b.get("config") or {})
    pairs = []
    if not shared:
        blocks.append(_para("The runs have no model name in common, so no deltas are shown."))
    for model in shared:
        a, b = f"A/{model}", f"B/{model}"
        paired, how = _pairing(rows, a, b)
        if paired:
            pairs.append((a, b))
        blocks += _delta_section(rows, a, b, paired, how)
    blocks += _details_section(summaries)
    blocks += _plots_section(rows, list(labels), pairs, out_dir / PLOTS_DIR, "compare_", sim, summaries)
    blocks += _worst_section(rows, list(labels), roots)
    blocks += _failed_section(rows)
    for tag, (_, _, info) in runs.items():
        blocks += [Heading(f"Configuration of run {tag}"), _config_block(info.get("config"))]
    for tag, (_, _, info) in runs.items():
        blocks += [Heading(f"Environment of run {tag}"), _info_table(info.get("environment") or {})]
    return _write(blocks, out_dir, COMPARE_MD, COMPARE_HTML, title)
