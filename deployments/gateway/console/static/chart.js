// The cluster chart as SVG built with createElementNS: requests per interval as bars (left axis)
// and p95 latency as a line (right axis). Colours come from app.css classes, not inline styles.

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 720;
const HEIGHT = 240;
const PAD = { left: 48, right: 56, top: 28, bottom: 28 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round upper bound for an axis (1, 2, 5 x 10^n) so ticks read well. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

const formatSeconds = (s) => (s >= 1 ? `${s.toFixed(s >= 10 ? 0 : 1)} s` : `${Math.round(s * 1000)} ms`);

function clock(t) {
  const date = new Date(t * 1000);
  return `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
}

/**
 * Draws `points` ([{t, requests, errors, latency_p95_s}]) into `target` (an <svg>).
 * `labels`: {requests, p95, empty} as already translated text.
 */
export function renderChart(target, points, labels) {
  target.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  target.setAttribute('role', 'img');
  target.setAttribute('aria-label', `${labels.requests} / ${labels.p95}`);
  target.replaceChildren();
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const bottom = PAD.top + plotH;
  target.append(svg('rect', { class: 'chart-frame', x: PAD.left, y: PAD.top, width: plotW, height: plotH }));

  if (!points.length) {
    target.append(svg('text', { class: 'chart-empty', x: WIDTH / 2, y: HEIGHT / 2, 'text-anchor': 'middle' }, labels.empty));
    return;
  }
  const maxRequests = niceMax(Math.max(...points.map((p) => Number(p.requests) || 0)));
  const latencies = points.map((p) => (typeof p.latency_p95_s === 'number' ? p.latency_p95_s : null));
  const maxLatency = niceMax(Math.max(0, ...latencies.filter((v) => v !== null)));
  const slot = plotW / points.length;
  const x = (i) => PAD.left + slot * (i + 0.5);

  // Grid and both axes' ticks: four steps.
  for (let step = 0; step <= 4; step += 1) {
    const y = bottom - (plotH * step) / 4;
    target.append(svg('line', { class: 'chart-grid', x1: PAD.left, x2: PAD.left + plotW, y1: y, y2: y }));
    const requests = (maxRequests * step) / 4;
    target.append(svg('text', { class: 'chart-tick', x: PAD.left - 6, y: y + 4, 'text-anchor': 'end' },
      Number.isInteger(requests) ? String(requests) : requests.toFixed(1)));
    target.append(svg('text', { class: 'chart-tick latency', x: PAD.left + plotW + 6, y: y + 4 },
      formatSeconds((maxLatency * step) / 4)));
  }

  // Bars: requests, with the errors part stacked on top in another colour.
  const barW = Math.max(1, slot * 0.7);
  points.forEach((point, i) => {
    const requests = Number(point.requests) || 0;
    const errors = Math.min(requests, Number(point.errors) || 0);
    const h = (plotH * requests) / maxRequests;
    const eh = (plotH * errors) / maxRequests;
    const title = svg('title', {}, `${clock(point.t)} · ${labels.requests}: ${requests}`
      + (errors ? ` (${labels.errors}: ${errors})` : '')
      + (latencies[i] !== null ? ` · ${labels.p95}: ${formatSeconds(latencies[i])}` : ''));
    const bar = svg('rect', { class: 'chart-bar', x: x(i) - barW / 2, y: bottom - h, width: barW, height: h });
    bar.append(title);
    target.append(bar);
    if (eh > 0) target.append(svg('rect', { class: 'chart-bar errors', x: x(i) - barW / 2, y: bottom - h, width: barW, height: eh }));
  });

  // The p95 line; a gap where an interval had no latency.
  let path = '';
  let pen = false;
  latencies.forEach((value, i) => {
    if (value === null) { pen = false; return; }
    const y = bottom - (plotH * value) / maxLatency;
    path += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y.toFixed(1)} `;
    pen = true;
  });
  if (path) target.append(svg('path', { class: 'chart-line', d: path.trim() }));
  latencies.forEach((value, i) => {
    if (value !== null) target.append(svg('circle', { class: 'chart-dot', cx: x(i), cy: bottom - (plotH * value) / maxLatency, r: 2.5 }));
  });

  // Time labels: first, middle and last point.
  const marks = [...new Set([0, Math.floor((points.length - 1) / 2), points.length - 1])];
  for (const i of marks) {
    target.append(svg('text', { class: 'chart-tick', x: x(i), y: bottom + 18, 'text-anchor': 'middle' }, clock(points[i].t)));
  }

  // Legend.
  target.append(svg('rect', { class: 'chart-bar', x: PAD.left, y: 8, width: 12, height: 10 }));
  target.append(svg('text', { class: 'chart-legend', x: PAD.left + 18, y: 17 }, labels.requests));
  target.append(svg('line', { class: 'chart-line', x1: PAD.left + 200, x2: PAD.left + 220, y1: 13, y2: 13 }));
  target.append(svg('text', { class: 'chart-legend', x: PAD.left + 226, y: 17 }, labels.p95));
}
