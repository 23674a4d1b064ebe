// The live web view of `stepstream serve` (GET /): workflows, recent runs, and one run live.
//
// It speaks the server's own API with relative URLs (so it works where the server is
// mounted): GET workflows, handlers, workflows/{name}/representation; POST
// workflows/{name}/run-nowait; the run's events (GET events/{id}) and step frames
// (GET handlers/{id}/steps) read as SSE through fetch, resumed with Last-Event-ID after a
// dropped connection; POST events/{id} answers an InputRequiredEvent. A page reload reads
// both streams again from the start, so the view is rebuilt with no gap and no duplicate.
//
// Everything a run sent is data: it reaches the page through textContent and text nodes
// only (never innerHTML), with control characters shown as escapes, as the CLI does.
"use strict";

(() => {
  // The HTML export's status colours (stepstream/cli/_html.py, _COLOURS).
  const COLOURS = { ok: "#16a34a", error: "#dc2626", timeout: "#ea580c", cancelled: "#9ca3af" };
  const RUNNING = "#2563eb";
  const WAITING = "#7c3aed";
  const GREY = "#64748b";
  const MAX_EVENTS = 500; // rows of the events table
  const MAX_BLOCKS = 200; // blocks of streamed text
  const MAX_TEXT = 20000; // characters of one text block
  const SVG = "http://www.w3.org/2000/svg";

  // -- safe text ---------------------------------------------------------------------

  const ALWAYS = "\\x0b-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069";
  const LONE = "[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]";
  const UNSAFE_LINE = new RegExp(`[\\x00-\\x0a${ALWAYS}]|${LONE}`, "g");
  const UNSAFE_TEXT = new RegExp(`[\\x00-\\x08${ALWAYS}]|${LONE}`, "g");
  const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };

  /** Text with control characters shown as escapes (stepstream._visible.visible). */
  function visible(value, multiline = false) {
    let text = typeof value === "string" ? value : String(value);
    if (multiline) text = text.replace(/\r\n/g, "\n");
    return text.replace(multiline ? UNSAFE_TEXT : UNSAFE_LINE, (c) => {
      if (NAMED[c]) return NAMED[c];
      const code = c.charCodeAt(0);
      return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    });
  }

  function cut(text, limit) {
    return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
  }

  /** An element; string children become text nodes (never markup). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children) node.append(child);
    return node;
  }

  const $ = (id) => document.getElementById(id);
  const ms = (v) => `${v.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })} ms`;
  const took = (v) => (v < 1000 ? `${v.toFixed(1)} ms` : `${(v / 1000).toFixed(2)} s`);

  /** An event's fields, declared and dynamic (``_data``) alike (the CLI's fields_of()). */
  function fieldsOf(value) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return {};
    const { _data: dynamic, ...declared } = value;
    return { ...declared, ...(dynamic && typeof dynamic === "object" ? dynamic : {}) };
  }

  /** ``k=v`` pairs of an event's fields on one line (the CLI's compact()). */
  function compact(type, value, limit = 160) {
    const fields = Object.entries(fieldsOf(value));
    const parts = fields.map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    return cut(visible(`${type} ${parts.join(" ")}`.trim()), limit);
  }

  // -- the API -----------------------------------------------------------------------

  let token = sessionStorage.getItem("stepstream.token") || "";

  class ApiError extends Error {}

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      askToken(await detail(response));
      throw new ApiError("unauthorised");
    }
    return response;
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  async function getJson(path) {
    const response = await api(path);
    if (!response.ok && response.status !== 202) throw new ApiError(await detail(response));
    return response.json();
  }

  /** A handler by id, from the list (GET handlers/{id} answers a failed run with a 500). */
  async function handlerById(handlerId) {
    const { handlers } = await getJson("handlers");
    const found = handlers.find((h) => h.handler_id === handlerId);
    if (!found) throw new ApiError(`Handler not found: no handler '${handlerId}' on this server`);
    return found;
  }

  function askToken(why) {
    $("token-why").textContent = visible(why);
    $("token").classList.remove("hidden");
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem("stepstream.token", token);
    $("token").classList.add("hidden");
    route();
  });

  function notice(text) {
    $("notice").textContent = text ? visible(text) : "";
  }

  /**
   * Follow an SSE stream of the server from its start: ``onFrame(id, type, data)`` for
   * each frame, resumed after the last id when the connection drops; resolves at its end.
   */
  async function follow(path, onFrame, signal) {
    let last = null;
    for (let attempt = 0; !signal.aborted; attempt++) {
      const headers = { Accept: "text/event-stream" };
      if (last !== null) headers["Last-Event-ID"] = String(last);
      let response;
      try {
        response = await api(`${path}?after_sequence=-1`, { headers, signal });
      } catch (error) {
        if (signal.aborted || error instanceof ApiError) return;
        await pause(Math.min(500 * (attempt + 1), 5000), signal);
        continue;
      }
      if (response.status === 204) return;
      if (!response.ok) {
        notice(await detail(response));
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let ended = false;
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            ended = true;
            break;
          }
          buffer += value;
          let cut = buffer.indexOf("\n\n");
          while (cut >= 0) {
            const frame = parseFrame(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
            cut = buffer.indexOf("\n\n");
            if (frame === null) continue;
            if (frame.type === "StreamClosedEvent") {
              const closed = frame.data.value || {};
              notice(closed.detail || "stream closed");
              if (closed.reason !== "events_dropped") return;
              last = closed.resume_after_sequence;
              continue;
            }
            if (frame.id !== null) last = frame.id;
            onFrame(frame.id, frame.type, frame.data);
          }
        }
      } catch {
        if (signal.aborted) return;
      }
      if (ended) return; // the run's end closes the stream
      notice("connection lost; resuming…");
      await pause(300, signal);
      notice("");
    }
  }

  function parseFrame(block) {
    let id = null;
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":") || !line) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "id") id = Number(value);
      else if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return null;
    return { id, type, data: JSON.parse(data.join("\n")) };
  }

  function pause(delay, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, delay);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // -- the home view -----------------------------------------------------------------

  async function home(signal) {
    $("home").classList.remove("hidden");
    const { workflows } = await getJson("workflows");
    const box = $("workflows");
    box.replaceChildren();
    for (const name of workflows) box.append(await workflowRow(name));
    if (!workflows.length) box.append(el("p", { class: "note" }, "No workflows are served."));
    while (!signal.aborted) {
      await listRuns();
      await pause(2000, signal);
    }
  }

  async function workflowRow(name) {
    let fields = {};
    try {
      const schema = await getJson(`workflows/${encodeURIComponent(name)}/schema`);
      for (const [key, prop] of Object.entries(schema.start.properties || {})) {
        fields[key] = "default" in prop ? prop.default : prop.type === "integer" || prop.type === "number" ? 0 : "";
      }
    } catch (error) {
      if (error instanceof ApiError) throw error;
      fields = {};
    }
    const input = el("textarea", { spellcheck: "false", "aria-label": `start event of ${name}` });
    input.value = JSON.stringify(fields);
    const problem = el("p", { class: "note err" });
    const button = el("button", { type: "button" }, "Run");
    button.addEventListener("click", async () => {
      problem.textContent = "";
      let start;
      try {
        start = JSON.parse(input.value || "{}");
      } catch (error) {
        problem.textContent = `not JSON: ${error.message}`;
        return;
      }
      button.disabled = true;
      try {
        const response = await api(`workflows/${encodeURIComponent(name)}/run-nowait`, {
          method: "POST",
          body: JSON.stringify({ start_event: start }),
        });
        if (!response.ok) {
          problem.textContent = visible(await detail(response), true);
          return;
        }
        const handler = await response.json();
        location.hash = `run/${encodeURIComponent(handler.handler_id)}`;
      } finally {
        button.disabled = false;
      }
    });
    return el("div", { class: "wf" }, el("strong", {}, visible(name)), el("div", {}, input, problem), button);
  }

  function badge(status) {
    const node = el("span", { class: "badge" }, visible(status));
    const colour = { completed: COLOURS.ok, failed: COLOURS.error, cancelled: COLOURS.cancelled, running: RUNNING }[status];
    node.style.background = colour || GREY;
    return node;
  }

  async function listRuns() {
    const { handlers } = await getJson("handlers");
    const rows = handlers.slice(-50).reverse().map((h) => {
      const link = el("a", { href: `#run/${encodeURIComponent(h.handler_id)}`, class: "mono" }, visible(h.handler_id));
      return el(
        "tr",
        {},
        el("td", {}, link),
        el("td", {}, visible(h.workflow_name)),
        el("td", {}, badge(h.status)),
        el("td", {}, visible((h.started_at || "").replace("T", " ").slice(0, 19))),
        el("td", { class: "mono" }, visible(h.run_id || "")),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "dim" }, "No runs yet.")));
    $("runs").replaceChildren(...rows);
  }

  // -- one run, live -------------------------------------------------------------------

  class RunView {
    constructor(handler, steps) {
      this.handler = handler;
      this.rows = new Map(steps.map((s) => [s, { state: "idle", runs: 0, retries: 0, ms: 0, error: "", waitingFor: "" }]));
      this.attempts = new Map(); // "step|start_ms|worker" -> bar
      this.seqs = new Set();
      this.blocks = [];
      this.prompt = null; // the last InputRequiredEvent's text
      this.end = null; // the run's last step frame
      this.latest = { at: 0, when: performance.now() }; // the run's clock, as last heard
    }

    now() {
      if (this.end) return this.end.at_ms;
      return this.latest.at + (performance.now() - this.latest.when);
    }

    // the event stream
    event(seq, type, envelope) {
      if (seq !== null && this.seqs.has(seq)) return; // a resumed stream never repeats, but be sure
      if (seq !== null) this.seqs.add(seq);
      const value = fieldsOf(envelope.value);
      const types = [type, ...(envelope.types || [])];
      this.addEventRow(seq, type, value);
      if (types.includes("StopEvent")) return;
      if (types.includes("InputRequiredEvent")) {
        const text = ["prefix", "prompt", "question"].map((k) => value[k]).find((v) => typeof v === "string");
        this.prompt = text || "input required";
      }
      const entries = Object.entries(value);
      const text = entries.length === 1 && typeof entries[0][1] === "string" ? entries[0][1] : null;
      const last = this.blocks[this.blocks.length - 1];
      if (text !== null && last && last.type === type && last.text !== null) {
        last.text = cut(last.text + text, MAX_TEXT);
        last.node.textContent = visible(last.text, true);
        $("output").scrollTop = $("output").scrollHeight;
        return;
      }
      const node = text !== null ? el("pre", {}, visible(text, true)) : el("p", { class: "line" }, compact(type, value));
      this.blocks.push({ type, text, node });
      $("output").append(node);
      $("output").scrollTop = $("output").scrollHeight;
      if (this.blocks.length > MAX_BLOCKS) this.blocks.shift().node.remove();
      this.renderPrompt();
    }

    addEventRow(seq, type, value) {
      const payload = cut(visible(JSON.stringify(value)), 200);
      const row = el("tr", { "data-seq": String(seq) }, el("td", { class: "num" }, String(seq)), el("td", {}, visible(type)), el("td", { class: "mono" }, payload));
      const body = $("events");
      body.append(row);
      if (body.rows.length > MAX_EVENTS) body.rows[0].remove();
    }

    // the step stream
    step(frame) {
      this.latest = { at: frame.at_ms, when: performance.now() };
      if (frame.step === null) {
        this.end = frame;
        this.renderAll();
        return;
      }
      let row = this.rows.get(frame.step);
      if (!row) {
        row = { state: "idle", runs: 0, retries: 0, ms: 0, error: "", waitingFor: "" };
        this.rows.set(frame.step, row);
      }
      const key = `${frame.step}|${frame.start_ms}|${frame.worker}`;
      let bar = this.attempts.get(key);
      if (!bar) {
        bar = { step: frame.step, attempt: frame.attempt, start: frame.start_ms, end: null, state: "running" };
        this.attempts.set(key, bar);
        row.runs += 1;
      }
      bar.state = frame.state;
      row.state = frame.state;
      row.waitingFor = frame.waiting_for || "";
      if (!["running", "waiting"].includes(frame.state)) {
        bar.end = frame.at_ms;
        row.ms = frame.at_ms - frame.start_ms;
        row.error = frame.error || "";
        if (frame.state === "retrying") row.retries += 1;
      }
      this.renderAll();
    }

    renderAll() {
      this.renderMeta();
      this.renderSteps();
      this.renderWaterfall();
      this.renderPrompt();
    }

    renderMeta() {
      const h = this.handler;
      const status = this.end ? { run_ok: "completed", run_cancelled: "cancelled" }[this.end.state] || "failed" : h.status;
      $("run-title").textContent = visible(h.workflow_name);
      $("run-sub").textContent = `handler ${visible(h.handler_id)}`;
      const items = [
        ["status", badge(status)],
        ["elapsed", ms(this.now())],
        ["events streamed", String(this.seqs.size)],
        ["step attempts", String(this.attempts.size)],
        ["run_id", el("span", { class: "mono" }, visible(h.run_id || ""))],
        ["trace_id", el("span", { class: "mono" }, visible(h.trace_id || "-"))],
        ["started (UTC)", visible((h.started_at || "").replace("T", " ").slice(0, 23))],
        ["result", el("span", { class: "mono", id: "run-result" }, this.resultText())],
      ];
      $("run-meta").replaceChildren(...items.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
    }

    resultText() {
      const h = this.handler;
      if (h.error) return cut(visible(h.error), 300);
      if (!h.result) return this.end ? "" : "…";
      const value = h.result.value || {};
      const shown = h.result.type === "StopEvent" ? value.result : value;
      return cut(visible(typeof shown === "string" ? shown : JSON.stringify(shown)), 300);
    }

    renderSteps() {
      const rows = [];
      for (const [name, row] of this.rows) {
        const retries = row.retries ? `  (${row.retries} retr${row.retries === 1 ? "y" : "ies"})` : "";
        let icon = "·";
        let text = "waiting";
        let cls = "idle";
        if (row.state === "running") [icon, text, cls] = ["●", `running${retries}`, "running spin"];
        else if (row.state === "waiting") [icon, text, cls] = ["…", `waiting for ${row.waitingFor}`, "waiting"];
        else if (row.state === "ok") [icon, text, cls] = ["✓", `done in ${took(row.ms)}${row.runs > 1 ? ` x${row.runs}` : ""}${retries}`, "ok"];
        else if (row.state === "error" || row.state === "timeout") [icon, text, cls] = ["✗", `${row.state}: ${row.error}${retries}`, row.state];
        else if (row.state === "retrying") [icon, text, cls] = ["↻", `retrying: ${row.error}`, "retrying"];
        else if (row.state === "cancelled") [icon, text, cls] = ["-", "cancelled", "cancelled"];
        rows.push(el("tr", { "data-step": name, class: cls.split(" ")[0] }, el("td", { class: cls }, icon), el("td", {}, el("strong", {}, visible(name))), el("td", { class: cls }, visible(text))));
      }
      $("steps").replaceChildren(...rows);
    }

    renderWaterfall() {
      const bars = [...this.attempts.values()].sort((a, b) => a.start - b.start);
      const nameW = 230;
      const durW = 90;
      const chartW = 760;
      const rowH = 24;
      const axisH = 26;
      const x0 = nameW + durW;
      const total = Math.max(1, this.now(), ...bars.map((b) => b.end ?? 0));
      const scale = chartW / total;
      const height = axisH + (bars.length + 1) * rowH + 6;
      const root = svg("svg", { width: x0 + chartW + 20, height, viewBox: `0 0 ${x0 + chartW + 20} ${height}`, role: "img", "aria-label": "waterfall", "font-size": 13 });
      const raw = Math.max(total / 8, 1e-6);
      const mag = 10 ** Math.floor(Math.log10(raw));
      const tick = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
      for (let k = 0; k * tick <= total; k++) {
        const x = x0 + k * tick * scale;
        root.append(svg("line", { x1: x, y1: axisH - 6, x2: x, y2: height, stroke: "#e2e8f0" }));
        root.append(svg("text", { x, y: 16, "font-size": 11, fill: GREY, "text-anchor": "middle" }, `${(k * tick).toLocaleString("en-US", { maximumFractionDigits: 3 })} ms`));
      }
      const runColour = this.end ? COLOURS[this.end.state.slice(4)] || GREY : RUNNING;
      const lines = [["run", 0, this.now(), runColour, this.end ? this.end.state.slice(4) : "running"]];
      for (const b of bars) {
        const colour = b.state === "running" ? RUNNING : b.state === "waiting" ? WAITING : b.state === "retrying" ? COLOURS.error : COLOURS[b.state] || GREY;
        lines.push([`  ${b.step}${b.attempt > 1 ? ` #${b.attempt}` : ""}`, b.start, b.end ?? this.now(), colour, b.state]);
      }
      lines.forEach(([label, start, end, colour, state], i) => {
        const y = axisH + i * rowH;
        const dur = Math.max(0, end - start);
        root.append(svg("text", { x: 8, y: y + 16, "font-weight": i === 0 ? 700 : 400 }, visible(cut(label, 30))));
        root.append(svg("text", { x: x0 - 12, y: y + 16, "text-anchor": "end", fill: "#475569" }, ms(dur)));
        const bar = svg("rect", { class: "bar", x: x0 + start * scale, y: y + 5, width: Math.max(3, dur * scale), height: rowH - 10, rx: 3, fill: colour });
        bar.append(svg("title", {}, visible(`${label.trim()}: start +${ms(start)}, ${ms(dur)}, ${state}`)));
        root.append(bar);
      });
      $("waterfall").replaceChildren(root);
    }

    renderPrompt() {
      const waiting = [...this.rows.values()].some((r) => r.state === "waiting");
      const show = this.prompt !== null && waiting && !this.end;
      $("prompt").classList.toggle("hidden", !show);
      if (show) $("prompt-text").textContent = visible(this.prompt, true);
    }
  }

  async function runPage(handlerId, signal) {
    $("run").classList.remove("hidden");
    for (const id of ["steps", "output", "events", "waterfall", "run-meta", "run-title", "run-sub"]) $(id).replaceChildren();
    const path = encodeURIComponent(handlerId);
    let handler;
    try {
      handler = await handlerById(handlerId);
    } catch (error) {
      if (!(error instanceof ApiError) || error.message === "unauthorised") throw error;
      $("run-title").textContent = visible(error.message);
      return;
    }
    let steps = [];
    try {
      const { graph } = await getJson(`workflows/${encodeURIComponent(handler.workflow_name)}/representation`);
      steps = graph.nodes.filter((n) => n.node_type === "step").map((n) => n.id);
    } catch (error) {
      if (error instanceof ApiError && error.message === "unauthorised") throw error;
    }
    const view = new RunView(handler, steps);
    view.renderAll();
    const ticker = setInterval(() => {
      if (!view.end) {
        view.renderMeta();
        view.renderWaterfall();
      }
    }, 250);
    signal.addEventListener("abort", () => clearInterval(ticker));
    $("prompt-form").onsubmit = async (e) => {
      e.preventDefault();
      const response = await api(`events/${path}`, {
        method: "POST",
        body: JSON.stringify({ event: { type: "HumanResponseEvent", value: { response: $("prompt-input").value } } }),
      });
      if (!response.ok) {
        notice(await detail(response));
        return;
      }
      $("prompt-input").value = "";
      view.prompt = null;
      view.renderPrompt();
    };
    const events = follow(`events/${path}`, (seq, type, data) => view.event(seq, type, data), signal);
    const stepFrames = follow(`handlers/${path}/steps`, (_, type, data) => view.step(data.value), signal);
    await Promise.all([events, stepFrames]);
    if (signal.aborted) return;
    view.handler = await handlerById(handlerId);
    clearInterval(ticker);
    view.renderAll();
    document.body.dataset.runDone = "true";
  }

  // -- routing ---------------------------------------------------------------------------

  let controller = null;

  function route() {
    if (controller) controller.abort();
    controller = new AbortController();
    const { signal } = controller;
    delete document.body.dataset.runDone;
    notice("");
    $("home").classList.add("hidden");
    $("run").classList.add("hidden");
    const match = /^#run\/(.+)$/.exec(location.hash);
    const page = match ? runPage(decodeURIComponent(match[1]), signal) : home(signal);
    page.catch((error) => {
      if (signal.aborted || (error instanceof ApiError && error.message === "unauthorised")) return;
      notice(error instanceof ApiError ? error.message : `${error.name}: ${error.message}`);
    });
  }

  window.addEventListener("hashchange", route);
  route();
})();
