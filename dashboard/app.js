// PatchPilot dashboard: plain JavaScript, no build step, nothing from a CDN; charts are inline SVG drawn
// here (a chart library would have to be vendored for a handful of bar charts). Every call goes to this
// app's own API with the caller's function key (x-functions-key); lists are paged, never whole.
"use strict";

const KEY = "patchpilot.functionKey";
const REFRESH_MS = 2000;
const FINISHED = new Set(["Succeeded", "CompletedWithErrors", "CompletedWithWarnings", "Failed", "Halted", "Canceled"]);
const STATES = ["Failed", "TimedOut", "Unhealthy", "OutcomeUnknown", "Running", "Verifying", "Starting", "Queued",
  "Completed", "Skipped"];
const FAILURES = ["Failed", "TimedOut", "Unhealthy"];  // a run page opens its machine table on the first with machines
const DONE = ["Completed", "Failed", "TimedOut", "Skipped", "Unhealthy", "OutcomeUnknown"];
let timer = null;

(function takeKeyFromUrl() {
  const url = new URL(location.href);
  const code = url.searchParams.get("code");
  if (code) {
    sessionStorage.setItem(KEY, code);
    url.searchParams.delete("code");
    history.replaceState(null, "", url.pathname + url.search + url.hash);  // the key leaves the address bar
  }
})();

document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("key").value.trim());
  route();
});

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") el.style.cssText = v;  // CSSOM: the page's CSP allows no inline style attributes
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(path) {
  // `path` is relative to /api/ (the page is /api/dashboard), or a nextLink
  const resp = await fetch(path, { headers: { "x-functions-key": sessionStorage.getItem(KEY) || "" } });
  if (resp.status === 401) throw new Error("401: give a function key above");
  const body = resp.status === 204 ? null : await resp.json();
  if (resp.status >= 400) throw new Error((body && body.error && body.error.message) || "HTTP " + resp.status);
  return body;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined));
}

