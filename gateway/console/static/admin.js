// For admins: the pool (GET /pool) and a few metrics at a glance (GET /metrics, Prometheus text),
// each shown only where the gateway has the route.

import { ApiError, get } from "./api.js";
import { clear, el } from "./dom.js";

const REFRESH_MS = 5000;
const MAX_SAMPLES = 40;

/** Prometheus text exposition -> [{name, labels, value}] (comments and histogram buckets left out). */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match || match[1].endsWith("_bucket") || match[1].endsWith("_created")) continue;
    samples.push({ name: match[1], labels: match[2] || "", value: Number(match[3]) });
  }
  return samples;
}

export class AdminPanel {
  constructor(parent) {
    this.absent = new Set(); // routes this gateway does not have (404): not asked again
    this.pool = el("pre", { class: "json", dataset: { testid: "pool" } });
    this.metrics = el("tbody", { dataset: { testid: "metrics" } });
    this.poolPanel = el("section", { class: "panel", hidden: true }, el("h2", {}, "Pool"), this.pool);
    this.metricsPanel = el("section", { class: "panel", hidden: true }, el("h2", {}, "Metrics"),
      el("table", { class: "list" }, this.metrics));
    parent.append(this.poolPanel, this.metricsPanel);
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  close() { clearInterval(this.timer); }

  async refresh() {
    await Promise.all([this.absent.has("pool") || this.refreshPool(), this.absent.has("metrics") || this.refreshMetrics()]);
  }

  async refreshPool() {
    try {
      this.pool.textContent = JSON.stringify(await get("/pool"), null, 2);
      this.poolPanel.hidden = false;
    } catch (error) {
      this.poolPanel.hidden = true;
      if (error instanceof ApiError && error.status === 404) this.absent.add("pool");
    }
  }

  async refreshMetrics() {
    let text;
    try {
      text = await get("/metrics");
    } catch (error) {
      this.metricsPanel.hidden = true;
      if (error instanceof ApiError && error.status === 404) this.absent.add("metrics");
      return;
    }
    if (typeof text !== "string") return;
    const samples = parseMetrics(text).filter((s) => s.name.startsWith("convoy_")).slice(0, MAX_SAMPLES);
    clear(this.metrics);
    for (const sample of samples) {
      this.metrics.append(el("tr", {}, el("td", {}, sample.name), el("td", {}, sample.labels),
        el("td", { class: "number" }, Number.isInteger(sample.value) ? sample.value : sample.value.toFixed(3))));
    }
    this.metricsPanel.hidden = samples.length === 0;
  }
}
