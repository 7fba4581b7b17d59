"""Training metrics: one JSON line per event in `metrics.jsonl`, and a live `training_metrics.png`.

The LoRA recipe calls `MetricsLogger.log_train` every optimiser step, `log_val` after each validation pass
and `end_epoch` at each epoch boundary. Every call appends one flushed JSON line to `run_dir/metrics.jsonl`
(a crash loses nothing already logged), and the 2x2 plot (loss, learning rate, gradient norm, throughput)
is redrawn at most every `plot_every_seconds`, always at an epoch end and on `close()`, so a user can keep
the PNG open in a viewer and watch the run. With `background=True` (the recipe's choice) the redraw runs in
a worker thread, so a training step never waits for a render (about 0.7 s on a loaded CPU).

Details that matter in practice:
* The PNG is rendered to a hidden temp file in the same folder and moved into place with `os.replace`, so a
  viewer never reads a half-written image; a failed render leaves the previous image as it was.
* Matplotlib is driven through `matplotlib.figure.Figure` and the Agg canvas directly. pyplot is never
  imported, so no window opens and the backend a caller chose (a notebook, a GUI) is left alone.
* A plot failure during training is logged as a warning and training goes on; `plot()` itself raises. A
  failed write (a full disk) is one warning line, not repeated until a redraw has succeeded again.
* Non-finite values (a NaN loss, an infinite gradient norm) are written as JSON `null` and drawn as gaps;
  non-finite train losses are also marked with red crosses along the bottom of the loss panel.
* Resuming (`MetricsLogger.resume(run_dir, plot_path, step)`) reads the existing log so the plot continues
  the history, drops every entry past the resumed step (it came from the interrupted part of the run),
  and rewrites the log without them before appending.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"
PLOT_FILENAME = "training_metrics.png"
FIGURE_SIZE_INCHES = (12.0, 8.0)
FIGURE_DPI = 100  # the PNG is FIGURE_SIZE_INCHES * FIGURE_DPI pixels: 1200 x 800
KINDS = ("train", "val", "epoch")
_RESERVED_KEYS = frozenset({"kind", "step", "time"})  # written by the logger itself; not allowed in **extra
_MAX_DRAWN_POINTS = 2000  # per curve; longer per-step series are drawn as a min/max envelope (see _thin)


# ----------------------------------------------------------------------------------------------------------
# JSON values
# ----------------------------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """A JSON-safe copy of `value`: non-finite floats become None, tensors and numpy scalars plain numbers."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    for convert in ("item", "tolist"):  # torch tensors, numpy scalars and arrays
        method = getattr(value, convert, None)
        if callable(method):
            try:
                return _clean(method())
            except (TypeError, ValueError, RuntimeError):
                continue
    return str(value)


def _number(value: Any) -> float:
    """A float for plotting: anything missing, null or not a number becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    return float(value)


def _column(records: list[dict], key: str) -> np.ndarray:
    """`key` of every record as floats; missing, null and non-numeric values become NaN."""
    values = [record.get(key) for record in records]
    if all(value is None or type(value) in (int, float) for value in values):
        return np.array(values, dtype=float)  # fast path (None -> NaN): what the logger itself writes
    return np.array([_number(value) for value in values], dtype=float)


def _step_value(step: Any) -> int:
    cleaned = _clean(step)
    if isinstance(cleaned, bool) or not isinstance(cleaned, (int, float)) or cleaned != int(cleaned):
        raise ValueError(f"step must be a whole number, got {step!r}")
    return int(cleaned)


def load_metrics(path: str | os.PathLike) -> list[dict]:
    """Every record of a metrics.jsonl file, in order.

    A last line cut short by a crash mid-write is skipped with a warning. Any other line that is not a JSON
    object is also skipped with a warning (losing one log line beats refusing to resume a run).
    Raises FileNotFoundError when the file does not exist.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    last = max((index for index, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))  # decode per line: a cut may split a UTF-8 character
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            if index == last:
                log.warning("%s: skipping truncated last line %d (the run was interrupted mid-write)",
                            path, index + 1)
            else:
                log.warning("%s: skipping unreadable line %d", path, index + 1)
            continue
        if not isinstance(record, dict):
            log.warning("%s: skipping line %d, which is not a JSON object", path, index + 1)
            continue
        records.append(record)
    return records


