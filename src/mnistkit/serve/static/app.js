// The drawing page: strokes on a canvas -> PNG -> POST /api/predict -> the number read, a box
// around each digit with its probability, and the 28 x 28 images the model saw.
// Plain JavaScript, no libraries, no build step; works offline against `mnistkit serve`.
"use strict";

(() => {
  // Brush width as a fraction of the canvas height. A digit drawn across most of the height is
  // scaled to MNIST's 20-pixel box, where pen strokes are 2-3 pixels wide: 0.07 lands there.
  const BRUSH = 0.07;
  const DEBOUNCE_MS = 120; // live prediction while drawing, at most one request in flight
  const EXPORT_HEIGHT = 280; // px; the width follows the pad's shape (a wide pad: 2 x 280)

  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const boxes = document.getElementById("boxes");
  const digitsEl = document.getElementById("digits");
  const topList = document.getElementById("top");
  const result = document.getElementById("result");
  const labelEl = document.getElementById("label");
  const guessLine = document.getElementById("guess-line");
  const confidence = document.getElementById("confidence");
  const note = document.getElementById("note");
  const statusEl = document.getElementById("status");
  const hint = document.getElementById("hint");
  const undoBtn = document.getElementById("undo");
  const clearBtn = document.getElementById("clear");
  const bars = Array.from(document.querySelectorAll("#top li"));

  // Each stroke: {points: [{x, y, w}]} in units of the pad's height (y in 0..1, x in 0..width
  // / height), w = width factor: a phone turned sideways keeps the drawing's shape.
  const strokes = [];
  let current = null;
  let timer = 0;
  let inFlight = false;
  let again = false;
  let sent = 0; // request sequence number: only the newest answer is shown

  // ---- drawing -------------------------------------------------------------------------

  function inkColor() {
    return getComputedStyle(pad).getPropertyValue("--ink").trim() || "#111";
  }

  function resize() {
    const rect = pad.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    pad.width = Math.round(rect.width * dpr);
    pad.height = Math.round(rect.height * dpr);
    redraw();
  }

  function redraw() {
    ctx.clearRect(0, 0, pad.width, pad.height);
    for (const s of strokes) drawStroke(ctx, s, pad.height, inkColor());
    if (current) drawStroke(ctx, current, pad.height, inkColor());
  }

  // A smooth line through the points: quadratic curves between midpoints, round ends, the
  // width following pen pressure. The same routine draws the screen and the exported image.
  function drawStroke(c, stroke, size, color) {
    const pts = stroke.points;
    const base = BRUSH * size;
    c.strokeStyle = color;
    c.fillStyle = color;
    c.lineCap = "round";
    c.lineJoin = "round";
    if (pts.length === 1) {
      c.beginPath();
      c.arc(pts[0].x * size, pts[0].y * size, (base * pts[0].w) / 2, 0, 2 * Math.PI);
      c.fill();
      return;
    }
    let prevMid = { x: pts[0].x, y: pts[0].y };
    for (let i = 1; i < pts.length; i++) {
      const p = pts[i - 1];
      const q = pts[i];
      const mid = i === pts.length - 1 ? q : { x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 };
      c.lineWidth = base * (p.w + q.w) / 2;
      c.beginPath();
      c.moveTo(prevMid.x * size, prevMid.y * size);
      c.quadraticCurveTo(p.x * size, p.y * size, mid.x * size, mid.y * size);
      c.stroke();
      prevMid = mid;
    }
  }

  function pointOf(e) {
    const rect = pad.getBoundingClientRect();
    // Mouse and touch report a constant pressure; only a pen's pressure shapes the line.
    const w = e.pointerType === "pen" && e.pressure > 0 ? 0.55 + 0.9 * e.pressure : 1;
    const aspect = rect.width / rect.height;
    return {
      x: Math.min(aspect, Math.max(0, (e.clientX - rect.left) / rect.height)),
      y: Math.min(1, Math.max(0, (e.clientY - rect.top) / rect.height)),
      w,
    };
  }

  pad.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    current = { points: [pointOf(e)], pointerId: e.pointerId };
    hint.hidden = true;
    redraw();
  });

  pad.addEventListener("pointermove", (e) => {
    if (!current || e.pointerId !== current.pointerId) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) current.points.push(pointOf(ev));
    redraw();
    schedulePredict(DEBOUNCE_MS);
  });

  function endStroke(e) {
    if (!current || e.pointerId !== current.pointerId) return;
    strokes.push({ points: current.points });
    current = null;
    redraw();
    updateButtons();
    schedulePredict(0);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    afterEdit();
  }

  function clear() {
    if (!strokes.length) return;
    strokes.length = 0;
    afterEdit();
  }

  function afterEdit() {
    redraw();
    updateButtons();
    if (strokes.length) schedulePredict(0);
    else showIdle();
  }

  function updateButtons() {
    undoBtn.disabled = clearBtn.disabled = strokes.length === 0;
    hint.hidden = strokes.length > 0 || current !== null;
  }

  undoBtn.addEventListener("click", undo);
  clearBtn.addEventListener("click", clear);

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.target instanceof HTMLInputElement) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      undo();
    } else if (e.ctrlKey || e.metaKey) {
      return;
    } else if (key === "u" || key === "backspace") {
      e.preventDefault();
      undo();
    } else if (key === "c" || key === "escape" || key === "delete") {
      e.preventDefault();
      clear();
    }
  });

  // ---- prediction ----------------------------------------------------------------------

  function schedulePredict(delay) {
    clearTimeout(timer);
    timer = setTimeout(predict, delay);
  }

  // The drawing as MNIST sees digits: white ink on black, whatever the page's colours.
  function exportPng() {
    const off = document.createElement("canvas");
    const rect = pad.getBoundingClientRect();
    off.height = EXPORT_HEIGHT;
    off.width = Math.round((EXPORT_HEIGHT * rect.width) / rect.height);
    const c = off.getContext("2d");
    c.fillStyle = "#000";
    c.fillRect(0, 0, off.width, off.height);
    const all = current ? strokes.concat([current]) : strokes;
    for (const s of all) drawStroke(c, s, EXPORT_HEIGHT, "#fff");
    return new Promise((resolve) => off.toBlob((blob) => resolve({ blob, width: off.width }), "image/png"));
  }

  async function predict() {
    const count = strokes.length + (current ? 1 : 0);
    if (!count) return;
    if (inFlight) {
      again = true; // one more round when the answer in flight is back
      return;
    }
    inFlight = true;
    const seq = ++sent;
    result.dataset.state = "pending";
    try {
      const { blob, width } = await exportPng();
      const resp = await fetch("/api/predict", {
        method: "POST",
        headers: { "Content-Type": "image/png" },
        body: blob,
      });
      const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
      if (seq === sent && strokes.length + (current ? 1 : 0) > 0) {
        if (resp.ok) show(body, count, width);
        else showError(body.error || `HTTP ${resp.status}`);
      }
    } catch (err) {
      showError(`cannot reach the server (${err.message})`);
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        schedulePredict(0);
      }
    }
  }

  function pct(p) {
    return p >= 0.995 ? "100%" : p < 0.005 ? "<1%" : `${Math.round(p * 100)}%`;
  }

  function show(r, count, width) {
    const digits = r.digits || [];
    const one = digits.length === 1 && r.label !== null && r.label !== undefined;
    labelEl.textContent = r.number || "?";
    labelEl.classList.toggle("long", (r.number || "").length > 2);
    if (!digits.length) {
      guessLine.textContent = "No digit found";
      confidence.textContent = "";
    } else if (one) {
      guessLine.textContent = `Looks like a ${r.label}`;
      confidence.textContent = `${pct(r.probabilities[r.label])} sure`;
    } else {
      guessLine.textContent = `Reads as ${r.number}: ${digits.length} digits`;
      const least = Math.min(...digits.map((d) => d.p));
      confidence.textContent = `least sure digit ${pct(least)}`;
    }
    const top = one ? r.top.slice(0, 3) : [];
    topList.hidden = !one;
    bars.forEach((li, i) => {
      const t = top[i];
      li.querySelector(".bar-label").textContent = t ? String(t.label) : "–";
      li.querySelector(".fill").style.width = t ? `${(t.p * 100).toFixed(1)}%` : "0";
      li.querySelector(".pct").textContent = t ? pct(t.p) : "–";
      li.classList.toggle("first", i === 0);
    });
    note.hidden = !r.not_digit;
    note.textContent = r.not_digit ? `Probably not a digit: ${r.not_digit}` : "";
    result.classList.toggle("unsure", Boolean(r.not_digit));
    showBoxes(digits, width);
    showDigits(digits);
    statusEl.textContent = "";
    result.dataset.state = "done";
    result.dataset.strokes = String(count);
    result.dataset.number = r.number || "";
  }

  // A box around each digit on the pad, in the exported image's pixels (280 high) -> percent.
  function showBoxes(digits, width) {
    boxes.replaceChildren(
      ...digits.map((d) => {
        const [x0, y0, x1, y1] = d.bbox;
        const el = document.createElement("div");
        el.className = "box";
        el.style.left = `${(100 * x0) / width}%`;
        el.style.top = `${(100 * y0) / EXPORT_HEIGHT}%`;
        el.style.width = `${(100 * (x1 - x0)) / width}%`;
        el.style.height = `${(100 * (y1 - y0)) / EXPORT_HEIGHT}%`;
        const tag = document.createElement("span");
        tag.textContent = `${d.label} · ${pct(d.p)}`;
        el.append(tag);
        return el;
      }),
    );
  }

  // Each digit's 28 x 28 input, enlarged, with its label and probability.
  function showDigits(digits) {
    digitsEl.replaceChildren(
      ...digits.map((d) => {
        const li = document.createElement("li");
        const c = document.createElement("canvas");
        c.width = c.height = 28;
        drawSeen(c.getContext("2d"), d.input28);
        const cap = document.createElement("span");
        cap.textContent = `${d.label} · ${pct(d.p)}`;
        li.append(c, cap);
        return li;
      }),
    );
  }

  function drawSeen(seenCtx, rows) {
    const img = seenCtx.createImageData(28, 28);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, rows[y][x])));
        const i = 4 * (28 * y + x);
        img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
        img.data[i + 3] = 255;
      }
    }
    seenCtx.putImageData(img, 0, 0);
  }

  function showIdle() {
    clearTimeout(timer);
    sent++; // an answer still in flight is for a drawing that is gone
    labelEl.textContent = "?";
    labelEl.classList.remove("long");
    guessLine.textContent = "Draw a digit or a number to see what the model reads.";
    confidence.textContent = "";
    note.hidden = true;
    topList.hidden = false;
    result.classList.remove("unsure");
    bars.forEach((li) => {
      li.querySelector(".bar-label").textContent = "–";
      li.querySelector(".fill").style.width = "0";
      li.querySelector(".pct").textContent = "–";
    });
    boxes.replaceChildren();
    digitsEl.replaceChildren();
    statusEl.textContent = "";
    result.dataset.state = "idle";
    result.dataset.strokes = "0";
    result.dataset.number = "";
  }

  function showError(message) {
    statusEl.textContent = `Could not read the drawing: ${message}`;
    result.dataset.state = "error";
  }

  // ---- start ---------------------------------------------------------------------------

  fetch("/api/health")
    .then((r) => r.json())
    .then((h) => {
      const m = h.model || {};
      const acc = typeof m.test_accuracy === "number" ? `, ${(m.test_accuracy * 100).toFixed(2)}% on MNIST test` : "";
      document.getElementById("model").textContent = `Model: ${m.recipe || "?"}${acc}`;
    })
    .catch(() => {});

  new ResizeObserver(resize).observe(pad);
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
  showIdle();
  resize();
})();
