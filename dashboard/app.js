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

async function api(path, method = "GET") {
  // `path` is relative to /api/ (the page is /api/dashboard), or a link the API gave (nextLink, applyLink)
  const resp = await fetch(path, { method, headers: { "x-functions-key": sessionStorage.getItem(KEY) || "" } });
  if (resp.status === 401) throw new Error("401: give a function key above");
  const body = resp.status === 204 ? null : await resp.json();
  if (resp.status >= 400) {
    const error = (body && body.error) || {};
    throw Object.assign(new Error(error.message || "HTTP " + resp.status), { error });  // error.details: planActions lists them
  }
  return body;
}

// A download that needs the function key: fetched with it, then saved from a blob (a plain link would go without
// the key and answer 401; putting the key in the link would leave it in history and logs).
async function download(link, filename) {
  const resp = await fetch(link, { headers: { "x-functions-key": sessionStorage.getItem(KEY) || "" } });
  if (!resp.ok) throw new Error(`download: HTTP ${resp.status}`);
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
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
        h("td", {}, run.operation, run.planId ? [" ", h("a", { href: `#/plans/${run.planId}`, class: "muted" }, "plan")] : null),
        h("td", { class: `status-${s.status}` }, s.status),
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
    show(h("h2", {}, `Run ${runId} `, h("span", { id: "run-status", class: `status-${s.status}` }, s.status),
      s.planId ? h("span", { id: "run-plan", class: "muted" }, " applies plan ", h("a", { href: `#/plans/${s.planId}` }, s.planId)) : null),
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

// -- plans (POST /api/plans): what a run would install where, predicted against the window; Apply starts that run --
const PLAN_ID = /^[0-9a-f]{11}-[0-9a-f]{8}$/;
const TOP_PATCHES = 10;

const vmName = (id) => String(id).split("/").pop();
const when = (iso) => (iso ? String(iso).slice(0, 16).replace("T", " ") + " UTC" : "");
const duration = (seconds) => (seconds >= 60 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`);
const percent = (fraction) => `${Math.round(100 * fraction)}%`;
const counts = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none";

function openPlanForm() {
  const input = h("input", { id: "plan-id", placeholder: "plan id", autocomplete: "off", size: 24 });
  const note = h("span", { class: "error" });
  return h("form", { id: "open-plan", onsubmit: (e) => {
    e.preventDefault();
    const id = input.value.trim().toLowerCase();
    if (PLAN_ID.test(id)) location.hash = `#/plans/${id}`;
    else note.textContent = " not a plan id (the id POST /api/plans answered, like 0123456789a-0badf00d)";
  } }, input, " ", h("button", { type: "submit" }, "Open plan"), note);
}

function plansPage() {
  every(async () => {
    show(h("h2", {}, "Plans"),
      h("p", { class: "muted" }, "A plan (POST /api/plans) lists the patches a run would install on each machine, and when ",
        "each machine would start and finish against the maintenance window. Open one by its id:"), openPlanForm());
    return false;
  });
}

function planPage(planId) {
  const view = { link: null, applying: false, applyError: null };
  let refresh;
  refresh = () => every(async () => {
    const plan = await api(`plans/${planId}`);
    const ready = plan.status === "Succeeded";
    const page = ready ? await api(view.link || `plans/${planId}/machines?top=50`) : null;
    const s = plan.summary;
    show(h("h2", {}, `Plan ${plan.id} `, h("span", { id: "plan-status", class: `status-${plan.status}` }, plan.status)),
      h("p", { class: "muted" }, `created ${when(plan.createdAt)}`, plan.plannedAt ? `, planned ${when(plan.plannedAt)}` : "",
        plan.maintenanceConfiguration ? `, for maintenance configuration ${plan.maintenanceConfiguration}` : ""),
      plan.error ? h("p", { class: "error", id: "plan-error" }, `${plan.error.code}: ${plan.error.message}`) : null,
      plan.status === "Planning" ? h("p", { class: "muted" }, "planning…") : null,
      ready ? planActions(plan, view, refresh) : null,
      s ? [planSummary(s), planWindow(s)] : null,
      page ? planTimeline(s && s.window, page.value, Boolean(page.nextLink || view.link)) : null,
      s ? [wavesOfPlan(s), planTotals(s)] : null,
      page ? planMachines(page, view, refresh) : null);
    return plan.status === "Planning";
  });
  refresh();
}