# ----------------------------------------------------------------------------------------------------------
# Atomic file writes
# ----------------------------------------------------------------------------------------------------------
def _temp_path_for(path: Path) -> Path:
    """A hidden, unique name beside `path` (same folder, so os.replace is a rename on one filesystem)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, then move it into place; on any error remove it."""
    temp = _temp_path_for(path)
    try:
        with open(temp, "xb") as handle:  # plain open: the file gets the usual umask permissions
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_jsonl_atomically(path: Path, records: Iterable[dict]) -> None:
    text = "".join(json.dumps(_clean(record), allow_nan=False, ensure_ascii=False) + "\n" for record in records)
    _write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------------------------------------
# Plotting
# ----------------------------------------------------------------------------------------------------------
def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average that skips non-finite values (they stay NaN: gaps)."""
    out = np.full(values.shape, np.nan)
    average, count = 0.0, 0
    for index, value in enumerate(values):
        if not math.isfinite(value):
            continue
        average = smoothing * average + (1.0 - smoothing) * value
        count += 1
        out[index] = average / (1.0 - smoothing ** count)
    return out


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = _MAX_DRAWN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ~max_points of (x, y) for drawing: per bucket of consecutive points, its lowest and highest.

    Drawing 100k noisy per-step points costs Agg about a second; the min/max envelope looks the same at this
    resolution and keeps every spike. A bucket with no finite value stays NaN (a gap).
    """
    count = len(y)
    if count <= max_points:
        return x, y
    size = -(-count // (max_points // 2))
    buckets = -(-count // size)
    pad = buckets * size - count
    xs = np.concatenate([x, np.full(pad, np.nan)]).reshape(buckets, size)
    ys = np.concatenate([y, np.full(pad, np.nan)]).reshape(buckets, size)
    finite = np.isfinite(ys)
    low = np.where(finite, ys, np.inf).argmin(axis=1)
    high = np.where(finite, ys, -np.inf).argmax(axis=1)
    picks = np.stack([np.minimum(low, high), np.maximum(low, high)], axis=1)  # keep step order in a bucket
    rows = np.arange(buckets)[:, None]
    return xs[rows, picks].ravel(), ys[rows, picks].ravel()


def _marker_for(values: np.ndarray) -> str | None:
    """A single finite point draws nothing as a line, so give it a marker."""
    return "o" if np.isfinite(values).sum() == 1 else None


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _series_panel(ax, steps: np.ndarray, values: np.ndarray, *, title: str, ylabel: str, color: str,
                  value_format: str = "{:.4g}") -> None:
    finite = np.isfinite(values)
    latest = _last_finite(values)
    ax.set_title(title if latest is None else f"{title} (latest {value_format.format(latest)})")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if not finite.any():
        _no_data(ax)
        return
    ax.plot(*_thin(steps, values), color=color, lw=1.2, marker=_marker_for(values), ms=4)


def _loss_panel(ax, train: list[dict], val: list[dict], epochs: list[dict], smoothing: float) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    steps = _column(train, "step")
    loss = _column(train, "loss")
    smoothed = _ema(loss, smoothing)
    val_steps = _column(val, "step")
    val_loss = _column(val, "loss")
    epochs = sorted(epochs, key=lambda r: _number(r.get("step")))
    epoch_steps = _column(epochs, "step")
    epoch_loss = _column(epochs, "train_loss_mean")

    drew = False
    if np.isfinite(loss).any():
        ax.plot(*_thin(steps, loss), color="C0", alpha=0.25, lw=0.8, marker=_marker_for(loss), ms=3,
                label="train (per step)")
        ax.plot(*_thin(steps, smoothed), color="C0", lw=2.0, marker=_marker_for(smoothed), ms=4,
                label=f"train EMA ({smoothing:g})")
        drew = True
    if np.isfinite(val_loss).any():
        ax.plot(val_steps, val_loss, color="C3", marker="o", ms=5, lw=1.2, label="validation")
        drew = True
    if np.isfinite(epoch_loss).any():
        ax.plot(epoch_steps, epoch_loss, color="C2", marker="s", ms=6, lw=1.2, ls="--", label="train epoch mean")
        drew = True
    bad = steps[~np.isfinite(loss) & np.isfinite(steps)]
    if bad.size:
        # x in data units, y in axes units: crosses along the bottom edge whatever the loss scale
        ax.plot(bad, np.full(bad.shape, 0.03), "x", color="red", ms=6, transform=ax.get_xaxis_transform(),
                label="non-finite train loss")
        drew = True

    parts = []
    if (latest := _last_finite(smoothed)) is not None:
        parts.append(f"EMA {latest:.4g}")
    if (latest := _last_finite(val_loss)) is not None:
        parts.append(f"val {latest:.4g}")
    ax.set_title("Loss" + (f" ({', '.join(parts)})" if parts else ""))
    if not drew:
        _no_data(ax)


def _grad_panel(ax, steps: np.ndarray, grad: np.ndarray, max_grad_norm: float | None) -> None:
    """Gradient norms with the clipping threshold drawn in, the share of clipped steps in the title, and
    tick labels that read as plain numbers on a log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    _series_panel(ax, steps, grad, title="Gradient norm", ylabel="L2 norm (before clipping)", color="C4")
    finite = grad[np.isfinite(grad)]
    if max_grad_norm and max_grad_norm > 0:
        ax.axhline(max_grad_norm, color="C3", ls="--", lw=1.2, label=f"max_grad_norm = {max_grad_norm:g}")
        if finite.size:
            clipped = float((finite > max_grad_norm).mean())
            ax.set_title(f"{ax.get_title()}, {clipped:.0%} of steps clipped")
    positive = finite[finite > 0]
    if positive.size and positive.size == finite.size:
        low = min(float(positive.min()), max_grad_norm or math.inf)
        high = max(float(positive.max()), max_grad_norm or 0.0)
        if high / low > 20:  # several decades: log scale, labelled 1, 2, 5 x 10^k as plain numbers
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())


def _build_figure(records: list[dict], smoothing: float, title: str | None, max_grad_norm: float | None = None):
    # Figure + Agg canvas directly: no pyplot, so no window and no change to the caller's chosen backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = _column(train, "step")

    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    # fixed margins: a constrained layout would double the render time, and this runs during training;
    # the bottom strip holds the legend, so it never covers a curve
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.2, hspace=0.32)
    (ax_loss, ax_lr), (ax_grad, ax_speed) = figure.subplots(2, 2, sharex=True)
    for ax in (ax_loss, ax_lr):
        ax.tick_params(labelbottom=True)  # sharex hides the top row's step labels; keep them readable

    _loss_panel(ax_loss, train, val, epochs, smoothing)
    lr = _column(train, "lr")
    _series_panel(ax_lr, steps, lr, title="Learning rate", ylabel="learning rate", color="C1",
                  value_format="{:.3g}")
    if np.isfinite(lr).any():
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _grad_panel(ax_grad, steps, _column(train, "grad_norm"), max_grad_norm)
    speed = _column(train, "tokens_per_s")
    _series_panel(ax_speed, steps, speed, title="Throughput", ylabel="tokens / s", color="C5",
                  value_format="{:,.0f}")

    handles, labels = (sum(parts, []) for parts in zip(*(ax.get_legend_handles_labels() for ax in (ax_loss, ax_grad))))
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    return figure


def _save_png(figure, handle: IO[bytes]) -> None:
    """The render step proper: draw `figure` and write it to `handle` as PNG."""
    figure.savefig(handle, format="png", dpi=FIGURE_DPI)


def render_plot(records: list[dict], path: str | os.PathLike, *, smoothing: float = 0.95,
                title: str | None = None, max_grad_norm: float | None = None) -> None:
    """Draw the 2x2 metrics figure for `records` (as in metrics.jsonl) and write it atomically to `path`."""
    figure = _build_figure(records, smoothing, title, max_grad_norm)
    _write_atomically(Path(path), lambda handle: _save_png(figure, handle))


# ----------------------------------------------------------------------------------------------------------
# Logger
# ----------------------------------------------------------------------------------------------------------
class MetricsLogger:
    """Append-only metrics log plus a live plot for one training run.

    run_dir:             folder of the run; `metrics.jsonl` is written there.
    plot_path:           the PNG (default `run_dir/training_metrics.png`).
    plot_every_seconds:  the plot is redrawn at most this often while logging (0: on every call); an epoch
                         end and `close()` always redraw.
    resume:              continue an existing run: read its metrics.jsonl so the plot keeps the history.
    resume_step:         with `resume`, the step of the checkpoint being resumed: entries past it are dropped
                         (and removed from the file). None keeps everything.
    smoothing:           EMA factor of the smoothed train-loss curve, in [0, 1).
    total_steps:         the run's length, for "step x/N" and an ETA in the title.
    max_grad_norm:       the clipping threshold, drawn in the gradient-norm panel.
    background:          render in a worker thread (log calls never wait for a render); `wait()` waits.

    Without `resume`, an existing metrics.jsonl in run_dir is started afresh (with a warning).
    Use as a context manager, or call `close()` at the end (also from a `finally`).
    """

    def __init__(self, run_dir: str | os.PathLike, plot_path: str | os.PathLike | None = None,
                 plot_every_seconds: float = 10.0, *, resume: bool = False, resume_step: int | None = None,
                 smoothing: float = 0.95, total_steps: int | None = None, max_grad_norm: float | None = None,
                 background: bool = False) -> None:
        if not plot_every_seconds >= 0:
            raise ValueError(f"plot_every_seconds must be >= 0, got {plot_every_seconds!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if resume_step is not None and not resume:
            raise ValueError("resume_step is only meaningful with resume=True")
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILENAME
        self.plot_path = Path(plot_path) if plot_path is not None else self.run_dir / PLOT_FILENAME
        self.plot_every_seconds = float(plot_every_seconds)
        self.smoothing = float(smoothing)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.plot_path.parent.mkdir(parents=True, exist_ok=True)

        self._records: list[dict] = []
        self._epoch_losses: dict[Any, list[float]] = {}  # epoch -> train losses logged in it (NaN kept)
        self._last_step: int | None = None
        self._last_epoch: Any = None
        self._last_plot: float | None = None  # time.monotonic() of the last render attempt
        self._plotting = True  # turned off if matplotlib is missing
        self._write_failing = False  # the last render could not be written: its warning was given
        self._closed = False
        self.total_steps = total_steps
        self.max_grad_norm = max_grad_norm
        self._background = background
        self._render_thread: threading.Thread | None = None

        if resume:
            self._restore(_step_value(resume_step) if resume_step is not None else None)
            mode = "a"
        else:
            if self.metrics_path.exists() and self.metrics_path.stat().st_size > 0:
                log.warning("%s already exists and the run is not resumed: starting it afresh", self.metrics_path)
            mode = "w"
        self._file = open(self.metrics_path, mode, encoding="utf-8")

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, plot_path: str | os.PathLike | None = None,
               step: int | None = None, plot_every_seconds: float = 10.0, **kwargs: Any) -> "MetricsLogger":
        """Continue the run in `run_dir` from checkpoint `step`: history up to it is kept, later ones dropped."""
        return cls(run_dir, plot_path, plot_every_seconds, resume=True, resume_step=step, **kwargs)

    # -- history -------------------------------------------------------------------------------------------
    @property
    def records(self) -> list[dict]:
        """Copies of every record in this run's history (restored ones included), in order."""
        return [dict(record) for record in self._records]

    @property
    def last_step(self) -> int | None:
        return self._last_step

    def _remember(self, record: dict) -> None:
        self._records.append(record)
        step = record.get("step")
        if isinstance(step, int) and (self._last_step is None or step > self._last_step):
            self._last_step = step
        if record.get("epoch") is not None:
            self._last_epoch = record.get("epoch")
        if record.get("kind") == "train":
            self._epoch_losses.setdefault(record.get("epoch"), []).append(_number(record.get("loss")))

    def _restore(self, resume_step: int | None) -> None:
        if not self.metrics_path.exists():
            log.info("%s does not exist yet: resuming with an empty history", self.metrics_path)
            return
        kept, later, malformed = [], 0, 0
        for record in load_metrics(self.metrics_path):
            step = record.get("step")
            if record.get("kind") not in KINDS or isinstance(step, bool) or not isinstance(step, numbers.Real):
                malformed += 1
                continue
            if resume_step is not None and step > resume_step:
                later += 1
                continue
            record = _clean(record)
            record["step"] = int(step)
            kept.append(record)
            self._remember(record)
        if malformed:
            log.warning("%s: dropped %d records without a known kind or a step", self.metrics_path, malformed)
        log.info("%s: resumed with %d records%s", self.metrics_path, len(kept),
                 f", dropped {later} past step {resume_step}" if later else "")
        _write_jsonl_atomically(self.metrics_path, kept)  # the file now matches the history being continued

    # -- logging -------------------------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        if self._closed:
            raise ValueError("MetricsLogger is closed")
        self._file.write(json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n")
        self._file.flush()
        self._remember(record)

    @staticmethod
    def _extra(extra: dict[str, Any]) -> dict[str, Any]:
        clash = _RESERVED_KEYS & extra.keys()
        if clash:
            raise ValueError(f"reserved metric names cannot be passed as extras: {sorted(clash)}")
        return {key: _clean(value) for key, value in extra.items()}

    def log_train(self, step: int, epoch: int, loss: float, lr: float | None = None,
                  grad_norm: float | None = None, tokens_per_s: float | None = None, **extra: Any) -> None:
        """One optimiser step. Values may be floats, numpy or 0-d torch values; non-finite ones log as null."""
        record = {"kind": "train", "step": _step_value(step), "time": time.time(), "epoch": _clean(epoch),
                  "loss": _clean(loss), "lr": _clean(lr), "grad_norm": _clean(grad_norm),
                  "tokens_per_s": _clean(tokens_per_s), **self._extra(extra)}
        self._append(record)
        self._maybe_plot()

    def log_val(self, step: int, epoch: int, loss: float, **extra: Any) -> None:
        """One validation pass, at the train step it followed."""
        record = {"kind": "val", "step": _step_value(step), "time": time.time(), "epoch": _clean(epoch),
                  "loss": _clean(loss), **self._extra(extra)}
        self._append(record)
        self._maybe_plot()

    def end_epoch(self, epoch: int, step: int | None = None) -> float | None:
        """Record the mean train loss of `epoch` (finite losses only) and redraw. Returns that mean (None if none).

        The record sits at `step`, by default the last step logged.
        """
        key = _clean(epoch)
        losses = self._epoch_losses.get(key, [])
        finite = [value for value in losses if math.isfinite(value)]
        mean = sum(finite) / len(finite) if finite else None
        at = _step_value(step) if step is not None else (self._last_step if self._last_step is not None else 0)
        record = {"kind": "epoch", "step": at, "time": time.time(), "epoch": key, "train_loss_mean": mean,
                  "train_steps": len(losses), "nonfinite_steps": len(losses) - len(finite)}
        self._append(record)
        self._plot_quietly(self._background)
        return mean

    # -- plotting ------------------------------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        """Time left at the pace of the last (up to) 50 logged steps; None before two steps or without a total."""
        if not self.total_steps or self._last_step is None:
            return None
        recent = [(r["step"], r["time"]) for r in self._records[-200:] if r.get("kind") == "train"][-50:]
        if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
            return None
        per_step = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
        return max(0.0, (self.total_steps - self._last_step) * per_step)

    def _title(self) -> str:
        if self._last_step is None:
            where = "no steps yet"
        else:
            where = f"step {self._last_step}" + (f"/{self.total_steps}" if self.total_steps else "")
        if self._last_epoch is not None:
            shown = self._last_epoch + 1 if isinstance(self._last_epoch, int) else self._last_epoch
            where += f", epoch {shown}"  # counted from 1 here (the log counts from 0)
        eta = self.eta_seconds()
        if eta is not None and self._last_step != self.total_steps:
            where += f", ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}"
        return f"{self.run_dir.name}: {where} (updated {time.strftime('%H:%M:%S')})"

    def plot(self) -> None:
        """Redraw the PNG now, atomically. Raises on failure (the previous PNG is left intact)."""
        self._render(list(self._records), self._title())

    def _render(self, records: list[dict], title: str) -> None:
        try:
            render_plot(records, self.plot_path, smoothing=self.smoothing, title=title,
                        max_grad_norm=self.max_grad_norm)
        finally:
            self._last_plot = time.monotonic()

    def wait(self) -> None:
        """Wait for a background render in progress."""
        if self._render_thread is not None:
            self._render_thread.join()
            self._render_thread = None

    def _plot_quietly(self, background: bool = False) -> None:
        """Redraw, but never let a plotting problem stop training: warn instead. In the background, a render
        still running is left alone (the next due redraw catches up)."""
        if not self._plotting:
            return
        if background:
            if self._render_thread is not None and self._render_thread.is_alive():
                return
            self._last_plot = time.monotonic()
            args = (list(self._records), self._title())  # a snapshot: records are only ever appended
            self._render_thread = threading.Thread(target=self._quietly, args=args, daemon=True,
                                                   name="training-metrics-plot")
            self._render_thread.start()
            return
        self._quietly(list(self._records), self._title())

    def _quietly(self, records: list[dict], title: str) -> None:
        try:
            self._render(records, title)
        except ImportError as error:
            self._plotting = False
            log.warning("matplotlib is unavailable (%s): %s will not be drawn; metrics still go to %s",
                        error, self.plot_path, self.metrics_path)
        except OSError as error:
            if not self._write_failing:
                log.warning("could not write %s (%s); the previous image is kept, and training goes on",
                            self.plot_path, error)
            self._write_failing = True
        except Exception:
            log.warning("could not redraw %s; the previous image is kept", self.plot_path, exc_info=True)
        else:
            self._write_failing = False

    def _maybe_plot(self) -> None:
        if self._last_plot is None or time.monotonic() - self._last_plot >= self.plot_every_seconds:
            self._plot_quietly(self._background)

    # -- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Draw the final plot and close the log. Safe to call more than once."""
        if self._closed:
            return
        try:
            self.wait()
            self._plot_quietly()
        finally:
            self._closed = True
            self._close_file()

    def _close_file(self) -> None:
        """Close the log; a line a full disk kept from it is lost with a warning rather than a traceback that
        would hide why training stopped."""
        try:
            self._file.close()
        except OSError as error:
            log.warning("could not finish writing %s (%s)", self.metrics_path, error)

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
