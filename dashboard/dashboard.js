// rmhgeoapi dashboard: jobs, a job's tasks, metrics, a map of the catalog and the lifecycle of its
// drafts, from the job API.
// Plain DOM; every value from the API is written with textContent (never as HTML).
"use strict";

(() => {
  const KEY_STORE = "rmhgeoapi.functionKey";
  const API = new URL(".", location.href); // the page is <host>/api/dashboard: the API is <host>/api/
  const FAST_REFRESH_MS = 2000;
  const SLOW_REFRESH_MS = 30000;
  const MAX_TASKS = 5000;
  const MAX_FOOTPRINTS = 2000;
  const FOOTPRINTS_PAGE = 1000; // the footprints route's largest page: a map of 1,000 in one request
  // Zoomed in this far, with this many footprints or fewer in view, the map draws each item's
  // raster (the app's preview tiles); a click draws the clicked one at any zoom.
  const PREVIEW_ZOOM = 6;
  const MAX_PREVIEWS = 40;
  const RUNNING = new Set(["Running", "Pending", "ContinuedAsNew", "Suspended"]);
  const $ = (id) => document.getElementById(id);
  const state = { key: takeKey(), timer: null, view: null, map: null, operations: new Set(),
    previews: new Map(), chosen: new Map() };

  // -- the function key: from ?code= into this tab's session storage, out of the address bar ----
  function takeKey() {
    const url = new URL(location.href);
    const given = url.searchParams.get("code");
    if (given) {
      sessionStorage.setItem(KEY_STORE, given);
      url.searchParams.delete("code");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return sessionStorage.getItem(KEY_STORE);
  }

  function authHeaders() {
    return state.key ? { "x-functions-key": state.key } : {};
  }

  class ApiError extends Error {}

  async function api(path, options = {}) {
    const response = await fetch(new URL(path, API), {
      method: options.method || "GET", headers: authHeaders(), cache: "no-store",
    });
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = { error: text.slice(0, 300) }; }
    if (response.status === 401) {
      showKeyForm();
      throw new ApiError("the function key is missing or wrong");
    }
    if (!response.ok) throw new ApiError((body && body.error) || `HTTP ${response.status}`);
    return body;
  }

  function showKeyForm() {
    $("key-form").hidden = false;
    notice("this service needs its function key");
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY_STORE, value);
    state.key = value;
    $("key-input").value = "";
    $("key-form").hidden = true;
    notice("");
    route();
  });

  function notice(text) { $("notice").textContent = text; }

  // -- small helpers --------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
  function fromNow(when) {
    if (!when) return "";
    const seconds = (new Date(when).getTime() - Date.now()) / 1000;
    const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
    for (const [unit, size] of units) {
      if (Math.abs(seconds) >= size || unit === "second") return relative.format(Math.round(seconds / size), unit);
    }
    return "";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (!Number.isFinite(seconds)) return "∞";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function partlyFailed(job) {
    return job.runtimeStatus === "Completed" && job.output && job.output.completed_with_errors;
  }

  function statusBadge(job) {
    const partly = partlyFailed(job);
    return el("span", { class: `badge ${partly ? "partly" : job.runtimeStatus}`,
      text: partly ? "Completed with errors" : job.runtimeStatus || "unknown" });
  }

  // Progress from customStatus (while running) or the output (once finished).
  function progressOf(job) {
    const progress = (job.customStatus && typeof job.customStatus === "object") ? job.customStatus : {};
    const output = (job.output && typeof job.output === "object") ? job.output : {};
    const total = output.total ?? progress.total ?? 0;
    const done = (output.done ?? progress.done ?? 0) + (output.skipped ?? 0);
    const failed = output.failed ?? progress.failed ?? 0;
    return { stage: progress.stage || (RUNNING.has(job.runtimeStatus) ? "starting" : ""),
      total, done, failed, eta: progress.eta, running: RUNNING.has(job.runtimeStatus) };
  }

  function progressBar(job) {
    const p = progressOf(job);
    const bar = el("div", { class: "bar" });
    const share = (n) => (p.total ? `${(100 * n) / p.total}%` : "0%");
    const done = el("div", { class: "done" });
    done.style.width = share(p.done);
    const failed = el("div", { class: "failed" });
    failed.style.width = share(p.failed);
    bar.append(done, failed);
    if (p.running && !p.total) {
      const running = el("div", { class: "running" });
      running.style.width = "6%";
      bar.append(running);
    }
    const parts = [p.stage, `${p.done} done`, `${p.failed} failed`, `${p.total} total`].filter(Boolean);
    if (p.running && p.eta) parts.push(`ETA ${fromNow(p.eta)}`);
    return el("div", { class: "progress" }, bar, el("span", { class: "text", text: parts.join(" · ") }));
  }

  function schedule(fn, running) {
    clearTimeout(state.timer);
    state.timer = setTimeout(fn, running ? FAST_REFRESH_MS : SLOW_REFRESH_MS);
  }

  // -- Jobs ------------------------------------------------------------------------------------
  // The list shows the newest state.jobsWanted jobs: the first page (JOBS_PAGE), and a page more
  // each time "More jobs" is pressed. Each refresh reads all of them again, in pages of up to
  // JOBS_READ (the route's largest top) following the continuation tokens, so the jobs loaded
  // further down keep their status too, and a job that new ones push off the first page moves
  // down the list instead of falling between the pages.
  const JOBS_PAGE = 100;
  const JOBS_READ = 1000;

  async function showJobs() {
    const params = new URLSearchParams();
    if ($("filter-operation").value) params.set("operation", $("filter-operation").value);
    if ($("filter-status").value) params.set("status", $("filter-status").value);
    const request = (state.jobsRequest = (state.jobsRequest || 0) + 1);
    const wanted = state.jobsWanted || JOBS_PAGE;
    const jobs = [];
    let body, token = null;
    try {
      do {
        params.set("top", String(Math.min(JOBS_READ, wanted - jobs.length)));
        if (token) params.set("continuationToken", token);
        body = await api(`jobs?${params}`);
        jobs.push(...body.jobs);
        token = body.continuationToken;
      } while (token && jobs.length < wanted && request === state.jobsRequest);
    } catch (err) {
      notice(String(err.message));
      $("jobs-more").disabled = false;
      return;
    }
    // Only the latest listing is drawn (a filter change and a refresh may cross).
    if (state.view !== "jobs" || request !== state.jobsRequest) return;
    const rows = $("jobs-rows");
    let running = false;
    for (const name of body.operations || []) state.operations.add(name);
    const drawn = [];
    for (const job of jobs) {
      state.operations.add(job.operation);
      running = running || RUNNING.has(job.runtimeStatus);
      const link = el("a", { href: `#/jobs/${encodeURIComponent(job.instanceId)}`, text: job.instanceId });
      drawn.push(el("tr", { "data-id": job.instanceId },
        el("td", { text: job.operation || "" }), el("td", { class: "id" }, link), el("td", {}, statusBadge(job)),
        el("td", {}, progressBar(job)), el("td", { text: fromNow(job.createdTime), title: job.createdTime || "" })));
    }
    rows.replaceChildren(...drawn);
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs-more").hidden = !token;
    $("jobs-more").disabled = false;
    $("jobs-count").textContent = jobs.length ? `${jobs.length} newest job${jobs.length === 1 ? "" : "s"} shown` +
      (token ? "; older ones with More jobs" : "") : "";
    fillOperations();
    $("jobs-refresh").textContent = running ? "refreshing every 2 s while jobs run" : "";
    painted("jobs");
    schedule(showJobs, running);
  }

  $("jobs-more").addEventListener("click", () => {
    $("jobs-more").disabled = true;
    state.jobsWanted = (state.jobsWanted || JOBS_PAGE) + JOBS_PAGE;
    clearTimeout(state.timer);
    showJobs();
  });

  // performance.mark "rmh:<what>-painted" once, after the first frame that shows it has been
  // painted (read by `make bench-scale PHASES=pages` as the time to first paint).
  function painted(what) {
    const name = `rmh:${what}-painted`;
    if (performance.getEntriesByName(name).length || state[name]) return;
    state[name] = true;
    requestAnimationFrame(() => setTimeout(() => performance.mark(name), 0));
  }

  function fillOperations() {
    const select = $("filter-operation");
    const known = new Set([...select.options].map((o) => o.value));
    for (const name of [...state.operations].sort()) {
      if (!known.has(name)) select.append(el("option", { value: name, text: name }));
    }
  }

  // Another filter, another list: from its first page again.
  for (const id of ["filter-operation", "filter-status"]) {
    $(id).addEventListener("change", () => { state.jobsWanted = JOBS_PAGE; showJobs(); });
  }

  // -- A job -----------------------------------------------------------------------------------
  async function showJob(id) {
    let job, tasks;
    try {
      [job, tasks] = await Promise.all([api(`jobs/${encodeURIComponent(id)}`), jobTasks(id)]);
    } catch (err) {
      notice(String(err.message));
      return;
    }
    if (state.view !== `job:${id}`) return;
    $("job-title").textContent = `${job.operation} · ${job.instanceId}`;
    $("job-status").replaceWith(Object.assign(statusBadge(job), { id: "job-status" }));
    $("job-progress").replaceChildren(progressBar(job));
    const retryable = ["Failed", "Terminated"].includes(job.runtimeStatus) || partlyFailed(job);
    $("job-retry").disabled = !retryable;
    $("job-terminate").disabled = !RUNNING.has(job.runtimeStatus);
    summary(job, tasks);
    timeline(job, tasks.tasks);
    failures(job, tasks.tasks);
    schedule(() => showJob(id), RUNNING.has(job.runtimeStatus));
  }

  // One page of up to MAX_TASKS (the route's largest): each page reads every history of the job.
  async function jobTasks(id) {
    const page = await api(`jobs/${encodeURIComponent(id)}/tasks?top=${MAX_TASKS}`);
    return { tasks: page.tasks, total: page.total };
  }

  function summary(job, tasks) {
    const output = (job.output && typeof job.output === "object") ? job.output : {};
    const rows = [["created", job.createdTime], ["updated", job.lastUpdatedTime],
      ["tasks", tasks.total > tasks.tasks.length ? `${tasks.tasks.length} of ${tasks.total} shown` : `${tasks.total}`]];
    if (output.total !== undefined) {
      rows.push(["outcome", `${output.done} done, ${output.skipped} skipped, ${output.failed} failed of ${output.total}`]);
      rows.push(["took", duration(output.seconds)]);
    }
    $("job-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || "" })]));
  }

  // One bar per file or tile: its tasks (e.g. inspect, then convert) merged into one span whose
  // outcome is the worst of theirs; the job output's failures (the orchestrator's own too) mark
  // their file failed, with the condition and reason.
  const OUTCOME_RANK = { done: 0, skipped: 1, running: 2, failed: 3 };
  function perItem(job, tasks) {
    const items = new Map();
    tasks.forEach((task, i) => {
      const name = task.name || `${task.activity} #${i + 1}`;
      const start = task.start ? new Date(task.start).getTime() : null;
      const end = task.end ? new Date(task.end).getTime() : null;
      const step = `${task.activity}: ${task.status}, ${duration(task.seconds)}`;
      const item = items.get(name);
      if (!item) {
        items.set(name, { name, status: task.status, start, end, steps: [step], error: task.error, reason: task.reason });
        return;
      }
      item.start = [item.start, start].filter((t) => t !== null).reduce((a, b) => Math.min(a, b), Infinity);
      item.end = [item.end, end].filter((t) => t !== null).reduce((a, b) => Math.max(a, b), -Infinity);
      if (!Number.isFinite(item.start)) item.start = null;
      if (!Number.isFinite(item.end)) item.end = null;
      if (OUTCOME_RANK[task.status] > OUTCOME_RANK[item.status]) item.status = task.status;
      item.error = item.error || task.error;
      item.reason = item.reason || task.reason;
      item.steps.push(step);
    });
    const output = (job.output && typeof job.output === "object") ? job.output : {};
    for (const failure of output.failures || []) {
      const item = items.get(failure.name) || { name: failure.name, start: null, end: null, steps: [] };
      Object.assign(item, { status: "failed", error: failure.error, reason: failure.reason });
      items.set(failure.name, item);
    }
    return [...items.values()];
  }

  // A label's name: the whole name up to 34 characters, else "…" and its last 33, counted in code
  // points (a cut by UTF-16 units would split an emoji, or any character past U+FFFF, in two).
  function shortName(name) {
    const points = Array.from(name);
    return points.length > 34 ? `…${points.slice(-33).join("")}` : name;
  }

  function timeline(job, taskRecords) {
    const box = $("timeline");
    const legend = $("timeline-legend");
    const tasks = perItem(job, taskRecords);
    const counts = { done: 0, skipped: 0, failed: 0, running: 0 };
    for (const t of tasks) counts[t.status] = (counts[t.status] || 0) + 1;
    legend.replaceChildren(...Object.entries(counts).map(([status, n]) => {
      const chip = el("i", { class: `chip-${status}` });
      chip.style.background = `var(--${status})`;
      return el("span", {}, chip, `${status} ${n}`);
    }));
    if (!tasks.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No file or tile tasks recorded (yet)." }));
      return;
    }
    // A task still "running" in a job that has ended (terminated, failed) ends with the job.
    const now = Date.now();
    const jobRuns = RUNNING.has(job.runtimeStatus);
    const jobEnd = jobRuns ? now : new Date(job.lastUpdatedTime || now).getTime();
    const times = tasks.flatMap((t) => [t.start, t.end]).filter((t) => t !== null);
    const t0 = Math.min(...times, new Date(job.createdTime || now).getTime());
    const t1 = Math.max(...times, jobEnd, t0 + 1);
    const width = Math.max(600, box.clientWidth - 14);
    const label = 220;
    const plot = width - label - 10;
    const row = Math.max(3, Math.min(18, Math.floor(420 / tasks.length)));
    const height = tasks.length * row + 24;
    const x = (t) => label + ((t - t0) / Math.max(1, t1 - t0)) * plot;
    const chart = svg("svg", { width, height, role: "img", "aria-label": "task timeline" });
    tasks.forEach((task, i) => {
      const start = task.start ?? t0;
      const end = task.end ?? (task.status === "running" ? Math.max(start, jobEnd) : start);
      const y = i * row + 2;
      if (row >= 11) {
        const name = svg("text", { x: label - 6, y: y + row - 4, "text-anchor": "end" });
        name.textContent = shortName(task.name);
        chart.append(name);
      }
      const rect = svg("rect", { class: `task ${task.status}`, x: x(start), y, height: Math.max(2, row - 2),
        width: Math.max(3, x(end) - x(start)), "data-index": i });
      chart.append(rect);
    });
    const axis = svg("text", { x: label, y: height - 6 });
    axis.textContent = `${new Date(t0).toLocaleTimeString()} → ${duration((t1 - t0) / 1000)}`;
    chart.append(axis);
    chart.addEventListener("mousemove", (event) => {
      const index = event.target.getAttribute && event.target.getAttribute("data-index");
      if (index === null || index === undefined) { $("tooltip").hidden = true; return; }
      const task = tasks[Number(index)];
      const span = task.start !== null && task.end !== null ? duration((task.end - task.start) / 1000) : "–";
      const outcome = task.status === "running" && !jobRuns ? `not finished (the job is ${job.runtimeStatus})` : task.status;
      const lines = [task.name, `${outcome} · ${span}`, ...task.steps];
      if (task.error) lines.push(task.error);
      if (task.reason) lines.push(task.reason);
      const tip = $("tooltip");
      tip.textContent = lines.join("\n");
      tip.style.left = `${event.clientX + 14}px`;
      tip.style.top = `${event.clientY + 14}px`;
      tip.hidden = false;
    });
    chart.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    box.replaceChildren(chart);
  }

  // Failures grouped by condition: the job output's (every failure, the orchestrator's too),
  // else the failed tasks seen so far.
  function failures(job, tasks) {
    const output = (job.output && typeof job.output === "object") ? job.output : {};
    const listed = output.failures || tasks.filter((t) => t.status === "failed")
      .map((t) => ({ name: t.name, error: t.error, reason: t.reason }));
    const counts = output.failure_reasons || {};
    const groups = new Map();
    for (const f of listed) {
      const condition = f.error || "Error";
      if (!groups.has(condition)) groups.set(condition, []);
      groups.get(condition).push(f);
    }
    const box = $("failures");
    if (!groups.size) {
      box.replaceChildren(el("p", { class: "muted", text: "None." }));
      return;
    }
    box.replaceChildren(...[...groups.entries()].map(([condition, items]) => {
      const n = counts[condition] ?? items.length;
      const list = el("ul", {}, ...items.slice(0, 50).map((f) =>
        el("li", {}, el("code", { text: f.name }), `: ${f.reason || "(no reason given)"}`)));
      return el("div", { class: "failure-group" },
        el("h4", { text: `${condition} · ${n} ${n === 1 ? "item" : "items"}` }), list);
    }));
  }

  async function jobAction(action) {
    const id = state.view.slice(4);
    $("job-action").textContent = `${action}…`;
    try {
      await api(`jobs/${encodeURIComponent(id)}/${action}`, { method: "POST" });
      $("job-action").textContent = action === "retry" ? "retry started" : "terminating";
    } catch (err) {
      $("job-action").textContent = `${action} refused: ${err.message}`;
    }
    showJob(id);
  }

  $("job-retry").addEventListener("click", () => jobAction("retry"));
  $("job-terminate").addEventListener("click", () => jobAction("terminate"));

  // -- Metrics ---------------------------------------------------------------------------------
  async function showMetrics() {
    let body;
    try {
      body = await api("metrics");
    } catch (err) {
      notice(String(err.message));
      return;
    }
    if (state.view !== "metrics") return;
    const cards = Object.entries(body.operations).map(([name, m]) => {
      const jobs = m.jobs;
      return el("div", { class: "metric-card", "data-operation": name },
        el("h3", { text: name }),
        el("div", { class: "counts", text: `jobs: ${jobs.started} started, ${jobs.completed} completed, ` +
          `${jobs.completed_with_errors} with errors, ${jobs.failed} failed, ${jobs.running} running · ` +
          `tasks: ${m.tasks.total} (${m.tasks.failed} failed)` }),
        el("p", { class: "chart-title", text: "jobs by outcome" }), outcomeChart(jobs),
        el("p", { class: "chart-title", text: "task duration" }), percentileChart(m.task_seconds),
        el("p", { class: "chart-title", text: "job duration" }), percentileChart(m.job_seconds));
    });
    $("metrics").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "No jobs yet." })]));
    schedule(showMetrics, Object.values(body.operations).some((m) => m.jobs.running > 0));
  }

  function outcomeChart(jobs) {
    const width = 300;
    const chart = svg("svg", { width, height: 18 });
    const keys = ["completed", "completed_with_errors", "failed", "running"];
    const total = keys.reduce((n, k) => n + (jobs[k] || 0), 0) || 1;
    let x = 0;
    for (const k of keys) {
      const w = (width * (jobs[k] || 0)) / total;
      if (w > 0) {
        const seg = svg("rect", { class: `seg-${k}`, x, y: 2, width: w, height: 14 });
        const title = svg("title");
        title.textContent = `${k.replaceAll("_", " ")}: ${jobs[k]}`;
        seg.append(title);
        chart.append(seg);
      }
      x += w;
    }
    return chart;
  }

  // p50 / p95 / p99 of a duration histogram (bucket upper bounds), as three bars.
  function percentileChart(summary) {
    const width = 300;
    const chart = svg("svg", { width, height: 58 });
    const values = ["p50", "p95", "p99"].map((k) => [k, summary[k]]);
    const finite = values.map(([, v]) => v).filter((v) => v !== null && Number.isFinite(v));
    const top = Math.max(...finite, 0.001);
    values.forEach(([k, v], i) => {
      const y = i * 18 + 2;
      const name = svg("text", { x: 0, y: y + 11 });
      name.textContent = k;
      chart.append(name);
      const w = v === null ? 0 : (Number.isFinite(v) ? (200 * v) / top : 200);
      chart.append(svg("rect", { class: `bar-${k}`, x: 30, y, width: Math.max(w, v === null ? 0 : 2), height: 14 }));
      const text = svg("text", { x: 36 + w, y: y + 11 });
      text.textContent = v === null ? "no data" : `≤ ${duration(v)}`;
      chart.append(text);
    });
    return chart;
  }

  // -- Map -------------------------------------------------------------------------------------
  // The world outline, the collections and the footprints are fetched at once (one after the
  // other, the footprints of a map of 1,000 were painted 1.3 s after the page was opened).
  async function showMap() {
    if (!state.map) createMap(); // not awaited: the outline draws itself under whatever is there
    state.map.invalidateSize();
    await Promise.all([loadCollections(), loadFootprints({ fit: !state.fitted })]);
  }

  async function createMap() {
    const map = L.map("map", { minZoom: 1, maxZoom: 18, worldCopyJump: false, zoomSnap: 0.25,
      maxBounds: [[-90, -540], [90, 540]] });
    map.setView([20, 0], 2);
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution("Natural Earth (world-atlas)");
    // Thumbnails above the vector layers (one SVG for the world and the footprints), under
    // the rasters' preview tiles (which cover them once loaded) and the controls; they take no
    // clicks, so the footprint beneath stays clickable.
    map.createPane("thumbnails");
    map.getPane("thumbnails").style.zIndex = "430";
    map.getPane("thumbnails").style.pointerEvents = "none";
    // The rasters themselves (preview tiles) above the world outline and the footprints' fill.
    map.createPane("previews");
    map.getPane("previews").style.zIndex = "440";
    map.getPane("previews").style.pointerEvents = "none";
    state.map = map;
    state.footprints = L.geoJSON(null, {
      style: (feature) => ({ className: "footprint", color: "#c2410c", weight: 1.5, fillColor: "#ff7f0e",
        fillOpacity: state.previews.has(featureKey(feature)) ? 0 : 0.55 }),
      onEachFeature: (feature, layer) => layer.on("click", () => selectItem(feature, layer)),
    }).addTo(map);
    let pending = null;
    map.on("moveend", () => {
      clearTimeout(pending);
      pending = setTimeout(() => loadFootprints({ fit: false }), 300);
    });
    $("map-collection").addEventListener("change", () => loadFootprints({ fit: true }));
    try {
      const response = await fetch(new URL("dashboard/static/vendor/world-atlas/countries-110m.json", API));
      const world = await response.json();
      // Land filled without a stroke (its rings run along the antimeridian), and the borders
      // between countries as lines (shared arcs only); rings that cross the antimeridian are
      // unwrapped so that no edge spans the whole map.
      L.geoJSON(unwrapped(topojson.mesh(world, world.objects.countries, (a, b) => a !== b)), {
        interactive: false, style: { className: "border", color: "#a3a8b0", weight: 0.6, fill: false },
      }).addTo(map).bringToBack();
      L.geoJSON(unwrapped(topojson.feature(world, world.objects.land)), {
        interactive: false, style: { className: "land", stroke: false, fillColor: "#ece9e1", fillOpacity: 1 },
      }).addTo(map).bringToBack();
    } catch (err) {
      notice(`world outline not loaded: ${err.message}`);
    }
  }

  // Longitudes made continuous along each line or ring (a step of more than 180° is a crossing).
  function unwrapLine(points) {
    let shift = 0;
    let previous = null;
    return points.map(([lon, lat]) => {
      if (previous !== null && lon + shift - previous > 180) shift -= 360;
      else if (previous !== null && lon + shift - previous < -180) shift += 360;
      previous = lon + shift;
      return [lon + shift, lat];
    });
  }

  function unwrapped(geojson) {
    const geometry = (g) => {
      if (g.type === "LineString") return { ...g, coordinates: unwrapLine(g.coordinates) };
      if (g.type === "MultiLineString" || g.type === "Polygon") return { ...g, coordinates: g.coordinates.map(unwrapLine) };
      if (g.type === "MultiPolygon") return { ...g, coordinates: g.coordinates.map((p) => p.map(unwrapLine)) };
      if (g.type === "GeometryCollection") return { ...g, geometries: g.geometries.map(geometry) };
      return g;
    };
    if (geojson.type === "FeatureCollection") {
      return { ...geojson, features: geojson.features.map((f) => ({ ...f, geometry: geometry(f.geometry) })) };
    }
    if (geojson.type === "Feature") return { ...geojson, geometry: geometry(geojson.geometry) };
    return geometry(geojson);
  }

  async function loadCollections() {
    try {
      const body = await api("collections");
      const select = $("map-collection");
      const known = new Set([...select.options].map((o) => o.value));
      for (const id of body.collections) if (!known.has(id)) select.append(el("option", { value: id, text: id }));
    } catch (err) {
      notice(String(err.message));
    }
  }

  function viewBbox() {
    const b = state.map.getBounds();
    let west = b.getWest(), east = b.getEast();
    if (east - west >= 360 || west < -180 || east > 180) { west = -180; east = 180; }
    const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
    return [west, clamp(b.getSouth(), -90, 90), east, clamp(b.getNorth(), -90, 90)].map((v) => v.toFixed(6)).join(",");
  }

  async function loadFootprints({ fit }) {
    if (state.view !== "map") return;
    const params = new URLSearchParams({ limit: String(FOOTPRINTS_PAGE) });
    if ($("map-collection").value) params.set("collection", $("map-collection").value);
    if (!fit) params.set("bbox", viewBbox());
    const features = [];
    let more = false;
    try {
      for (;;) {
        const page = await api(`footprints?${params}`);
        features.push(...page.features);
        if (!page.next) break;
        if (features.length >= MAX_FOOTPRINTS) { more = true; break; }
        params.set("token", page.next);
      }
    } catch (err) {
      notice(String(err.message));
      return;
    }
    state.footprints.clearLayers();
    // Items of another body (Mars, the Moon...) have that body's lon/lat: not drawn on the Earth.
    const elsewhere = features.filter((f) => f.body);
    const earth = features.filter((f) => !f.body);
    showPreviews(earth);
    state.footprints.addData(earth);
    if (earth.length) painted("footprints");
    const bodies = [...new Set(elsewhere.map((f) => f.body))].sort().join(", ");
    $("map-count").textContent = `${earth.length} footprints${more ? ` (the first ${features.length}: zoom in for the rest)` : ""}` +
      (elsewhere.length ? `; ${elsewhere.length} on ${bodies} not drawn on the Earth` : "");
    if (fit && earth.length) {
      state.fitted = true;
      // No closer than zoom 7: the 1:110m outline still gives a place its context there.
      state.map.fitBounds(state.footprints.getBounds(), { padding: [30, 30], maxZoom: 7 });
    }
  }

  // -- raster previews: the app's 256² PNG tiles of an item's asset, fetched with the key -------
  const enc = encodeURIComponent;
  const featureKey = (feature) => `${feature.collection}/${feature.id}`;

  const PreviewLayer = L.GridLayer.extend({
    createTile(coords, done) {
      const tile = document.createElement("img");
      tile.alt = "";
      tile.className = "preview-tile";
      const { collection, item, asset } = this.options;
      const path = `previews/${enc(collection)}/${enc(item)}/${enc(asset)}/${coords.z}/${coords.x}/${coords.y}`;
      const settle = (outcome) => { tile.dataset.state = outcome; done(null, tile); };
      fetch(new URL(path, API), { headers: authHeaders() }).then(async (response) => {
        // 404 outside the raster, 422 where it has no overview for the zoom: nothing to draw.
        if (!response.ok) { settle("empty"); return; }
        const url = URL.createObjectURL(await response.blob());
        tile.onload = () => { URL.revokeObjectURL(url); settle("loaded"); };
        tile.onerror = () => settle("empty");
        tile.src = url;
      }).catch(() => settle("empty"));
      return tile;
    },
  });

  function previewBounds(feature) {
    const b = feature.bbox;
    if (!b) return null;
    const [west, south, east, north] = b.length === 6 ? [b[0], b[1], b[3], b[4]] : b;
    return west <= east ? L.latLngBounds([[south, west], [north, east]]) : null;
  }

  // Draw the rasters of the footprints in view when zoomed in (and always the selected one).
  function showPreviews(features) {
    const wanted = new Map();
    if (state.map.getZoom() >= PREVIEW_ZOOM) {
      for (const f of features.filter((f) => (f.previews || []).length).slice(0, MAX_PREVIEWS)) wanted.set(featureKey(f), f);
    }
    if (state.selected && (state.selected.previews || []).length) wanted.set(featureKey(state.selected), state.selected);
    for (const [key, entry] of state.previews) {
      if (!wanted.has(key)) { entry.layer.remove(); state.previews.delete(key); }
    }
    for (const [key, feature] of wanted) drawPreview(feature, state.chosen.get(key) || feature.previews[0]);
  }

  function drawPreview(feature, asset) {
    const key = featureKey(feature);
    const shown = state.previews.get(key);
    if (shown && shown.asset === asset) return;
    if (shown) shown.layer.remove();
    const bounds = previewBounds(feature);
    if (!bounds) return;
    const layer = new PreviewLayer({ collection: feature.collection, item: feature.id, asset, bounds,
      pane: "previews", className: "preview", tileSize: 256, maxZoom: 24, updateWhenZooming: false });
    state.previews.set(key, { layer, asset });
    layer.addTo(state.map);
  }

  // An item with several rasters (time steps, variables): choose which one the map draws.
  function previewChooser(feature) {
    const keys = feature.previews || [];
    if (keys.length < 2) return [];
    const select = el("select", { id: "preview-asset" });
    for (const key of keys) {
      const title = (feature.assets[key] && feature.assets[key].title) || key;
      select.append(el("option", { value: key, text: title === key ? key : `${key}: ${title}` }));
    }
    select.value = state.chosen.get(featureKey(feature)) || keys[0];
    select.addEventListener("change", () => {
      state.chosen.set(featureKey(feature), select.value);
      drawPreview(feature, select.value);
    });
    return [el("h4", { text: "Raster shown" }), el("label", {}, "Asset ", select)];
  }

  // How a browser opens an asset: a public URL, a signed URL from the API, or the embedded host's
  // /files (with the key when the host has keys; its file mounts take ?code= like its routes).
  async function assetUrl(asset, { forImage = false } = {}) {
    const open = asset.open;
    if (!open) return null;
    if (open.kind === "public") return open.url;
    if (open.kind === "signed") return (await api(open.url)).href;
    const url = new URL(open.url, location.origin);
    if (!state.key) return url.href;
    if (forImage) {
      const response = await fetch(url, { headers: authHeaders() });
      if (!response.ok) throw new ApiError(`HTTP ${response.status}`);
      return URL.createObjectURL(await response.blob());
    }
    url.searchParams.set("code", state.key);
    return url.href;
  }

  async function selectItem(feature, layer) {
    state.selected = feature;
    if ((feature.previews || []).length) drawPreview(feature, state.chosen.get(featureKey(feature)) || feature.previews[0]);
    state.footprints.resetStyle();
    // Selected: outlined; unfilled when its raster or its thumbnail is drawn at its footprint.
    layer.setStyle({ weight: 3, color: "#1d2330",
      fillOpacity: feature.thumbnail || state.previews.has(featureKey(feature)) ? 0 : 0.55 });
    const panel = $("item");
    const props = feature.properties || {};
    const table = el("table", {}, ...Object.entries(props).map(([k, v]) =>
      el("tr", {}, el("td", { text: k }), el("td", { text: typeof v === "object" ? JSON.stringify(v).slice(0, 300) : String(v) }))));
    const assets = el("ul", {});
    for (const [key, asset] of Object.entries(feature.assets || {})) {
      const link = el("a", { rel: "noopener noreferrer", target: "_blank", text: key, "data-asset": key });
      const item = el("li", {}, link, ` ${asset.type || ""}`);
      assets.append(item);
      assetUrl(asset).then((url) => {
        if (url) link.href = url;
        else item.append(" (not reachable from a browser)");
      }).catch((err) => item.append(` (${err.message})`));
      if (asset.open && asset.open.kind === "signed") link.addEventListener("click", (event) => resign(event, link, asset));
    }
    panel.replaceChildren(el("h3", { text: feature.id }),
      el("p", { class: "muted", text: `collection ${feature.collection}` }), ...previewChooser(feature),
      el("h4", { text: "Assets" }), assets, el("h4", { text: "Properties" }), table);
    await showThumbnail(feature);
  }

  // A signed link that has expired (or will within a minute: the panel may have stayed open
  // longer than the signature lives) is signed again when clicked, and opened once it is.
  function resign(event, link, asset) {
    const expiry = Date.parse(new URL(link.href, location.href).searchParams.get("se") || "");
    if (!Number.isNaN(expiry) && expiry - Date.now() > 60000) return;
    event.preventDefault();
    const tab = window.open("", "_blank"); // now, while the click still allows opening a tab
    if (tab) tab.opener = null;
    assetUrl(asset).then((url) => {
      link.href = url;
      if (tab) tab.location = url;
    }).catch((err) => {
      if (tab) tab.close();
      notice(`${asset.title || "asset"} not signed: ${err.message}`);
    });
  }

  async function showThumbnail(feature) {
    if (state.thumbnail) {
      state.thumbnail.remove();
      state.thumbnail = null;
    }
    if (!feature.thumbnail || !feature.bbox) return;
    try {
      const url = await assetUrl(feature.assets[feature.thumbnail], { forImage: true });
      if (!url) return;
      const [west, south, east, north] = feature.bbox.length === 6
        ? [feature.bbox[0], feature.bbox[1], feature.bbox[3], feature.bbox[4]] : feature.bbox;
      state.thumbnail = L.imageOverlay(url, [[south, west], [north, east]], { className: "thumbnail", opacity: 1, pane: "thumbnails" })
        .addTo(state.map);
    } catch (err) {
      notice(`thumbnail not shown: ${err.message}`);
    }
  }

  // -- Lifecycle: drafts and their transitions ---------------------------------------------------
  async function showLifecycle() {
    let body;
    try {
      body = await api("lifecycle");
    } catch (err) {
      notice(String(err.message));
      return;
    }
    if (state.view !== "lifecycle") return;
    $("drafts-rows").replaceChildren(...body.drafts.map((d) => el("tr", { "data-collection": d.collection },
      el("td", { text: d.collection }), el("td", { text: String(d.items) }),
      el("td", { text: d.whole ? "the whole collection" : "some items" }),
      el("td", { text: fromNow(d.since), title: d.since || "" }))));
    $("drafts-empty").hidden = body.drafts.length > 0;
    $("transitions-rows").replaceChildren(...body.transitions.map((t) => el("tr", { "data-action": t.action },
      el("td", { text: fromNow(t.at), title: t.at || "" }),
      el("td", {}, el("span", { class: `badge action-${t.action}`, text: t.action })),
      el("td", { text: t.collection }), el("td", { text: String(t.items) }), el("td", { class: "by", text: t.by }),
      el("td", { class: "reason", text: t.reason }),
      el("td", { class: "id" }, t.job ? el("a", { href: `#/jobs/${encodeURIComponent(t.job)}`, text: t.job }) : ""))));
    $("transitions-empty").hidden = body.transitions.length > 0;
    schedule(showLifecycle, false);
  }

  // -- views -----------------------------------------------------------------------------------
  function route() {
    clearTimeout(state.timer);
    const hash = location.hash || "#/jobs";
    const job = hash.match(/^#\/jobs\/(.+)$/);
    const view = job ? "job" : ({ "#/metrics": "metrics", "#/map": "map", "#/lifecycle": "lifecycle" }[hash] || "jobs");
    for (const name of ["jobs", "job", "metrics", "map", "lifecycle"]) $(`view-${name}`).hidden = name !== view;
    for (const a of document.querySelectorAll("header nav a")) {
      a.classList.toggle("active", a.dataset.view === (view === "job" ? "jobs" : view));
    }
    $("tooltip").hidden = true;
    if (job) {
      state.view = `job:${decodeURIComponent(job[1])}`;
      showJob(decodeURIComponent(job[1]));
    } else {
      state.view = view;
      ({ jobs: showJobs, metrics: showMetrics, map: showMap, lifecycle: showLifecycle })[view]();
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
