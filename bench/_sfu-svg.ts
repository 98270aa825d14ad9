/**
 * The fan-out chart: forwarded packets per second (x) against SFU CPU percent of one core (y),
 * one point per subscriber count, a line through them, and a dashed line at 100 %. Plain SVG
 * text, no charting dependency.
 */
export interface FanoutPoint {
  subscribers: number;
  forwardedPps: number;
  cpuPercent: number;
}

/** About five round tick values from 0 to `max`. */
function ticks(max: number): number[] {
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) ?? raw;
  return Array.from({ length: Math.floor(max / step) + 1 }, (_, i) => i * step);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export interface FanoutSeries {
  label: string;
  points: FanoutPoint[];
}

const COLOURS = ['#1f5fbf', '#d9731a', '#2a9d4b', '#8e44ad'];

export function fanoutSvg(series: FanoutSeries[], title: string): string {
  const points = series.flatMap((s) => s.points);
  const W = 640;
  const H = 400;
  const m = { l: 60, r: 20, t: 40, b: 50 };
  const maxX = Math.max(1000, ...points.map((p) => p.forwardedPps)) * 1.1;
  const maxY = Math.max(100, ...points.map((p) => p.cpuPercent)) * 1.1;
  const x = (v: number) => m.l + (v / maxX) * (W - m.l - m.r);
  const y = (v: number) => H - m.b - (v / maxY) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (const t of ticks(maxX)) {
    parts.push(`<line x1="${x(t)}" y1="${y(0)}" x2="${x(t)}" y2="${m.t}" stroke="#eee"/>`);
    parts.push(`<text x="${x(t)}" y="${H - m.b + 16}" text-anchor="middle">${t}</text>`);
  }
  for (const t of ticks(maxY)) {
    parts.push(`<line x1="${m.l}" y1="${y(t)}" x2="${W - m.r}" y2="${y(t)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y(t) + 4}" text-anchor="end">${t}</text>`);
  }
  parts.push(`<line x1="${m.l}" y1="${y(0)}" x2="${W - m.r}" y2="${y(0)}" stroke="black"/>`);
  parts.push(`<line x1="${m.l}" y1="${y(0)}" x2="${m.l}" y2="${m.t}" stroke="black"/>`);
  parts.push(
    `<line x1="${m.l}" y1="${y(100)}" x2="${W - m.r}" y2="${y(100)}" stroke="#c00" stroke-dasharray="6 4"/>`,
    `<text x="${W - m.r}" y="${y(100) - 4}" text-anchor="end" fill="#c00">one core</text>`,
  );
  series.forEach((line, k) => {
    const colour = COLOURS[k % COLOURS.length]!;
    const sorted = line.points.toSorted((a, b) => a.forwardedPps - b.forwardedPps);
    if (sorted.length > 1) {
      parts.push(
        `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${sorted.map((p) => `${x(p.forwardedPps).toFixed(1)},${y(p.cpuPercent).toFixed(1)}`).join(' ')}"/>`,
      );
    }
    for (const p of sorted) {
      parts.push(`<circle cx="${x(p.forwardedPps).toFixed(1)}" cy="${y(p.cpuPercent).toFixed(1)}" r="4" fill="${colour}"/>`);
      parts.push(`<text x="${(x(p.forwardedPps) + 6).toFixed(1)}" y="${(y(p.cpuPercent) + 14).toFixed(1)}" fill="#555" font-size="10">S=${p.subscribers}</text>`);
    }
    parts.push(`<rect x="${m.l + 10}" y="${m.t + 6 + k * 18}" width="12" height="12" fill="${colour}"/>`);
    parts.push(`<text x="${m.l + 28}" y="${m.t + 16 + k * 18}">${esc(line.label)}</text>`);
  });
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">forwarded RTP packets per second</text>`);
  parts.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">SFU CPU, % of one core</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