// Apply (POST applyLink) once the plan has Succeeded and no run applied it; afterwards the run it started.
function planActions(plan, view, refresh) {
  const s = plan.summary || {};
  const apply = async () => {
    if (!confirm(`Apply plan ${plan.id} now: install ${s.patchInstalls} patches on ${s.installing} machines?`)) return;
    view.applying = true;
    refresh();
    try {
      await api(plan.applyLink, "POST");
      view.applyError = null;
    } catch (err) {
      view.applyError = err;
    }
    view.applying = false;
    refresh();
  };
  const csv = h("a", { id: "plan-csv", href: plan.csvLink, onclick: (e) => {
    e.preventDefault();
    download(plan.csvLink, `plan-${plan.id}.csv`).catch((err) => { e.target.textContent = err.message; });
  } }, "CSV (one line per machine and patch)");
  const err = view.applyError;
  return h("section", { id: "plan-actions" },
    plan.appliedRunId
      ? h("p", { id: "plan-applied" }, "Applied by run ", h("a", { id: "plan-run", href: `#/runs/${encodeURIComponent(plan.appliedRunId)}` }, plan.appliedRunId),
        plan.appliedAt ? h("span", { class: "muted" }, ` at ${when(plan.appliedAt)}`) : null, " · ", csv)
      : h("p", {}, h("button", { id: "apply-plan", onclick: apply, ...(view.applying ? { disabled: "" } : {}) },
        view.applying ? "Applying…" : "Apply"), h("span", { class: "muted" }, " starts the run that installs exactly this plan · "), csv),
    err ? h("div", { class: "error", id: "apply-error" }, `${err.error && err.error.code ? err.error.code + ": " : ""}${err.message}`,
      (err.error && err.error.details || []).length ? h("ul", {}, err.error.details.map((d) => h("li", {},
        `${d.code}: ${d.target ? vmName(d.target) + ": " : ""}${d.message || ""}`))) : null) : null);
}

function planSummary(s) {
  const b = s.basis || {};
  const order = s.order === "longestFirst" ? "longest predicted first" : "in request order";
  return h("section", {},
    h("div", { class: "cards", id: "plan-summary" }, [["machineCount", "machines"], ["installing", "installing"],
      ["patchInstalls", "patch installs"], ["rebootsExpected", "reboots expected"], ["predictedMakespan", "predicted makespan"]]
      .map(([k, label]) => h("div", { class: "card", "data-count": k },
        h("b", {}, k === "predictedMakespan" ? duration(s.predictedMakespanSeconds || 0) : s[k]), label))),
    h("p", { id: "plan-basis" }, s.predictedStart ? `Predicted ${when(s.predictedStart)} → ${when(s.predictedFinish)} (${s.predictedMakespan}); ` : "",
      `machines start ${order}. Durations from: `, h("span", { "data-basis": "machine" }, `own history ${b.machine || 0}`), ", ",
      h("span", { "data-basis": "peers" }, `OS peers ${b.peers || 0}`), ", ", h("span", { "data-basis": "default" }, `default ${b.default || 0}`), "; ",
      h("span", { id: "plan-error-rate" }, b.meanAbsoluteError === null || b.meanAbsoluteError === undefined
        ? "no past prediction to measure the error against yet"
        : `mean absolute error of past predictions ${percent(b.meanAbsoluteError)}`), "."),
    b.note ? h("p", { class: "muted" }, b.note) : null,
    h("p", { class: "muted", id: "plan-actions-count" }, `actions: ${counts(s.actions)}; assessments: ${counts(s.assessments)}`));
}