function every(fn) {
  clearTimeout(timer);
  const tick = async () => {
    let again = true;
    try { again = await fn(); } catch (err) { show(h("p", { class: "error", id: "load-error" }, err.message)); }
    if (again !== false) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
}

// -- runs, newest first, with live progress ----------------------------------------------------------------------
function runsPage(nextLink) {
  every(async () => {
    const page = await api(nextLink || "runs?top=20");
    const rows = await Promise.all(page.value.map(async (run) => {
      const summary = FINISHED.has(run.status) ? null : await api(`runs/${run.id}/summary`).catch(() => null);
      const s = summary || run;
      const states = (summary && summary.states) || {};
      const done = DONE.reduce((n, k) => n + (states[k] || 0), 0);
      const total = s.machineCount || 0;
      const pct = FINISHED.has(s.status) ? 100 : total ? Math.round(100 * done / total) : 0;
      return h("tr", { "data-run": run.id },
        h("td", {}, h("a", { href: `#/runs/${run.id}` }, run.id)),
        h("td", {}, run.operation), h("td", { class: `status-${s.status}` }, s.status),
        h("td", {}, total), h("td", {}, h("span", { class: "bar" }, h("span", { style: `width:${pct}%` })), ` ${pct}%`),
        h("td", { class: "muted" }, run.createdAt || ""));
    }));
    show(h("h2", {}, "Runs"),
      h("table", { id: "runs" }, h("tr", {}, ["Run", "Operation", "Status", "Machines", "Progress", "Created"].map((t) => h("th", {}, t))), rows),
      page.nextLink ? h("p", {}, h("button", { onclick: () => runsPage(page.nextLink) }, "Older runs")) : null);
  });
}

// -- one run: waves, counts, timeline, machines (paged, filtered, Failed first) -----------------------------------
function runPage(runId) {
  const view = { state: null, link: null, detail: null };
  let machinesNode = h("div");
  let detailNode = h("div", { id: "machine-detail" });

  async function loadMachines(summary) {
    if (view.state === null) view.state = FAILURES.find((s) => summary.states[s]) || "";
    const query = `runs/${runId}/machines?top=50` + (view.state ? `&state=${view.state}` : "");
    const page = await api(view.link || query);
    const withHealth = Boolean(summary.rollout && summary.rollout.healthCheck) || page.value.some((m) => m.health);
    const filter = h("select", { id: "state-filter", onchange: (e) => { view.state = e.target.value; view.link = null; refresh(); } },
      h("option", { value: "" }, "All states"), STATES.map((s) => h("option", { value: s }, `${s} (${summary.states[s] || 0})`)));
    filter.value = view.state;
    const rows = page.value.map((m) => h("tr", { "data-machine": m.id },
      h("td", {}, m.id.split("/").pop()), h("td", { class: `state state-${m.state}` }, m.state),
      withHealth ? healthCell(m.health) : null,
      h("td", {}, m.error && m.error.code === "MaintenanceWindowExceeded" ? "Window exceeded" : (m.status || "")),
      h("td", {}, m.wave ?? ""),
      h("td", {}, m.installedPatchCount ?? ""), h("td", {}, m.failedPatchCount ?? ""),
      h("td", { class: "error" }, m.error ? `${m.error.code}: ${m.error.message}` : ""),
      h("td", {}, h("button", { onclick: () => { view.detail = m.id; refresh(); } }, "Patches"))));
    return h("section", {}, h("h3", {}, "Machines "), filter,
      h("table", { id: "machines" }, h("tr", {}, ["VM", "State", withHealth ? "Health" : null, "Status", "Wave", "Installed", "Failed", "Error", ""]
        .filter((t) => t !== null).map((t) => h("th", {}, t))), rows),
      page.nextLink ? h("button", { onclick: () => { view.link = page.nextLink; refresh(); } }, "Next page") : null,
      view.link ? h("button", { onclick: () => { view.link = null; refresh(); } }, "First page") : null);
  }

  async function loadDetail() {
    if (!view.detail) return h("div", { id: "machine-detail" });
    const path = view.detail.replace(/^\//, "");
    const m = await api(`runs/${runId}/machines/${path}`);
    return h("section", { id: "machine-detail" }, h("h3", {}, m.id.split("/").pop()),
      h("p", {}, "ARM request ids: ", (m.armCalls || []).map((c) => h("code", { class: "request-id" }, `${c.op} ${c.status} ${c.requestId || ""}`, " "))),
      h("table", {}, h("tr", {}, ["Patch", "Classification", "State"].map((t) => h("th", {}, t))),
        (m.patches || []).map((p) => h("tr", {}, h("td", {}, p.name || p.patchId), h("td", {}, (p.classifications || []).join(", ")), h("td", {}, p.installationState || "")))));
  }

  let refresh;
  refresh = () => every(async () => {
    const s = await api(`runs/${runId}/summary`);
    machinesNode = await loadMachines(s);
    detailNode = await loadDetail();
    show(h("h2", {}, `Run ${runId} `, h("span", { id: "run-status", class: `status-${s.status}` }, s.status)),
      haltBanner(s.rollout),
      h("div", { class: "cards", id: "state-counts" }, Object.entries(s.states).map(([k, v]) => h("div", { class: "card", "data-state": k }, h("b", {}, v), k))),
      wavesTable(s), timelineChart(s.timeline), machinesNode, detailNode);
    return !FINISHED.has(s.status);
  });
  refresh();
}

// A halted rollout says why at the top: the reason, and each machine that spent the error budget with its kind
// (Unhealthy, Failed, ...), error code and failed health signals (`rollout.halted` in the summary).
function haltBanner(rollout) {
  const halted = rollout && rollout.halted;
  if (!halted) return null;
  const details = halted.details || (halted.machines || []).map((machine) => ({ machine }));
  return h("section", { id: "halt-reason", class: "banner", role: "alert" },
    h("h3", {}, "Rollout halted", halted.at ? h("span", { class: "muted" }, ` at ${halted.at}`) : null),
    h("p", { class: "halt-text" }, halted.reason || ""),
    details.length ? h("ul", { class: "halted-machines" }, details.map((d) => h("li", { "data-halted": d.machine, title: d.machine },
      h("b", {}, String(d.machine).split("/").pop()),
      d.kind ? [" ", h("span", { class: `halt-kind state-${d.kind}` }, d.kind)] : null,
      d.errorCode && d.errorCode !== d.kind ? [" ", h("code", { class: "error-code" }, d.errorCode)] : null,
      (d.signals || []).length ? [": ", d.signals.map((sig, i) => [i ? ", " : "", h("code", { class: "signal" }, sig)])] : null))) : null);
}

// A machine's health checks (rollout healthCheck): its verdict, then a `signal: verdict — observed` line for each
// reading that did not pass (failed, unreadable, or still waiting while Verifying); a machine unhealthy before
// patching shows its baseline ("before") readings instead.
const HEALTH_OK = new Set(["Healthy"]);
function healthCell(health) {
  if (!health) return h("td", { class: "health" });
  const status = health.status || "Verifying";
  const tone = HEALTH_OK.has(status) ? "health-ok" : /reading again|Verifying/i.test(status) ? "health-pending" : "health-bad";
  const before = status === "UnhealthyBeforePatching";
  const failed = new Set(health.failedSignals || []);
  const readings = (before ? health.before : health.after) || [];
  const shown = readings.filter((r) => failed.has(r.signal) || r.verdict !== "healthy");
  return h("td", { class: "health", "data-status": status },
    h("span", { class: `health-status ${tone}` }, status),
    health.deadline ? h("span", { class: "muted" }, ` until ${health.deadline}`) : null,
    shown.length && before ? h("div", { class: "muted" }, "before patching:") : null,
    shown.map((r) => h("div", { class: `health-reading verdict-${r.verdict}`, "data-signal": r.signal, "data-phase": before ? "before" : "after",
      title: r.at || "" }, `${r.signal}: ${r.verdict}`, r.observed ? ` — ${r.observed}` : "", r.code ? ` (${r.code})` : "")));
}

function wavesTable(s) {
  const waves = Object.entries(s.waves || {});
  if (waves.length < 2) return null;
  return h("section", {}, h("h3", {}, "Waves"), h("table", { id: "waves" },
    h("tr", {}, h("th", {}, "Wave"), STATES.map((t) => h("th", {}, t))),
    waves.map(([w, c]) => h("tr", {}, h("td", {}, w), STATES.map((t) => h("td", {}, c[t] || 0))))));
}

function timelineChart(buckets) {
  if (!buckets || !buckets.length) return null;
  const W = 720, H = 120, bw = W / buckets.length;
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.started, b.finished)));
  return h("section", {}, h("h3", {}, "Timeline (machines started and finished)"),
    svg("svg", { width: W, height: H + 20, id: "timeline" },
      buckets.map((b, i) => [
        svg("rect", { x: i * bw, y: H - H * b.started / max, width: bw / 2, height: H * b.started / max, fill: "#5b8def" }, svg("title", {}, `${b.at}: ${b.started} started`)),
        svg("rect", { x: i * bw + bw / 2, y: H - H * b.finished / max, width: bw / 2, height: H * b.finished / max, fill: "#2f7d32" }, svg("title", {}, `${b.at}: ${b.finished} finished`))]),
      svg("text", { x: 0, y: H + 15 }, buckets[0].at), svg("text", { x: W - 150, y: H + 15 }, buckets[buckets.length - 1].at)));
}

