"""MetricsLogger: the JSON-lines log, the live PNG (validity, throttling, atomic replacement), resume, NaN."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from training import metrics
from training.metrics import FIGURE_DPI, FIGURE_SIZE_INCHES, MetricsLogger, load_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED_SHAPE = (round(FIGURE_SIZE_INCHES[1] * FIGURE_DPI), round(FIGURE_SIZE_INCHES[0] * FIGURE_DPI))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == EXPECTED_SHAPE


def _log_steps(logger: MetricsLogger, steps, epoch: int = 0) -> None:
    for step in steps:
        logger.log_train(step, epoch, loss=2.0 / (1 + 0.1 * step), lr=1e-4 * min(1.0, step / 5),
                         grad_norm=1.0 + 0.5 * math.sin(step), tokens_per_s=1000.0 + 10 * step)


def _side_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in {"metrics.jsonl", "training_metrics.png"})


@pytest.fixture
def drawn(monkeypatch):
    """Replace rendering by a recorder of what would have been drawn (for tests that are not about the PNG)."""
    calls: list[list[dict]] = []
    monkeypatch.setattr(metrics, "render_plot", lambda records, path, **kwargs: calls.append(list(records)))
    return calls


def test_jsonl_records_values_and_kinds(tmp_path, drawn):
    with MetricsLogger(tmp_path, tmp_path / "training_metrics.png", plot_every_seconds=3600) as logger:
        logger.log_train(1, 0, 2.5, 1e-4, 3.0, 1234.5, accuracy=0.25)
        logger.log_train(2, 0, np.float32(1.5), lr=2e-4, grad_norm=np.float64(2.0), tokens_per_s=1300)
        logger.log_val(2, 0, 1.75)
        assert logger.end_epoch(0) == pytest.approx(2.0)
        lines = _lines(tmp_path / "metrics.jsonl")  # flushed already, before close
    assert [line["kind"] for line in lines] == ["train", "train", "val", "epoch"]
    assert [line["step"] for line in lines] == [1, 2, 2, 2]
    assert all(isinstance(line["time"], float) for line in lines)
    first = lines[0]
    keys = ("epoch", "loss", "lr", "grad_norm", "tokens_per_s", "accuracy")
    assert [first[key] for key in keys] == [0, 2.5, 1e-4, 3.0, 1234.5, 0.25]
    assert lines[1]["loss"] == 1.5 and lines[1]["tokens_per_s"] == 1300
    assert lines[2]["loss"] == 1.75
    assert lines[3]["epoch"] == 0 and lines[3]["train_loss_mean"] == pytest.approx(2.0)
    assert lines[3]["train_steps"] == 2 and lines[3]["nonfinite_steps"] == 0
    assert load_metrics(tmp_path / "metrics.jsonl") == lines
    with pytest.raises(ValueError):
        logger.log_train(3, 0, 1.0)  # closed
    with MetricsLogger(tmp_path / "other", plot_every_seconds=3600) as other:
        with pytest.raises(ValueError, match="reserved"):
            other.log_train(1, 0, 1.0, kind="x")


def test_png_is_valid_and_updates(tmp_path):
    plot = tmp_path / "training_metrics.png"
    logger = MetricsLogger(tmp_path, plot, plot_every_seconds=0)  # 0: every call redraws
    _log_steps(logger, [1])
    _assert_valid_png(plot)
    before = plot.read_bytes()
    logger.plot_every_seconds = 3600  # log a stretch without paying for a render per step...
    _log_steps(logger, range(2, 30))
    logger.plot_every_seconds = 0
    logger.log_val(29, 0, 1.0)  # ...then one more call redraws it all
    _assert_valid_png(plot)
    assert plot.read_bytes() != before
    logger.close()
    _assert_valid_png(plot)


def test_plot_is_throttled_but_close_always_redraws(tmp_path):
    plot = tmp_path / "training_metrics.png"
    logger = MetricsLogger(tmp_path, plot, plot_every_seconds=3600)
    _log_steps(logger, [1])  # the first log draws straight away
    assert plot.exists()
    data, stat = plot.read_bytes(), plot.stat()
    _log_steps(logger, range(2, 20))
    logger.log_val(19, 0, 1.2)
    assert plot.read_bytes() == data and plot.stat().st_mtime_ns == stat.st_mtime_ns
    assert plot.stat().st_ino == stat.st_ino
    logger.close()
    assert plot.read_bytes() != data
    _assert_valid_png(plot)


def test_end_epoch_always_redraws(tmp_path):
    plot = tmp_path / "training_metrics.png"
    with MetricsLogger(tmp_path, plot, plot_every_seconds=3600) as logger:
        _log_steps(logger, range(1, 4))
        data = plot.read_bytes()
        logger.end_epoch(0)
        assert plot.read_bytes() != data


def test_atomic_write_leaves_no_temp_files_and_survives_a_failed_render(tmp_path, monkeypatch, caplog):
    plot = tmp_path / "training_metrics.png"
    logger = MetricsLogger(tmp_path, plot, plot_every_seconds=0)
    _log_steps(logger, range(1, 4))
    assert _side_files(tmp_path) == []
    good = plot.read_bytes()
    _assert_valid_png(plot)

    real_save = metrics._save_png

    def half_then_crash(figure, handle):
        real_save(figure, handle)
        handle.seek(0)
        handle.truncate(len(good) // 2)  # a half-written image in the temp file...
        raise OSError("disk full")  # ...then the render dies

    monkeypatch.setattr(metrics, "_save_png", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        logger.plot()
    assert plot.read_bytes() == good
    _assert_valid_png(plot)
    assert _side_files(tmp_path) == []

    with caplog.at_level(logging.WARNING, logger="training.metrics"):
        _log_steps(logger, [4])  # during training a render failure only warns
    assert f"could not write {plot} (disk full)" in caplog.text
    assert plot.read_bytes() == good
    assert _side_files(tmp_path) == []
    assert _lines(tmp_path / "metrics.jsonl")[-1]["step"] == 4  # the log line itself was kept

    monkeypatch.setattr(metrics, "_save_png", real_save)
    logger.close()
    assert plot.read_bytes() != good
    _assert_valid_png(plot)
    assert _side_files(tmp_path) == []


def test_a_plot_that_cannot_be_written_is_one_warning_line(tmp_path, caplog):
    """A full disk (here: the plot's folder replaced by a file, so every write into it fails) would otherwise
    print a traceback from the plot thread at every redraw."""
    plots = tmp_path / "plots"
    logger = MetricsLogger(tmp_path / "run", plots / "training_metrics.png", plot_every_seconds=0, background=True)
    plots.rmdir()
    plots.write_text("a file where the folder was")
    with caplog.at_level(logging.WARNING, logger="training.metrics"):
        for step in range(1, 5):
            _log_steps(logger, [step])
            logger.wait()
    (warning,) = caplog.records
    assert warning.exc_info is None and "Traceback" not in caplog.text
    assert warning.getMessage().startswith(f"could not write {plots / 'training_metrics.png'} ([Errno 20] Not a "
                                           "directory")
    assert "training goes on" in warning.getMessage()

    plots.unlink()
    plots.mkdir()
    _log_steps(logger, [5])  # once writes work again, so does the plot...
    logger.wait()
    _assert_valid_png(plots / "training_metrics.png")
    plots.joinpath("training_metrics.png").unlink()
    plots.rmdir()
    plots.write_text("and gone again")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.metrics"):
        _log_steps(logger, [6])
        logger.close()
    assert len(caplog.records) == 1  # ...and a new failure is reported again, once
    assert [r["step"] for r in load_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_resume_drops_later_steps_and_tolerates_truncated_last_line(tmp_path, caplog, drawn):
    plot = tmp_path / "training_metrics.png"
    with MetricsLogger(tmp_path, plot, plot_every_seconds=3600) as logger:
        _log_steps(logger, range(1, 6), epoch=0)
        logger.log_val(5, 0, 1.6)
        logger.end_epoch(0)
        _log_steps(logger, range(6, 11), epoch=1)
        logger.log_val(10, 1, 1.4)
    path = tmp_path / "metrics.jsonl"
    with path.open("ab") as handle:  # the process died in the middle of writing step 11
        handle.write(b'{"kind": "train", "step": 11, "time": 1.0, "lo')

    with caplog.at_level(logging.WARNING, logger="training.metrics"):
        records = load_metrics(path)
    assert "truncated last line" in caplog.text
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 11))

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.metrics"):
        logger = MetricsLogger.resume(tmp_path, plot, step=7, plot_every_seconds=3600)
    assert "truncated last line" in caplog.text
    history = logger.records
    assert [r["step"] for r in history if r["kind"] == "train"] == list(range(1, 8))
    assert [r["step"] for r in history if r["kind"] == "val"] == [5]
    assert [r["epoch"] for r in history if r["kind"] == "epoch"] == [0]
    assert logger.last_step == 7
    # the file was rewritten to the history being continued: nothing past step 7, no truncated fragment
    assert [(r["kind"], r["step"]) for r in _lines(path)] == [(r["kind"], r["step"]) for r in history]

    drawn.clear()
    logger.log_train(8, 1, 1.0, 1e-4, 1.0, 1000.0)
    # the plot continues the restored history
    assert [r["step"] for r in drawn[-1] if r["kind"] == "train"] == list(range(1, 9))
    mean = logger.end_epoch(1)
    logger.close()
    expected = [2.0 / (1 + 0.1 * s) for s in (6, 7)] + [1.0]  # epoch 1 mean spans the resume
    assert mean == pytest.approx(sum(expected) / 3)
    final = load_metrics(path)
    assert [r["step"] for r in final if r["kind"] == "train"] == list(range(1, 9))
    assert [r["step"] for r in final if r["kind"] == "val"] == [5]

    # the constructor form does the same; resuming a run that has no log yet starts empty
    with MetricsLogger(tmp_path, plot, 3600, resume=True, resume_step=3) as again:
        assert [r["step"] for r in again.records if r["kind"] == "train"] == [1, 2, 3]
    with MetricsLogger(tmp_path / "fresh", resume=True, resume_step=100) as fresh:
        assert fresh.records == [] and fresh.last_step is None


def test_nan_values_log_as_null_and_plot_as_gaps(tmp_path):
    plot = tmp_path / "training_metrics.png"
    logger = MetricsLogger(tmp_path, plot, plot_every_seconds=3600)  # end_epoch and close() still draw
    logger.log_train(1, 0, 2.0, 1e-4, 1.0, 900.0)
    logger.log_train(2, 0, float("nan"), 1e-4, float("inf"), 950.0)
    logger.log_train(3, 0, 1.8, float("nan"), 0.0, float("-inf"))  # grad norm 0: no log scale, no crash
    logger.log_val(3, 0, float("nan"))
    mean = logger.end_epoch(0)
    logger.log_train(4, 1, float("nan"), None, None, None)
    assert logger.end_epoch(1) is None  # no finite loss in the epoch
    logger.close()
    text = (tmp_path / "metrics.jsonl").read_text()  # strict JSON: json.loads would accept NaN, so check the text
    assert "NaN" not in text and "Infinity" not in text
    lines = _lines(tmp_path / "metrics.jsonl")
    assert lines[1]["loss"] is None and lines[1]["grad_norm"] is None and lines[1]["lr"] == 1e-4
    assert lines[2]["lr"] is None and lines[2]["tokens_per_s"] is None
    assert lines[3]["kind"] == "val" and lines[3]["loss"] is None
    assert mean == pytest.approx(1.9)
    assert lines[4]["nonfinite_steps"] == 1 and lines[4]["train_steps"] == 3
    assert lines[6]["kind"] == "epoch" and lines[6]["train_loss_mean"] is None
    _assert_valid_png(plot)

    # only NaN, or nothing at all, still draws
    with MetricsLogger(tmp_path / "all_nan", plot_every_seconds=0) as only_nan:
        only_nan.log_train(1, 0, float("nan"), float("nan"), float("nan"), float("nan"))
    _assert_valid_png(tmp_path / "all_nan" / "training_metrics.png")
    MetricsLogger(tmp_path / "empty").close()
    _assert_valid_png(tmp_path / "empty" / "training_metrics.png")


def test_leaves_the_callers_backend_alone(tmp_path):
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('template')\n"
        "from training.metrics import MetricsLogger\n"
        f"logger = MetricsLogger({str(tmp_path)!r}, plot_every_seconds=0)\n"
        "logger.log_train(1, 0, 1.0, 1e-4, 1.0, 100.0)\n"
        "logger.close()\n"
        "assert matplotlib.get_backend() == 'template', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env.pop("MPLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    _assert_valid_png(tmp_path / "training_metrics.png")


def test_long_series_are_thinned_to_an_envelope_that_keeps_spikes_and_gaps():
    steps = np.arange(1, 100_001, dtype=float)
    values = np.full(steps.shape, 1.0)
    values[54_321] = 50.0  # one spike
    values[10_000:10_500] = np.nan  # a stretch of non-finite losses
    x, y = metrics._thin(steps, values, max_points=2000)
    assert len(x) == len(y) <= 2000
    assert np.nanmax(y) == 50.0 and x[np.nanargmax(y)] == 54_322
    gap = np.isnan(y)
    assert gap.any() and np.all((x[gap] > 10_000 - 100) & (x[gap] < 10_500 + 100))
    assert np.all(np.diff(x) >= 0)  # still in step order
    short_x, short_y = metrics._thin(steps[:50], values[:50], max_points=2000)
    assert short_x is steps[:50] or np.array_equal(short_x, steps[:50])


# ------------------------------------------------------------------------------------ what a person sees

def test_figure_reads_at_a_glance(tmp_path):
    """The legend sits outside every panel, the gradient panel shows the clipping threshold and the share of
    clipped steps with plain-number ticks, and the title says how far the run is and how long is left."""
    records = []
    for step in range(1, 41):
        records.append({"kind": "train", "step": step, "time": 1000.0 + 2.0 * step, "epoch": 0,
                        "loss": 3.0 - step / 40, "lr": 1e-4, "grad_norm": 0.05 * 1.2 ** step,
                        "tokens_per_s": 900.0})
    records.append({"kind": "val", "step": 40, "time": 1090.0, "epoch": 0, "loss": 2.5})
    figure = metrics._build_figure(records, 0.9, "run", max_grad_norm=1.0)
    loss_ax, lr_ax, grad_ax, speed_ax = figure.axes
    assert all(ax.get_legend() is None for ax in figure.axes)  # no legend drawn over a curve
    (legend,) = figure.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert "validation" in labels and "max_grad_norm = 1" in labels
    figure.canvas.draw()
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in figure.axes)
    clipped = sum(0.05 * 1.2 ** s > 1.0 for s in range(1, 41)) / 40
    assert grad_ax.get_title().endswith(f"{clipped:.0%} of steps clipped")
    assert any(line.get_ydata()[0] == 1.0 and line.get_linestyle() == "--" for line in grad_ax.get_lines())
    assert grad_ax.get_yscale() == "log"
    ticks = [t.get_text() for t in grad_ax.get_yticklabels() if t.get_text()]
    assert ticks and all("$" not in t and "^" not in t for t in ticks)  # "0.1", "0.2", "0.5", "1", ...

    logger = MetricsLogger(tmp_path, plot_every_seconds=3600, total_steps=100, max_grad_norm=1.0)
    for r in records:
        if r["kind"] == "train":
            logger._remember(r)
    title = logger._title()
    assert "step 40/100, epoch 1, ETA 0:02:00" in title  # 60 steps left at 2 s each; epochs counted from 1
    logger.close()


def test_background_redraw_never_blocks_a_training_step(tmp_path, monkeypatch):
    """With background=True a due redraw runs in another thread: log_train returns while the render is still
    going (here held until the test lets it finish), and close() waits for it and draws the final image."""
    import threading

    started, release, threads = threading.Event(), threading.Event(), []
    real = metrics.render_plot

    def slow_render(records, path, **kwargs):
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(timeout=30)
        real(records, path, **kwargs)

    monkeypatch.setattr(metrics, "render_plot", slow_render)
    logger = MetricsLogger(tmp_path, plot_every_seconds=0, background=True, total_steps=10)
    _log_steps(logger, [1])
    assert started.wait(timeout=30)
    _log_steps(logger, range(2, 6))  # returns although the first render is still held
    assert not release.is_set() and len(threads) == 1  # a render in flight is not stacked up
    assert threads[0] == "training-metrics-plot"
    release.set()
    logger.close()
    assert threads[-1] == threading.current_thread().name  # the final draw, after waiting for the one in flight
    _assert_valid_png(tmp_path / "training_metrics.png")