function planWindow(s) {
  const w = s.window;
  if (!w) return h("section", { id: "plan-window" }, h("p", { class: "muted" }, "No maintenance window: nothing checked against one."));
  const outside = s.outsideWindow || [];
  const counted = (w.wouldNotStart || 0) + (w.wouldNotFinish || 0);
  return h("section", { id: "plan-window" }, h("h3", {}, "Maintenance window"),
    h("p", {}, `${when(w.start)} → ${when(w.end)}: `, w.fits
      ? h("span", { class: "window-fit health-ok", "data-fits": "true" }, "every machine fits")
      : h("span", { class: "window-fit health-bad", "data-fits": "false" },
        `does not fit: ${w.wouldNotStart} would not start, ${w.wouldNotFinish} would not finish`)),
    outside.length ? h("table", { id: "outside-window" }, h("tr", {}, ["VM", "Code", "Why"].map((t) => h("th", {}, t))),
      outside.map((o) => h("tr", { "data-machine": o.machine }, h("td", { title: o.machine }, vmName(o.machine)),
        h("td", { class: "outside-code error" }, o.code), h("td", { class: "outside-message" }, o.message)))) : null,
    counted > outside.length ? h("p", { class: "muted" }, `the first ${outside.length} of ${counted} shown; the CSV lists all`) : null);
}

function wavesOfPlan(s) {
  const waves = s.waves || [];
  if (waves.length < 2) return null;
  return h("section", {}, h("h3", {}, "Waves"), h("table", { id: "plan-waves" },
    h("tr", {}, ["Wave", "Machines", "Predicted start", "Predicted finish"].map((t) => h("th", {}, t))),
    waves.map((w) => h("tr", {}, h("td", {}, w.name), h("td", {}, w.machineCount), h("td", {}, when(w.predictedStart)), h("td", {}, when(w.predictedFinish))))));
}

function planTotals(s) {
  const totals = s.totals || {};
  const patches = totals.byPatch || [];
  return h("section", { id: "plan-totals" }, h("h3", {}, "Patches by classification"),
    h("table", { id: "by-classification" }, h("tr", {}, ["Classification", "Patches", "Installs", "Machines"].map((t) => h("th", {}, t))),
      Object.entries(totals.byClassification || {}).map(([c, v]) => h("tr", { "data-classification": c },
        h("td", {}, c), h("td", {}, v.patches), h("td", {}, v.installs), h("td", {}, v.machines)))),
    h("h3", {}, "Most installed patches"),
    h("table", { id: "top-patches" }, h("tr", {}, ["Patch", "Name", "Classification", "Reboot", "Published", "Machines", "Versions"].map((t) => h("th", {}, t))),
      patches.slice(0, TOP_PATCHES).map((p) => h("tr", { "data-patch": p.patch }, h("td", {}, p.patch), h("td", {}, p.name),
        h("td", {}, p.classification), h("td", {}, p.rebootBehavior || ""), h("td", {}, when(p.publishedDate)), h("td", {}, p.machines),
        h("td", {}, (p.versions || []).join(", "))))),
    patches.length > TOP_PATCHES || totals.byPatchTruncated ? h("p", { class: "muted" }, "more in the CSV") : null);
}