// -- compliance as charts ------------------------------------------------------------------------------------------
function barChart(id, rows, metrics) {
  const W = 720, rowH = 22, label = 280;
  const max = Math.max(1, ...rows.flatMap((r) => metrics.map((m) => r[m.key] || 0)));
  const per = rowH * metrics.length + 6;
  return svg("svg", { width: W, height: rows.length * per + 4, id },
    rows.map((r, i) => [
      svg("text", { x: 0, y: i * per + 14 }, r.label),
      metrics.map((m, j) => {
        const v = r[m.key] || 0, w = (W - label - 60) * v / max;
        return [svg("rect", { x: label, y: i * per + j * rowH, width: w, height: rowH - 4, fill: m.color }),
          svg("text", { x: label + w + 4, y: i * per + j * rowH + 13, "data-row": r.label, "data-metric": m.key }, String(v))];
      })]));
}

function compliancePage() {
  every(async () => {
    const c = await api("compliance?top=10");
    const subs = Object.entries(c.bySubscription || {}).map(([sub, v]) => ({ label: sub, ...v }));
    const patches = (c.mostWidespreadMissingPatches || []).map((p) => ({ label: `${p.patch} (${p.classification})`, machines: p.machines }));
    show(h("h2", {}, "Compliance"),
      h("div", { class: "cards", id: "compliance-counts" }, ["machines", "assessed", "stale", "neverAssessed", "missingCriticalOrSecurity", "rebootPending", "failed"]
        .map((k) => h("div", { class: "card", "data-count": k }, h("b", {}, c[k]), k))),
      h("section", {}, h("h3", {}, "Missing critical or security, and stale machines, by subscription"),
        barChart("by-subscription", subs, [{ key: "missingCriticalOrSecurity", color: "#b3261e" }, { key: "stale", color: "#e0a100" }])),
      h("section", {}, h("h3", {}, "Most widespread missing patches (machines)"), barChart("widespread", patches, [{ key: "machines", color: "#5b8def" }]),
        c.mostWidespreadMissingPatchesApproximate ? h("p", { class: "muted", id: "widespread-approximate" }, "approximate: a subscription has more distinct missing patches than its rollup keeps") : []),
      h("p", { class: "muted" }, `generated ${c.generatedAt}; stale = assessed more than ${c.freshnessHours} h ago`));
    return false;
  });
}

