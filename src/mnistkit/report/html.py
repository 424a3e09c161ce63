"""``report.html``: one page, no network, that a person can open from a run directory or a phone.

Images are embedded as base64 data URLs and the styles are inline, so the file can be mailed or
copied alone; a Content-Security-Policy forbids every fetch. Each metric carries its exact
``metrics.json`` value in a ``data-value`` attribute beside the rounded number people read,
so tests (and scripts) can check the page against the run.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistkit.fileio import write_text_atomic
from mnistkit.metrics import Calibration, ClassScores

if TYPE_CHECKING:
    from mnistkit.report import RunFiles

CSS = """
:root{--fg:#1c2230;--muted:#5d6675;--bg:#f3f5f8;--card:#fff;--line:#e2e6ec;--accent:#2457c5;
--bad:#b00020;--warn:#fff4e5}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 16px 48px}
header .kicker{color:var(--muted);font-size:13px;letter-spacing:.06em;text-transform:uppercase}
header h1{margin:2px 0 4px;font-size:30px;line-height:1.2;word-break:break-word}
header .sub{color:var(--muted);margin:0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(128px,1fr));gap:12px;margin:20px 0 4px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:12px 14px}
.card .label{color:var(--muted);font-size:12px;letter-spacing:.04em;text-transform:uppercase}
.card .value{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap}
.card.hero{border-color:var(--accent);box-shadow:inset 4px 0 0 var(--accent)}
.card.hero .value{color:var(--accent)}
section{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:18px 20px;margin-top:20px}
section h2{margin:0 0 4px;font-size:19px}
p.note{color:var(--muted);margin:0 0 14px;font-size:14px;max-width:75ch}
img{display:block;max-width:100%;height:auto;margin:0 auto}
.two{display:grid;grid-template-columns:minmax(0,1.15fr) minmax(0,1fr);gap:24px;align-items:start}
.two>div{min-width:0}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:14px;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
thead th{white-space:nowrap;color:var(--muted);font-weight:600;font-size:12px;letter-spacing:.04em;text-transform:uppercase}
tbody tr:hover{background:#f7f9fc}
tr.worst{background:var(--warn)}
tfoot td{font-weight:600;border-bottom:none}
table.kv td{text-align:left}
table.kv th{width:1%;padding-right:28px;font-weight:500;white-space:nowrap;color:var(--muted)}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
footer{color:var(--muted);font-size:13px;margin-top:28px;text-align:center}
@media (max-width:820px){.two{grid-template-columns:minmax(0,1fr)}header h1{font-size:24px}
section{padding:14px 12px}.card .value{font-size:20px}th,td{padding:6px 6px}img.wide{min-width:640px}}
"""


def fmt_metric(key: str, value: Any) -> str:
    """A metric as people read it: accuracies in %, losses to 4 places, seconds with a unit."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key.endswith("accuracy") or key.startswith(("ece", "test_ece")):
        return f"{100 * value:.2f} %"
    if key.endswith("loss"):
        return f"{value:.4f}"
    if key.endswith("per_second"):
        return f"{value:,.0f} /s"
    if key.endswith("seconds"):
        return f"{value:.1f} s"
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _img(path: Path, alt: str, wide: bool = False) -> str:
    """An embedded PNG. A wide one keeps a readable size on a phone and scrolls sideways."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = ' class="wide"' if wide else ""
    img = f'<img{cls} alt="{_e(alt)}" src="data:image/png;base64,{data}">'
    return f'<div class="scroll">{img}</div>' if wide else img


def _card(label: str, key: str, value: Any, hero: bool = False) -> str:
    cls = "card hero" if hero else "card"
    return (f'<div class="{cls}" data-metric="{_e(key)}" data-value="{_e(json.dumps(value))}">'
            f'<div class="label">{_e(label)}</div><div class="value">{_e(fmt_metric(key, value))}'
            "</div></div>")  # fmt: skip


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict) and obj:
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), obj)]


def _kv_table(rows: list[tuple[str, Any]], metrics: bool = False) -> str:
    body = []
    for key, value in rows:
        if metrics:
            cell = (f'<td data-value="{_e(json.dumps(value))}">'
                    f"{_e(fmt_metric(key, value))}</td>")  # fmt: skip
            body.append(f'<tr data-metric="{_e(key)}"><th>{_e(key)}</th>{cell}</tr>')
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            body.append(f"<tr><th>{_e(key)}</th><td><code>{_e(text)}</code></td></tr>")
    return f'<div class="scroll"><table class="kv"><tbody>{"".join(body)}</tbody></table></div>'


def _class_table(scores: ClassScores, cm: np.ndarray, classes: Sequence[str]) -> str:
    worst = int(np.argmin(scores.f1))
    rows = []
    for k, name in enumerate(classes):
        errors = int(scores.support[k] - cm[k, k])
        rows.append(
            f'<tr{" class=worst" if k == worst else ""} data-class="{k}">'
            f"<td>{_e(name)}</td><td>{100 * scores.precision[k]:.2f}</td>"
            f"<td>{100 * scores.recall[k]:.2f}</td><td>{100 * scores.f1[k]:.2f}</td>"
            f"<td>{int(scores.support[k]):,}</td><td>{errors:,}</td></tr>"
        )
    total, right = int(cm.sum()), int(np.trace(cm))
    foot = (f"<tr><td>macro mean</td><td>{100 * scores.precision.mean():.2f}</td>"
            f"<td>{100 * scores.recall.mean():.2f}</td><td>{100 * scores.macro_f1:.2f}</td>"
            f"<td>{total:,}</td><td>{total - right:,}</td></tr>")  # fmt: skip
    head = ("<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>images</th><th>wrong</th></tr>")  # fmt: skip
    return (f'<div class="scroll"><table id="per-class"><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table></div>")  # fmt: skip


def render_html(
    run: RunFiles,
    paths: dict[str, Path],
    *,
    cm: np.ndarray,
    scores: ClassScores,
    cal: Calibration,
    classes: Sequence[str],
    errors_shown: int,
    before: Calibration | None = None,
) -> None:
    """Write ``paths["html"]`` from the run and the PNGs already written at ``paths[...]``;
    ``cal`` is the reliability of the probabilities the run reports, ``before`` that of the
    model's own when the run has a temperature."""
    from mnistkit.version import __version__

    m, cfg = run.metrics, run.config
    total, right = int(cm.sum()), int(np.trace(cm))
    model = cfg.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    facts = [f"{run.dataset}", f"model {model_name}" if model_name else "",
             f"{m.get('epochs')} epochs" if m.get("epochs") is not None else "",
             f"seed {m.get('seed')}" if m.get("seed") is not None else "",
             f"on {m.get('device')}" if m.get("device") else ""]  # fmt: skip
    cards = [_card("Test accuracy", "test_accuracy", m.get("test_accuracy"), hero=True),
             _card("Test loss", "test_loss", m.get("test_loss")),
             _card("Train accuracy", "train_accuracy", m.get("train_accuracy"))]  # fmt: skip
    if m.get("val_accuracy") is not None:
        cards.append(_card("Val accuracy", "val_accuracy", m.get("val_accuracy")))
    cards += [_card("Training time", "train_seconds", m.get("train_seconds")),
              f'<div class="card" data-metric="errors" data-value="{total - right}"><div class="label">'
              f'Wrong of {total:,}</div><div class="value">{total - right:,}</div></div>',
              _card("Calibration error", "ece", cal.ece)]  # fmt: skip
    if before is not None:
        cards.append(_card("ECE before calibration", "ece_uncalibrated", before.ece))
    gap = _gap_sentence(m)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{_e(run.name)} — mnistkit report</title><style>{CSS}</style></head>
<body><main>
<header><div class="kicker">mnistkit report</div><h1>{_e(run.name)}</h1>
<p class="sub">{_e(" · ".join(f for f in facts if f))}</p></header>
<div class="cards">{"".join(cards)}</div>

<section id="curves"><h2>Training curves</h2>
<p class="note">Loss and accuracy after each epoch on the images the model trained on (blue) and
on held-out validation images (orange), if the run kept some. The red band is the gap between
them: the model doing better on images it has seen than on new ones; when it widens while
validation stops improving, the model is overfitting. Right of the last epoch are the final
model's train (◇) and test (★) figures and the gap between them. {_e(gap)}</p>
{_img(paths["curves"], "training curves", wide=True)}</section>

<section id="confusion"><h2>Which digits get confused</h2>
<p class="note">Rows are the true class, columns the prediction; each cell counts test images.
Blue: right answers. Red: mistakes, darker where a larger share of the true class goes there.
{right:,} of {total:,} test images are right. The highlighted row of the table is the weakest
class by F1.</p>
<div class="two"><div>{_img(paths["confusion"], "confusion matrix")}</div>
<div>{_class_table(scores, cm, classes)}
<p class="note">Precision, recall and F1 in %.</p></div></div></section>

<section id="errors"><h2>What the mistakes look like</h2>
<p class="note">The {errors_shown} misclassified test images the model was surest about, most
confident first: true class → prediction, the probability it gave that prediction, and the
image's index in the test set. Many are ones a person would hesitate over too.</p>
{_img(paths["errors"], "misclassified test images", wide=True)}</section>

<section id="calibration"><h2>How sure, and how right</h2>
<p class="note">Predictions grouped by confidence (the top probability). A calibrated model
that says 90 % is right 90 % of the time, so its bars reach the dashed line; red shows
overconfidence, gold underconfidence. {_e(_calibration_sentence(cfg, cal, before))}</p>
{_img(paths["calibration"], "reliability diagram")}</section>

<section id="metrics"><h2>Metrics</h2>
<p class="note">Everything in <code>metrics.json</code>.</p>
{_kv_table(list(m.items()), metrics=True)}</section>

<section id="config"><h2>Configuration</h2>
<p class="note">Everything in <code>config.json</code>: enough to train this run again.</p>
{_kv_table(_flatten(cfg))}</section>

<footer>Generated {_e(time.strftime("%Y-%m-%d %H:%M"))} by mnistkit {_e(__version__)} from
<code>{_e(run.path.resolve())}</code></footer>
</main></body></html>
"""
    write_text_atomic(paths["html"], page)


def _calibration_sentence(cfg: dict[str, Any], cal: Calibration, before: Calibration | None) -> str:
    """What the run did to calibrate its probabilities, and the expected calibration errors."""
    from mnistkit.calibration import temperature_of

    info = cfg.get("calibration")
    info = info if isinstance(info, dict) else {}
    n, source = info.get("images"), info.get("source")
    ece = f"Expected calibration error (ECE, 15 bins) on the test split: {100 * cal.ece:.2f} %"
    if before is None:
        why = (" the run held out no training images to fit a temperature on"
               if source == "none" else " it was trained before runs were calibrated")  # fmt: skip
        return f"{ece}. These are the model's own probabilities (T = 1):{why}."
    where = f" on {n:,} held-out training images ({source})" if isinstance(n, int) else ""
    return (f"The logits are divided by a temperature T = {temperature_of(cfg):.3g}, fitted"
            f"{where}, never the test split. {ece} after, {100 * before.ece:.2f} % before.")  # fmt: skip


def _gap_sentence(m: dict[str, Any]) -> str:
    """The final train-vs-test accuracy gap in words, as the tutorials discuss it."""
    tr, te = m.get("train_accuracy"), m.get("test_accuracy")
    if not isinstance(tr, int | float) or not isinstance(te, int | float):
        return ""
    gap = 100 * (tr - te)
    if gap > 0:
        return f"At the end, train accuracy is {gap:.2f} points above test accuracy."
    return f"At the end, test accuracy is {-gap:.2f} points above train accuracy (no overfitting)."
