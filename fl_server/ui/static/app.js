// hefl operator page: polls the status, draws the jobs, hospitals and curves (uPlot).
// Every value is put into the page with textContent: hospital names come from tokens.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const REFRESH_MS = Math.max(200, Number(params.get("refresh_ms")) || 2000);
  const TOKEN_KEY = "hefl.statusToken";
  const PREFERRED_METRICS = ["auroc", "accuracy", "macro_f1", "rmse", "mae", "loss"];
  const COLORS = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#0a3069", "#57606a"];

  const state = {
    selected: params.get("job"),
    metric: null,
    charts: {},
    bytes: {},        // job -> [[t...], [in...], [out...]] sampled by this page
    lastOk: null,
    lostSince: null,
    status: null,     // the last /v1/status
    jobStatus: null,  // the last status of the selected job
  };
  window.heflPage = state;  // for tests and curious operators

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function td(text, field, cls) {
    const cell = el("td", text, cls);
    if (field) cell.dataset.field = field;
    return cell;
  }

  function token() { return window.sessionStorage.getItem(TOKEN_KEY); }

  function fmtNumber(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h} h ${m} min` : m ? `${m} min ${r} s` : `${r} s`;
  }

  function fmtAgo(iso) {
    if (!iso) return "never";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 2) return "just now";
    return `${fmtDuration(Math.max(0, seconds))} ago`;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0, v = n;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return `${v.toLocaleString("en-US", { maximumFractionDigits: i ? 1 : 0 })} ${units[i]}`;
  }

  function updatesPerMinute(job) {
    return job.training_seconds > 0 ? (job.updates_applied / job.training_seconds) * 60 : null;
  }

  // -- fetching ------------------------------------------------------------------------

  class AuthNeeded extends Error {}

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      let detail = "";
      try { detail = (await response.json()).detail || ""; } catch (e) { /* not JSON */ }
      throw new AuthNeeded(detail);
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function refresh() {
    try {
      const status = await getJson("v1/status");
      state.status = status;
      const names = status.jobs.map((j) => j.name);
      if (!state.selected || !names.includes(state.selected)) state.selected = names[0] || null;
      state.jobStatus = state.selected
        ? await getJson(`v1/jobs/${encodeURIComponent(state.selected)}/status`)
        : null;
      connected();
      render();
    } catch (err) {
      if (err instanceof AuthNeeded) { needLogin(err.message); return; }
      lost(err);
    }
  }

  function connected() {
    const wasLost = state.lostSince !== null;
    state.lastOk = new Date();
    state.lostSince = null;
    document.body.dataset.connection = "ok";
    $("connection").textContent =
      `${wasLost ? "reconnected" : "connected"} · updated ${state.lastOk.toLocaleTimeString()}`;
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget-token").hidden = !token();
  }

  function lost(err) {
    if (state.lostSince === null) state.lostSince = new Date();
    document.body.dataset.connection = "lost";
    const last = state.lastOk ? `; last data ${state.lastOk.toLocaleTimeString()}` : "";
    $("connection").textContent =
      `connection lost since ${state.lostSince.toLocaleTimeString()}${last}; retrying every ${REFRESH_MS / 1000} s`;
    $("connection").title = String(err && err.message ? err.message : err);
  }

  function needLogin(detail) {
    document.body.dataset.connection = "login";
    $("connection").textContent = "a token is needed";
    $("login").hidden = false;
    $("main").hidden = true;
    $("login-error").textContent = token() ? `The token was refused: ${detail}` : "";
  }

  // -- rendering -------------------------------------------------------------------------

  function render() {
    renderJobs(state.status);
    const job = state.jobStatus;
    $("job").hidden = !job;
    if (!job) return;
    renderJob(job);
    renderClients(job);
    renderCurves(job);
    renderStaleness(job);
    renderBytes(job);
    renderIntegrity(job);
  }

  function renderJobs(status) {
    const body = $("jobs").tBodies[0];
    body.replaceChildren();
    for (const job of status.jobs) {
      const row = el("tr", null, "selectable");
      row.dataset.job = job.name;
      if (job.name === state.selected) row.classList.add("selected");
      row.append(td(job.name, "name"));
      const st = td(job.state, "state");
      st.append(el("span", job.stop_reason ? ` (${job.stop_reason})` : "", "muted"));
      row.append(st);
      row.append(td(`${job.version} / ${job.target_updates ?? "–"}`, "version", "num"));
      const progress = td(null, "progress");
      if (job.target_updates) {
        const track = el("span", null, "bar-track");
        const bar = el("span", null, "bar");
        bar.style.width = `${Math.min(100, (100 * job.updates_applied) / job.target_updates)}%`;
        track.append(bar);
        progress.append(track, el("span", ` ${fmtNumber((100 * job.updates_applied) / job.target_updates, 0)} %`));
      } else {
        progress.textContent = "–";
      }
      row.append(progress);
      const rate = updatesPerMinute(job);
      const rateCell = td(fmtNumber(rate, 1), "rate", "num");
      if (rate !== null) rateCell.dataset.value = String(rate);
      row.append(rateCell);
      const running = td(fmtDuration(job.training_seconds), "training_seconds", "num");
      running.dataset.value = String(job.training_seconds);
      row.append(running);
      const isSelected = job.name === state.selected && state.jobStatus;
      row.append(td(isSelected ? Object.keys(state.jobStatus.clients).length : "·", "hospitals", "num"));
      row.append(td(job.key_epoch, "key_epoch", "num"));
      const integrity = job.integrity ? job.integrity.state : "healthy";
      row.append(td(integrity, "integrity", integrity === "healthy" ? null : "alarm"));
      row.addEventListener("click", () => { state.selected = job.name; state.metric = null; refresh(); });
      body.append(row);
    }
    $("no-jobs").hidden = status.jobs.length > 0;
    $("failed-jobs").textContent = status.failed_jobs.length
      ? "Left out at startup: " + status.failed_jobs.map((f) => `${f.name} (${f.error})`).join("; ")
      : "";
  }

  function fact(container, label, value, field, cls) {
    const box = el("div", null, "fact");
    box.append(el("span", label, "label"));
    const v = el("span", value, "value" + (cls ? ` ${cls}` : ""));
    if (field) v.dataset.field = field;
    box.append(v);
    container.append(box);
  }

  function renderJob(job) {
    $("job-name").textContent = job.name;
    const st = $("job-state");
    st.textContent = job.state + (job.stop_reason ? ` (${job.stop_reason})` : "");
    st.className = `state state-${job.state}`;
    $("job-description").textContent = job.description;
    const facts = $("job-facts");
    facts.replaceChildren();
    fact(facts, "version (served)", `${job.version} (${job.published_version})`, "version");
    fact(facts, "updates applied", job.updates_applied, "updates_applied");
    fact(facts, "target", job.target_updates ?? "–", "target_updates");
    fact(facts, "updates / min", fmtNumber(updatesPerMinute(job), 1), "rate");
    fact(facts, "time training", fmtDuration(job.training_seconds), "training_seconds");
    const rejected = Object.values(job.updates_rejected).reduce((a, b) => a + b, 0);
    fact(facts, "rejected", rejected, "updates_rejected");
    fact(facts, "mean staleness weight", fmtNumber(job.mean_weight, 3), "mean_weight");
    fact(facts, "bytes in", fmtBytes(job.bytes_in), "bytes_in");
    fact(facts, "bytes out", fmtBytes(job.bytes_out), "bytes_out");
    fact(facts, "slots in use", `${job.slots_in_use} / ${job.max_training}`, "slots");
    fact(facts, "queued", job.queued_updates, "queued_updates");
    for (const [name, pooled] of Object.entries(job.pooled_metrics)) {
      fact(facts, `pooled ${name} (${pooled.sites} sites)`, fmtNumber(pooled.value, 4), `pooled_${name}`);
    }
    for (const rule of job.stop_rules) {
      const label = rule.metric ? `stop: ${rule.metric} ≥ ${rule.target}` : `stop: ${rule.rule} ${rule.target}`;
      const progress = rule.progress === null ? "–" : fmtNumber(rule.progress, rule.metric ? 4 : 0);
      fact(facts, label, rule.met ? `${progress} (met)` : progress, `stop_${rule.rule}`);
    }
    // the largest ε a hospital reports having spent (a study with [privacy])
    const spent = Object.values(job.clients).map((c) => c.privacy).filter((p) => p);
    if (spent.length) {
      const most = spent.reduce((a, b) => (b.epsilon > a.epsilon ? b : a));
      const target = most.target_epsilon === null ? "" : ` of ${fmtNumber(most.target_epsilon, 3)}`;
      // hospital level: counted by the server from the hospital's noised updates
      const level = most.level === "hospital" ? " (hospital level)" : "";
      fact(facts, "privacy budget ε spent (most)", `${fmtNumber(most.epsilon, 3)}${target}${level}`, "dp_epsilon");
    } else {
      fact(facts, "privacy budget ε spent", "not enabled", "dp_epsilon", "muted");
    }
  }

  function renderClients(job) {
    const body = $("clients").tBodies[0];
    body.replaceChildren();
    const quarantined = new Set((job.integrity.quarantined || []).map((q) => q.client_id));
    const ids = Object.keys(job.clients).sort((a, b) =>
      String(job.clients[a].client_name).localeCompare(String(job.clients[b].client_name)));
    for (const id of ids) {
      const c = job.clients[id];
      const row = el("tr");
      row.dataset.client = id;
      const name = td(c.client_name ?? id, "client_name");
      name.title = id;
      if (quarantined.has(id)) name.append(el("span", " quarantined", "alarm"));
      row.append(name);
      row.append(td(c.updates_applied, "updates_applied", "num"));
      row.append(td(c.updates_rejected, "updates_rejected", "num"));
      const stale = td(fmtNumber(c.mean_staleness, 2), "mean_staleness", "num");
      if (c.mean_staleness !== null && c.mean_staleness !== undefined) stale.dataset.value = String(c.mean_staleness);
      row.append(stale);
      const weight = td(fmtNumber(c.mean_weight, 3), "mean_weight", "num");
      if (c.mean_weight !== null && c.mean_weight !== undefined) weight.dataset.value = String(c.mean_weight);
      row.append(weight);
      const seen = td(fmtAgo(c.last_seen), "last_seen");
      seen.title = c.last_seen || "not since the server started";
      row.append(seen);
      const latest = c.latest_metrics;
      row.append(td(latest && latest.n_samples !== null ? latest.n_samples : "–", "rows", "num"));
      const text = latest
        ? `v${latest.version}: ` + Object.entries(latest.values).map(([k, v]) => `${k} ${fmtNumber(v, 4)}`).join(", ")
        : "no report yet";
      row.append(td(text, "latest_metrics"));
      body.append(row);
    }
  }

  function metricNames(job) {
    const names = new Set();
    for (const m of job.metrics) for (const k of Object.keys(m.mean)) names.add(k);
    return [...names].sort();
  }

  function chooseMetric(job, names) {
    if (state.metric && names.includes(state.metric)) return state.metric;
    const rule = job.stop_rules.find((r) => r.metric);
    if (rule && names.includes(rule.metric)) return rule.metric;
    return PREFERRED_METRICS.find((m) => names.includes(m)) || names[0] || null;
  }

  function chartWidth(id) {
    return Math.max(320, $(id).parentElement.clientWidth - 4);
  }

  // One uPlot per container, rebuilt when its series change, else given new data.
  function plot(id, key, series, data, opts) {
    const holder = $(id);
    const existing = state.charts[id];
    if (existing && existing.key === key) {
      existing.chart.setData(data);
    } else {
      if (existing) existing.chart.destroy();
      holder.replaceChildren();
      const chart = new window.uPlot(
        Object.assign({ width: chartWidth(id), height: 220, series, legend: { live: false } }, opts),
        data,
        holder,
      );
      state.charts[id] = { key, chart };
    }
    holder.dataset.points = String(data[0].length);
  }

  // The pooled value as the stop rule reads it (docs/protocol.md): each hospital's latest
  // report up to that version, weighted by its held-out rows. The plain mean of the reports
  // on one version would jump with whichever hospitals happened to report on it.
  function runningPooled(job, metric, rows) {
    const latest = {};
    const rowsOf = (cid) => job.clients[cid]?.latest_metrics?.n_samples ?? 0;
    return rows.map((m) => {
      for (const [cid, values] of Object.entries(m.clients ?? {})) {
        if (values[metric] !== undefined) latest[cid] = values[metric];
      }
      let sum = 0;
      let weight = 0;
      for (const [cid, value] of Object.entries(latest)) {
        sum += rowsOf(cid) * value;
        weight += rowsOf(cid);
      }
      return weight > 0 ? sum / weight : null;
    });
  }

  function renderCurves(job) {
    const names = metricNames(job);
    const select = $("metric-select");
    const metric = chooseMetric(job, names);
    state.metric = metric;
    if (select.dataset.names !== names.join(",")) {
      select.replaceChildren(...names.map((n) => el("option", n)));
      select.dataset.names = names.join(",");
    }
    if (metric) select.value = metric;
    const rows = job.metrics.filter((m) => metric && m.mean[metric] !== undefined);
    $("curves-empty").hidden = rows.length > 0;
    const ids = Object.keys(job.clients).sort();
    const versions = rows.map((m) => m.version);
    const pooled = runningPooled(job, metric, rows);
    const perClient = ids.map((cid) => rows.map((m) => {
      const values = m.clients ? m.clients[cid] : undefined;
      return values && values[metric] !== undefined ? values[metric] : null;
    }));
    const series = [
      { label: "version" },
      { label: `pooled ${metric ?? ""}`, stroke: "#1f2328", width: 2.5, points: { show: true, size: 5 } },
      ...ids.map((cid, i) => ({
        label: job.clients[cid].client_name ?? cid,
        stroke: COLORS[i % COLORS.length],
        width: 1,
        spanGaps: true,
        points: { show: true, size: 3 },
      })),
    ];
    plot("chart-version", `${job.name}|${metric}|${ids.join(",")}`, series, [versions, pooled, ...perClient],
      { scales: { x: { time: false } }, axes: [{ label: "model version" }, { label: metric ?? "" }] });

    const timed = rows.filter((m) => m.received_at);
    plot("chart-time", `${job.name}|${metric}`,
      [{ label: "time" }, { label: `pooled ${metric ?? ""}`, stroke: "#0969da", width: 2, points: { show: true, size: 5 } }],
      [timed.map((m) => Date.parse(m.received_at) / 1000), pooled.filter((_, i) => rows[i].received_at)],
      { axes: [{}, { label: metric ?? "" }] });
  }

  function renderStaleness(job) {
    const entries = Object.entries(job.staleness_histogram)
      .map(([k, v]) => [Number(k), v]).sort((a, b) => a[0] - b[0]);
    const bars = window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 60] }) : undefined;
    plot("chart-staleness", job.name,
      [{ label: "staleness" }, { label: "updates", fill: "#54aeff", stroke: "#0969da", paths: bars, points: { show: false } }],
      [entries.map((e) => e[0]), entries.map((e) => e[1])],
      { scales: { x: { time: false, range: (u, min, max) => [Math.min(0, min) - 0.5, Math.max(1, max) + 0.5] } },
        axes: [{ label: "versions behind" }, { label: "updates" }] });
  }

  function renderBytes(job) {
    const samples = state.bytes[job.name] || (state.bytes[job.name] = [[], [], []]);
    const now = Date.now() / 1000;
    samples[0].push(now); samples[1].push(job.bytes_in); samples[2].push(job.bytes_out);
    if (samples[0].length > 1800) samples.forEach((s) => s.shift());
    plot("chart-bytes", job.name,
      [{ label: "time" },
       { label: "in", stroke: "#1a7f37", width: 2, value: (u, v) => fmtBytes(v) },
       { label: "out", stroke: "#bf3989", width: 2, value: (u, v) => fmtBytes(v) }],
      samples.map((s) => s.slice()),
      { axes: [{}, { values: (u, ticks) => ticks.map(fmtBytes), size: 70 }] });
  }

  function renderIntegrity(job) {
    const integrity = job.integrity;
    const facts = $("integrity-facts");
    facts.replaceChildren();
    fact(facts, "integrity", integrity.state, "integrity_state", integrity.state === "healthy" ? null : "alarm");
    if (integrity.probe) {
      const p = integrity.probe;
      fact(facts, "probe", p.update_id ? `v${p.version} + update ${p.update_id.slice(0, 8)}` : `v${p.version}`, "probe");
    }
    fact(facts, "alarms (failed checks)", integrity.reports.filter((r) => !r.ok).length, "alarms",
      integrity.reports.some((r) => !r.ok) ? "alarm" : null);
    fact(facts, "integrity reports", integrity.reports_total, "reports_total");
    fact(facts, "repairs", integrity.repairs.length, "repairs");
    fact(facts, "updates removed", integrity.updates_removed, "updates_removed");
    fact(facts, "quarantined", integrity.quarantined.length, "quarantined", integrity.quarantined.length ? "alarm" : null);
    fact(facts, "key epoch", job.key_epoch, "key_epoch");
    fact(facts, "key id", job.key_id ? job.key_id.slice(0, 16) + "…" : "–", "key_id");
    fact(facts, "profile", job.profile, "profile");
    if (integrity.detail) facts.append(el("p", integrity.detail, "alarm"));

    const qBody = $("quarantined").tBodies[0];
    qBody.replaceChildren();
    for (const q of integrity.quarantined) {
      const row = el("tr");
      row.append(td(q.client_name ?? q.client_id), td(q.since), td(q.repair, null, "num"));
      qBody.append(row);
    }
    $("quarantined").hidden = integrity.quarantined.length === 0;
    const rBody = $("repairs").tBodies[0];
    rBody.replaceChildren();
    for (const r of integrity.repairs) {
      const row = el("tr");
      row.append(td(r.entry, null, "num"), td(r.at), td(r.reason), td(r.first_bad_version ?? "–", null, "num"),
        td(r.removed.map((u) => `${u.client_name ?? u.client_id} v${u.version}`).join(", ")));
      rBody.append(row);
    }
    $("repairs").hidden = integrity.repairs.length === 0;
  }

  // -- wiring ----------------------------------------------------------------------------

  function start() {
    $("refresh-seconds").textContent = String(REFRESH_MS / 1000);
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (value) window.sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      refresh();
    });
    $("forget-token").addEventListener("click", () => {
      window.sessionStorage.removeItem(TOKEN_KEY);
      refresh();
    });
    $("metric-select").addEventListener("change", (event) => {
      state.metric = event.target.value;
      if (state.jobStatus) renderCurves(state.jobStatus);
    });
    let running = false;
    const tick = async () => {
      if (running) return;
      running = true;
      try { await refresh(); } finally { running = false; }
    };
    tick();
    window.setInterval(tick, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
