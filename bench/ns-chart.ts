/** Small self-contained SVG charts for the namespace benchmarks: line panels and grouped-bar panels side by side. */

export const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

export interface LineSeries {
  name: string;
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
}

export interface LinePanel {
  kind: 'line';
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
}

export interface BarPanel {
  kind: 'bar';
  title: string;
  yLabel: string;
  /** One group per x label; one bar per series name inside it. */
  groups: { label: string; values: { name: string; value: number | null }[] }[];
}

export type Panel = LinePanel | BarPanel;

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A "nice" axis step for a range (1, 2, 5 × 10^k). */
export function niceStep(range: number, ticks = 5): number {
  const raw = range / ticks || 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
}

function label(v: number): string {
  return String(Number(v.toPrecision(6)));
}

const W = 520;
const H = 340;
const M = { l: 66, r: 16, t: 34, b: 46 };

function axes(parts: string[], x0: number, title: string, yLabel: string, xLabel: string, yHi: number, yStep: number, Y: (y: number) => number): void {
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  parts.push(`<text x="${x0 + pw / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (let y = 0; y <= yHi + 1e-9; y += yStep) {
    parts.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${Y(y).toFixed(1)}" y2="${Y(y).toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x0 - 6}" y="${(Y(y) + 4).toFixed(1)}" text-anchor="end">${label(y)}</text>`);
  }
  parts.push(`<line x1="${x0}" x2="${x0}" y1="${M.t}" y2="${M.t + ph}" stroke="#333"/>`);
  parts.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${M.t + ph}" y2="${M.t + ph}" stroke="#333"/>`);
  parts.push(`<text x="${x0 + pw / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text transform="translate(${x0 - M.l + 14},${M.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
}

function linePanel(parts: string[], p: LinePanel, x0: number, names: string[]): void {
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const all = p.series.flatMap((s) => s.points);
  const minX = Math.min(0, ...all.map(([x]) => x));
  const maxX = Math.max(minX + 1, ...all.map(([x]) => x));
  const maxY = Math.max(1e-9, ...all.map(([, y]) => y));
  const yStep = niceStep(maxY);
  const yHi = Math.ceil(maxY / yStep) * yStep;
  const X = (x: number) => x0 + ((x - minX) / (maxX - minX)) * pw;
  const Y = (y: number) => M.t + ph - (y / (yHi || 1)) * ph;
  axes(parts, x0, p.title, p.yLabel, p.xLabel, yHi, yStep, Y);
  const xStep = niceStep(maxX - minX);
  for (let x = Math.ceil(minX / xStep) * xStep; x <= maxX + 1e-9; x += xStep) {
    parts.push(`<line x1="${X(x).toFixed(1)}" x2="${X(x).toFixed(1)}" y1="${M.t + ph}" y2="${M.t + ph + 5}" stroke="#333"/>`);
    parts.push(`<text x="${X(x).toFixed(1)}" y="${M.t + ph + 18}" text-anchor="middle">${label(x)}</text>`);
  }
  for (const s of p.series) {
    const color = COLORS[names.indexOf(s.name) % COLORS.length]!;
    if (!s.points.length) continue;
    const d = s.points.map(([x, y], k) => `${k ? 'L' : 'M'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="5,4"' : ''}/>`);
    if (s.points.length <= 24) for (const [x, y] of s.points) parts.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="2.8" fill="${color}"/>`);
  }
}

function barPanel(parts: string[], p: BarPanel, x0: number, names: string[]): void {
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const maxY = Math.max(1e-9, ...p.groups.flatMap((g) => g.values.map((v) => v.value ?? 0)));
  const yStep = niceStep(maxY);
  const yHi = Math.ceil(maxY / yStep) * yStep;
  const Y = (y: number) => M.t + ph - (y / (yHi || 1)) * ph;
  axes(parts, x0, p.title, p.yLabel, '', yHi, yStep, Y);
  const gw = pw / Math.max(1, p.groups.length);
  p.groups.forEach((g, i) => {
    const bw = (gw * 0.8) / Math.max(1, g.values.length);
    const gx = x0 + i * gw + gw * 0.1;
    g.values.forEach((v, j) => {
      if (v.value === null) return;
      const color = COLORS[names.indexOf(v.name) % COLORS.length]!;
      const y = Y(v.value);
      parts.push(`<rect x="${(gx + j * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(M.t + ph - y).toFixed(1)}" fill="${color}"/>`);
      parts.push(`<text x="${(gx + j * bw + bw / 2).toFixed(1)}" y="${(y - 3).toFixed(1)}" text-anchor="middle" font-size="10">${label(Number(v.value.toPrecision(3)))}</text>`);
    });
    parts.push(`<text x="${(x0 + i * gw + gw / 2).toFixed(1)}" y="${M.t + ph + 18}" text-anchor="middle">${esc(g.label)}</text>`);
  });
}

/** Panels side by side (wrapping after `perRow`), with one legend for every series name used. */
export function chartSvg(panels: readonly Panel[], caption = '', perRow = 3): string {
  const names: string[] = [];
  for (const p of panels) {
    const ns = p.kind === 'line' ? p.series.map((s) => s.name) : p.groups.flatMap((g) => g.values.map((v) => v.name));
    for (const n of ns) if (!names.includes(n)) names.push(n);
  }
  const cols = Math.min(perRow, Math.max(1, panels.length));
  const rows = Math.ceil(panels.length / cols);
  const legendH = 22 * Math.ceil(names.length / 3) + (caption ? 26 : 8);
  const width = cols * W;
  const height = rows * H + legendH;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  panels.forEach((p, i) => {
    const col = i % cols;
    const row = Math.floor(i / cols);
    parts.push(`<g transform="translate(0,${row * H})">`);
    if (p.kind === 'line') linePanel(parts, p, col * W + M.l, names);
    else barPanel(parts, p, col * W + M.l, names);
    parts.push('</g>');
  });
  const ly = rows * H + 6;
  names.forEach((n, j) => {
    const x = 20 + (j % 3) * Math.max(220, width / 3);
    const y = ly + 22 * Math.floor(j / 3);
    const color = COLORS[j % COLORS.length]!;
    parts.push(`<rect x="${x}" y="${y}" width="24" height="10" fill="${color}"/>`);
    parts.push(`<text x="${x + 30}" y="${y + 10}">${esc(n)}</text>`);
  });
  if (caption) parts.push(`<text x="20" y="${height - 8}" fill="#555">${esc(caption)}</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
