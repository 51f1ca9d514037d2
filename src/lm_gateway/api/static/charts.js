/*
 * A tiny dependency-free line chart on <canvas>, for the dashboard's 15-minute series.
 *
 * Why our own: the page must work offline with no build step, and all it needs is a few lines over
 * time with gaps, a zero-based y axis with round ticks and a legend. Everything is drawn with
 * fillText/stroke, so no data ever becomes markup.
 */
(() => {
  "use strict";

  const PAD = { left: 46, right: 10, top: 20, bottom: 20 };
  const FONT = "11px system-ui, sans-serif";
  const Y_TICKS = 4;

  /** The smallest "round" number (1, 2, 2.5 or 5 times a power of ten) at or above value. */
  function roundUp(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= value * 0.999) return step * power;
    }
    return 10 * power;
  }

  /** How many decimals a tick step needs to be shown exactly (0.25 needs two). */
  function decimalsOf(step) {
    const text = String(Number(step.toPrecision(3)));
    const dot = text.indexOf(".");
    return dot < 0 ? 0 : text.length - dot - 1;
  }

  function cssVar(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  /** Size the canvas backing store to its CSS size times the pixel ratio; returns the CSS size. */
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  function drawAxes(ctx, box, tick, format, times, stepSecs) {
    ctx.font = FONT;
    ctx.lineWidth = 1;
    ctx.strokeStyle = cssVar("--line", "#283041");
    ctx.fillStyle = cssVar("--muted", "#8a93a6");
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= Y_TICKS; i++) {
      const y = Math.round(box.y + box.h * (1 - i / Y_TICKS)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(box.x, y);
      ctx.lineTo(box.x + box.w, y);
      ctx.stroke();
      ctx.fillText(format(tick * i, decimalsOf(tick)), box.x - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const last = times.length - 1;
    const every = Math.max(1, Math.round(300 / stepSecs)); // a label every five minutes
    for (let i = last; i >= 0; i -= every) {
      const minutes = Math.round(((last - i) * stepSecs) / 60);
      const x = box.x + (box.w * i) / Math.max(1, last);
      ctx.fillText(minutes ? `-${minutes}m` : "now", Math.min(x, box.x + box.w - 12), box.y + box.h + 5);
    }
  }

  function drawSeries(ctx, box, top, values, color) {
    const last = values.length - 1;
    const xAt = (i) => box.x + (box.w * i) / Math.max(1, last);
    const yAt = (v) => box.y + box.h * (1 - Math.min(v, top) / top);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 1.6;
    ctx.lineJoin = "round";
    ctx.beginPath();
    let pen = false;
    values.forEach((v, i) => {
      if (v == null) {
        pen = false;
        return;
      }
      if (pen) ctx.lineTo(xAt(i), yAt(v));
      else ctx.moveTo(xAt(i), yAt(v));
      pen = true;
    });
    ctx.stroke();
    values.forEach((v, i) => {
      // A point with no neighbour would be invisible as a line: show it as a dot.
      if (v != null && values[i - 1] == null && values[i + 1] == null) {
        ctx.beginPath();
        ctx.arc(xAt(i), yAt(v), 2, 0, 2 * Math.PI);
        ctx.fill();
      }
    });
  }

  function drawLegend(ctx, box, series) {
    ctx.font = FONT;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    let x = box.x;
    for (const s of series) {
      ctx.fillStyle = s.color;
      ctx.fillRect(x, 4, 10, 10);
      ctx.fillStyle = cssVar("--text", "#d9dee8");
      ctx.fillText(s.label, x + 14, 9);
      x += 22 + ctx.measureText(s.label).width;
    }
  }

  function drawEmpty(ctx, box) {
    ctx.font = FONT;
    ctx.fillStyle = cssVar("--muted", "#8a93a6");
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("no traffic yet", box.x + box.w / 2, box.y + box.h / 2);
  }

  const plain = (value, decimals) => value.toFixed(decimals);

  /**
   * Draw a chart: {times: [epoch s], stepSecs, series: [{label, color, values: [number|null]}],
   * format: (value, decimals) => string (optional)}. Redraws everything; cheap at this size.
   */
  function draw(canvas, chart) {
    const { ctx, width, height } = prepare(canvas);
    if (!width || !height) return;
    const box = {
      x: PAD.left,
      y: PAD.top,
      w: width - PAD.left - PAD.right,
      h: height - PAD.top - PAD.bottom,
    };
    let max = 0;
    let points = 0;
    for (const s of chart.series) {
      for (const v of s.values) {
        if (v == null) continue;
        points += 1;
        if (v > max) max = v;
      }
    }
    const tick = roundUp(max / Y_TICKS);
    const top = tick * Y_TICKS;
    drawAxes(ctx, box, tick, chart.format || plain, chart.times, chart.stepSecs);
    if (!points) drawEmpty(ctx, box);
    for (const s of chart.series) drawSeries(ctx, box, top, s.values, s.color);
    drawLegend(ctx, box, chart.series);
  }

  window.LmgCharts = { draw };
})();
