// Plain SVG charts: no library, no build step. Every label is set with
// textContent, never parsed as HTML (model names and tags come from clients).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                 "#475569", "#ea580c"];

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, value, attrs) {
  const node = el("text", Object.assign({x, y}, attrs || {}), parent);
  node.textContent = value;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function timeLabel(ms, bucketMs) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  if (bucketMs >= 86400000) return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}

function legend(container, series) {
  const box = document.createElement("div");
  box.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color || PALETTE[i % PALETTE.length];
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(s.label));
    box.appendChild(item);
  });
  container.appendChild(box);
}

// series: [{label, values: [number|null], color?}] over buckets (epoch ms).
// kind: "line" or "stacked" (stacked bars).
function timeChart(container, buckets, series, opts) {
  const o = Object.assign({width: 560, height: 220, kind: "line", format: (v) => String(v), bucketMs: 3600000}, opts);
  container.textContent = "";
  const pad = {l: 56, r: 10, t: 10, b: 26};
  const svg = el("svg", {viewBox: `0 0 ${o.width} ${o.height}`, role: "img", class: "chart"}, container);
  const w = o.width - pad.l - pad.r, h = o.height - pad.t - pad.b;
  let max = 0;
  if (o.kind === "stacked") {
    buckets.forEach((_, i) => {
      max = Math.max(max, series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    });
  } else {
    series.forEach((s) => s.values.forEach((v) => { if (v !== null && v > max) max = v; }));
  }
  max = niceMax(max);
  for (let k = 0; k <= 4; k++) {
    const y = pad.t + h - (h * k) / 4;
    el("line", {x1: pad.l, x2: pad.l + w, y1: y, y2: y, class: "grid"}, svg);
    text(svg, pad.l - 6, y + 4, (o.axisFormat || o.format)((max * k) / 4), {"text-anchor": "end", class: "axis"});
  }
  const n = Math.max(buckets.length, 1);
  const x = (i) => pad.l + (w * (i + 0.5)) / n;
  const y = (v) => pad.t + h - (h * v) / max;
  const ticks = Math.min(6, n);
  for (let k = 0; k < ticks; k++) {
    const i = Math.round((k * (n - 1)) / Math.max(ticks - 1, 1));
    if (buckets[i] !== undefined) text(svg, x(i), o.height - 8, timeLabel(buckets[i], o.bucketMs),
                                        {"text-anchor": "middle", class: "axis"});
  }
  if (o.kind === "stacked") {
    const bw = Math.max(1, (w / n) * 0.8);
    const base = new Array(n).fill(0);
    series.forEach((s, si) => {
      const color = s.color || PALETTE[si % PALETTE.length];
      s.values.forEach((v, i) => {
        if (!v) return;
        const top = base[i] + v;
        const rect = el("rect", {x: x(i) - bw / 2, y: y(top), width: bw, height: Math.max(0.5, y(base[i]) - y(top)),
                                 fill: color, class: "bar"}, svg);
        el("title", {}, rect).textContent = `${s.label}: ${o.format(v)}`;
        base[i] = top;
      });
    });
  } else {
    series.forEach((s, si) => {
      const color = s.color || PALETTE[si % PALETTE.length];
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        const dot = el("circle", {cx: x(i), cy: y(v), r: 2.2, fill: color, class: "dot"}, svg);
        el("title", {}, dot).textContent = `${s.label}: ${o.format(v)}`;
      });
      if (d) el("path", {d, stroke: color, fill: "none", "stroke-width": 1.8, class: "line"}, svg);
    });
  }
  if (series.length > 1 || o.legend) legend(container, series);
  return svg;
}

// rows: [{label, value}] as horizontal bars.
function barChart(container, rows, opts) {
  const o = Object.assign({width: 360, format: (v) => String(v), color: PALETTE[0]}, opts);
  container.textContent = "";
  const rowH = 22, pad = {l: 120, r: 70};
  const height = Math.max(rowH, rows.length * rowH) + 4;
  const svg = el("svg", {viewBox: `0 0 ${o.width} ${height}`, role: "img", class: "chart bars"}, container);
  const max = Math.max(...rows.map((r) => r.value || 0), 0) || 1;
  const w = o.width - pad.l - pad.r;
  rows.forEach((r, i) => {
    const yy = i * rowH + 2;
    text(svg, pad.l - 6, yy + 14, r.label.length > 18 ? r.label.slice(0, 17) + "…" : r.label,
         {"text-anchor": "end", class: "label"});
    const rect = el("rect", {x: pad.l, y: yy + 3, width: Math.max(1, (w * (r.value || 0)) / max), height: rowH - 8,
                             fill: r.color || o.color, class: "bar"}, svg);
    el("title", {}, rect).textContent = `${r.label}: ${o.format(r.value)}`;
    text(svg, pad.l + Math.max(1, (w * (r.value || 0)) / max) + 4, yy + 14, o.format(r.value), {class: "value"});
  });
  return svg;
}

window.Charts = {timeChart, barChart, PALETTE};