// Each machine's predicted start → finish as a bar, against the window's start and end (shaded); a machine that
// would not fit is red. The machines of the page shown below, in order of predicted start.
function planTimeline(window, machines, paged) {
  const rows = machines.filter((m) => m.predictedStart && m.predictedFinish)
    .sort((a, b) => Date.parse(a.predictedStart) - Date.parse(b.predictedStart));
  if (!rows.length) return null;
  const W = 720, label = 170, plot = W - label - 10, rowH = 18, top = 18, H = top + rows.length * rowH + 22;
  const times = rows.flatMap((m) => [Date.parse(m.predictedStart), Date.parse(m.predictedFinish)]);
  if (window) times.push(Date.parse(window.start), Date.parse(window.end));
  const t0 = Math.min(...times), t1 = Math.max(t0 + 1000, ...times);
  const x = (iso) => label + plot * (Date.parse(iso) - t0) / (t1 - t0);
  const bottom = H - 20;
  return h("section", {}, h("h3", {}, "Predicted timeline", paged ? h("span", { class: "muted" }, " (this page's machines)") : null),
    svg("svg", { width: W, height: H, id: "plan-timeline" },
      window ? [
        svg("rect", { x: x(window.start), y: 0, width: Math.max(1, x(window.end) - x(window.start)), height: bottom, fill: "#e6f0e6", class: "window" },
          svg("title", {}, `maintenance window ${when(window.start)} → ${when(window.end)}`)),
        svg("line", { x1: x(window.end), x2: x(window.end), y1: 0, y2: bottom, stroke: "#b3261e", class: "window-end" }),
        svg("text", { x: x(window.start) + 3, y: 12 }, "window"),
        x(window.end) > W - 160  // the end's label left of its line when it would run off the chart
          ? svg("text", { x: x(window.end) - 3, y: 12, "text-anchor": "end" }, `end ${when(window.end)}`)
          : svg("text", { x: x(window.end) + 3, y: 12 }, `end ${when(window.end)}`)] : null,
      rows.map((m, i) => {
        const y = top + i * rowH, name = vmName(m.resourceId);
        return [svg("text", { x: 0, y: y + 11 }, name.length > 26 ? name.slice(0, 25) + "…" : name),
          svg("rect", { x: x(m.predictedStart), y, width: Math.max(2, x(m.predictedFinish) - x(m.predictedStart)), height: rowH - 5,
            fill: m.outside ? "#b3261e" : "#5b8def", "data-machine": m.resourceId },
          svg("title", {}, `${name}: ${when(m.predictedStart)} → ${when(m.predictedFinish)}${m.outside ? ` (${m.outside.code})` : ""}`))];
      }),
      svg("text", { x: label, y: H - 5 }, when(new Date(t0).toISOString())),
      svg("text", { x: W - 10, y: H - 5, "text-anchor": "end" }, when(new Date(t1).toISOString()))));
}

function planMachines(page, view, refresh) {
  const prediction = (p) => p ? [duration(p.seconds), h("span", { class: "muted" }, ` ${p.basis}`,
    p.samples ? `, ${p.samples} sample${p.samples === 1 ? "" : "s"}` : "", p.error !== null && p.error !== undefined ? `, ±${percent(p.error)}` : "")] : "";
  const rows = page.value.map((m) => h("tr", { "data-machine": m.resourceId },
    h("td", { title: m.resourceId }, vmName(m.resourceId)), h("td", {}, m.osType || ""), h("td", {}, m.wave ?? ""),
    h("td", {}, m.action), h("td", { class: "muted" }, (m.assessment || {}).status || "",
      (m.assessment || {}).ageHours !== undefined ? ` ${m.assessment.ageHours} h ago` : ""),
    h("td", { class: "patch-count" }, (m.patches || []).length ? h("details", {}, h("summary", {}, m.patchCount),
      h("ul", {}, m.patches.map((p) => h("li", {}, p.kbId ? `KB${String(p.kbId).replace(/^KB/i, "")} ` : "", p.name,
        p.version ? ` ${p.version}` : "", h("span", { class: "muted" }, ` ${p.classification}`))))) : m.patchCount),
    h("td", {}, m.rebootExpected ? "yes" : ""), h("td", { class: "prediction" }, prediction(m.prediction)),
    h("td", {}, when(m.predictedStart)), h("td", {}, when(m.predictedFinish)),
    h("td", { class: "outside-code error", title: m.outside ? m.outside.message : "" }, m.outside ? m.outside.code : "")));
  return h("section", {}, h("h3", {}, "Machines"),
    h("table", { id: "plan-machines" }, h("tr", {}, ["VM", "OS", "Wave", "Action", "Assessment", "Patches", "Reboot", "Predicted",
      "Predicted start", "Predicted finish", "Window"].map((t) => h("th", {}, t))), rows),
    page.nextLink ? h("button", { onclick: () => { view.link = page.nextLink; refresh(); } }, "Next page") : null,
    view.link ? h("button", { onclick: () => { view.link = null; refresh(); } }, "First page") : null);
}

function route() {
  const hash = location.hash || "#/";
  const run = hash.match(/^#\/runs\/([0-9a-f-]+)$/);
  const plan = hash.match(/^#\/plans\/([0-9a-f-]+)$/);
  if (run) runPage(run[1]);
  else if (plan) planPage(plan[1]);
  else if (hash === "#/plans") plansPage();
  else if (hash === "#/compliance") compliancePage();
  else if (hash === "#/maintenance") maintenancePage();
  else runsPage(null);
}

window.addEventListener("hashchange", route);
route();