// -- maintenance configurations: next occurrences and the fate of past windows -------------------------------------
function maintenancePage() {
  every(async () => {
    const configs = (await api("maintenance-configurations")).value;
    const past = new Date(Date.now() - 30 * 86400e3).toISOString();
    const sections = await Promise.all(configs.map(async (cfg) => {
      const name = encodeURIComponent(cfg.name);
      const [next, recent] = await Promise.all([api(`maintenance-configurations/${name}/occurrences?count=5`),
        api(`maintenance-configurations/${name}/occurrences?count=20&from=${encodeURIComponent(past)}`)]);
      const handled = recent.value.filter((o) => o.state);
      const w = cfg.properties.maintenanceWindow;
      return h("section", { "data-config": cfg.name }, h("h3", {}, cfg.name),
        h("p", { class: "muted" }, `${w.recurEvery}, ${w.startDateTime} ${w.timeZone}, ${w.duration}`),
        h("table", {}, h("tr", {}, ["Next windows (local)", "UTC", "maximumDuration"].map((t) => h("th", {}, t))),
          next.value.map((o) => h("tr", {}, h("td", {}, o.startLocal), h("td", {}, o.startDateTime), h("td", {}, o.maximumDuration)))),
        h("table", {}, h("tr", {}, ["Past window", "Fate", "Run / reason"].map((t) => h("th", {}, t))),
          handled.length ? handled.map((o) => h("tr", {}, h("td", {}, o.startLocal), h("td", { class: `state-${o.state}` }, o.state),
            h("td", {}, o.runId ? h("a", { href: `#/runs/${o.runId}` }, o.runId) : (o.error ? o.error.message : ""))))
            : h("tr", {}, h("td", { class: "muted" }, "none in the last 30 days"))));
    }));
    show(h("h2", {}, "Maintenance configurations"), sections.length ? sections : h("p", { class: "muted" }, "none"));
    return false;
  });
}

function route() {
  const hash = location.hash || "#/";
  const run = hash.match(/^#\/runs\/([0-9a-f-]+)$/);
  if (run) runPage(run[1]);
  else if (hash === "#/compliance") compliancePage();
  else if (hash === "#/maintenance") maintenancePage();
  else runsPage(null);
}

window.addEventListener("hashchange", route);
route();
