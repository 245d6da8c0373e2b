// The session page's waterfall: events and spans on a time axis, nested by parent span,
// rendered windowed (only the rows in view exist in the DOM), loaded page by page from
// /ui/api/sessions/<id>/events. Event data is user data: text only (textContent), never HTML.
import { el, getJSON, duration } from "./common.js";

const ROW = 24;
const FIRST_PAGE = 500;
const NEXT_PAGES = 5000;
const MAX_TEXT = 100000;

const root = document.getElementById("waterfall");
const scroller = document.getElementById("wf-scroll");
const spacer = document.getElementById("wf-spacer");
const axis = document.getElementById("wf-axis");
const detail = document.getElementById("detail");
const status = document.getElementById("wf-status");
const sessionId = root.dataset.session;
const expected = Number(root.dataset.events) || 0;

const nodes = [];
const costs = new Map();
let flat = [];
let selected = -1;
let selectedNode = null;
let t0 = NaN;
let t1 = NaN;

function seconds(text) {
  if (typeof text !== "string" || !text) return NaN;
  const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : text + "Z");
  return ms / 1000;
}

function kindOf(ev) {
  if (ev.event_type === "actions" && ev.action_type === "span") return "spans";
  return ["llms", "tools", "actions", "errors", "apis"].includes(ev.event_type) ? ev.event_type : "other";
}

function labelOf(ev, kind) {
  const p = ev.params && typeof ev.params === "object" ? ev.params : {};
  switch (kind) {
    case "llms": return "LLM " + (ev.model || p.name || "");
    case "tools": return "tool " + (ev.name || p.name || "");
    case "spans": return String(p.name || "span");
    case "errors": return "error " + (ev.error_type || ev.code || "");
    case "apis": return "API " + [ev.method, ev.url].filter(Boolean).join(" ");
    case "actions": return String(ev.action_type || p.name || "action");
    default: return String(ev.event_type || "event");
  }
}

function isError(ev, kind) {
  const st = ev.params && typeof ev.params === "object" ? String(ev.params.status || "") : "";
  return kind === "errors" || st.toUpperCase().includes("ERROR");
}

function addEvents(events) {
  for (const ev of events) {
    if (!ev || typeof ev !== "object") continue;
    const kind = kindOf(ev);
    const start = seconds(ev.init_timestamp);
    let end = seconds(ev.end_timestamp);
    if (!(end >= start)) end = start;
    const parent = ev.params && typeof ev.params === "object" ? ev.params.parent_span_id : null;
    nodes.push({
      ev, kind, start, end, label: labelOf(ev, kind), error: isError(ev, kind),
      span: typeof ev.span_id === "string" ? ev.span_id : null,
      parent: typeof parent === "string" ? parent : null,
      children: [], depth: 0,
    });
  }
}

// Nest by parent span id (an event made from the same span as an earlier one, like a span's
// ErrorEvent, goes under it) and flatten depth-first, children in start order.
function rebuild() {
  const bySpan = new Map();
  for (const n of nodes) {
    n.children = [];
    if (n.span && !bySpan.has(n.span)) bySpan.set(n.span, n);
  }
  const roots = [];
  for (const n of nodes) {
    const same = n.span ? bySpan.get(n.span) : undefined;
    const owner = same && same !== n ? same : n.parent ? bySpan.get(n.parent) : undefined;
    if (owner && owner !== n) owner.children.push(n);
    else roots.push(n);
    if (owner && same === owner && n.error) owner.error = true;  // a span's own error event
  }
  const byStart = (a, b) => (a.start - b.start) || 0;
  roots.sort(byStart);
  flat = [];
  const seen = new Set();
  const stack = roots.slice().reverse().map((n) => [n, 0]);
  while (stack.length) {
    const [n, depth] = stack.pop();
    if (seen.has(n)) continue;  // a malformed parent chain must not loop
    seen.add(n);
    n.depth = depth;
    flat.push(n);
    n.children.sort(byStart);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], depth + 1]);
  }
  for (const n of nodes) if (!seen.has(n)) { n.depth = 0; flat.push(n); }
  selected = selectedNode ? flat.indexOf(selectedNode) : -1;  // new rows may come before it
  const sessionStart = Number(root.dataset.start);
  const sessionEnd = Number(root.dataset.end);
  t0 = root.dataset.start ? sessionStart : Infinity;
  t1 = root.dataset.end ? sessionEnd : -Infinity;
  for (const n of nodes) {
    if (isFinite(n.start)) t0 = Math.min(t0, n.start);
    if (isFinite(n.end)) t1 = Math.max(t1, n.end);
  }
  if (!isFinite(t0)) t0 = 0;
  if (!(t1 > t0)) t1 = t0 + 1;
  spacer.style.height = flat.length * ROW + "px";
  drawAxis();
  draw();
}

function drawAxis() {
  const span = t1 - t0;
  const ticks = [];
  for (let i = 0; i <= 4; i++) {
    const tick = el("span", { text: "+" + (duration(span * i / 4) || "0 s") });
    tick.style.left = (i * 25) + "%";
    ticks.push(tick);
  }
  axis.replaceChildren(...ticks);
}

function row(index) {
  const n = flat[index];
  const label = el("div", { className: "wf-label", title: n.label },
    n.error ? el("span", { className: "err-mark", "aria-label": "error", text: "!" }) : null,
    n.label);
  label.style.paddingLeft = (6 + n.depth * 14) + "px";
  const bar = el("div", { className: `wf-bar t-${n.kind}`, title: `${n.label}: ${duration(n.end - n.start) || "0 s"}` });
  const span = t1 - t0;
  bar.style.left = (isFinite(n.start) ? ((n.start - t0) / span) * 100 : 0) + "%";
  bar.style.width = (isFinite(n.start) ? ((n.end - n.start) / span) * 100 : 0) + "%";
  const item = el("div", {
    className: "wf-row" + (n.error ? " wf-err" : ""), role: "treeitem", tabindex: "0",
    "aria-level": n.depth + 1, "aria-selected": index === selected ? "true" : "false",
    dataset: { index: String(index), kind: n.kind, depth: String(n.depth), id: String(n.ev.id || "") },
  }, label, el("div", { className: "wf-track" }, bar));
  item.style.top = index * ROW + "px";
  return item;
}

function draw() {
  const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 10);
  const last = Math.min(flat.length, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW) + 10);
  const focused = document.activeElement && document.activeElement.classList.contains("wf-row")
    ? Number(document.activeElement.dataset.index) : -1;
  const rows = [];
  for (let i = first; i < last; i++) rows.push(row(i));
  spacer.replaceChildren(...rows);
  if (focused >= 0) {
    const again = spacer.querySelector(`[data-index="${focused}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

function select(index, focus) {
  if (index < 0 || index >= flat.length) return;
  selected = index;
  selectedNode = flat[index];
  const top = index * ROW;
  if (top < scroller.scrollTop) scroller.scrollTop = top;
  else if (top + ROW > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = top + ROW - scroller.clientHeight;
  draw();
  if (focus) {
    const item = spacer.querySelector(`[data-index="${index}"]`);
    if (item) item.focus({ preventScroll: true });
  }
  showDetail(flat[index]);
}

// --- the detail panel ------------------------------------------------------------------------

function text(value) {
  const s = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return s === undefined ? "" : s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) + ` … (${s.length - MAX_TEXT} more characters)` : s;
}

function block(title, value) {
  if (value === undefined || value === null || value === "") return null;
  return el("section", {}, el("h3", { text: title }), el("pre", { text: text(value) }));
}

function contentText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part) => (part && typeof part === "object" && typeof part.text === "string") ? part.text : text(part)).join("\n");
  }
  return text(content);
}

function messages(value, role) {
  if (value === undefined || value === null) return [];
  if (typeof value === "string") return [{ role, content: value }];
  if (Array.isArray(value)) return value.flatMap((v) => messages(v, role));
  if (typeof value === "object") {
    if (Array.isArray(value.messages)) return messages(value.messages, role);
    if (Array.isArray(value.choices)) return value.choices.flatMap((c) => messages(c && (c.message || c.text), role));
    if ("role" in value || "content" in value || "tool_calls" in value) {
      const out = [{ role: String(value.role || role), content: value.content ?? "" }];
      if (value.tool_calls) out.push({ role: "tool calls", content: value.tool_calls });
      return out;
    }
  }
  return [{ role, content: value }];
}

function chat(title, value, role) {
  const list = messages(value, role);
  if (!list.length) return null;
  return el("section", {}, el("h3", { text: title }),
    el("div", { className: "chat" }, list.map((m) =>
      el("div", { className: `msg msg-${String(m.role).replace(/[^a-z]/gi, "")}` },
        el("span", { className: "role", text: m.role }), contentText(m.content)))));
}

function pairs(list) {
  const dl = el("dl");
  for (const [k, v] of list) {
    if (v === undefined || v === null || v === "") continue;
    dl.append(el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : text(v) }));
  }
  return dl;
}

function showDetail(n) {
  const ev = n.ev;
  const p = ev.params && typeof ev.params === "object" && !Array.isArray(ev.params) ? ev.params : null;
  const spanLike = p && "attributes" in p && "parent_span_id" in p;
  const parts = [
    el("h2", {}, n.error ? el("span", { className: "err-mark", text: "!" }) : null, n.label),
    pairs([
      ["type", ev.event_type + (n.kind === "spans" ? " (span)" : "")],
      ["start", ev.init_timestamp],
      ["duration", duration(n.end - n.start) || "0 s"],
      ["model", ev.model],
      ["prompt tokens", ev.prompt_tokens],
      ["completion tokens", ev.completion_tokens],
      ["cost", costs.has(ev.id) ? "$" + costs.get(ev.id) : ev.cost],
      ["tool", n.kind === "tools" ? ev.name : undefined],
      ["action", n.kind === "actions" ? ev.action_type : undefined],
      ["error type", ev.error_type],
      ["code", ev.code],
      ["method", ev.method], ["url", ev.url], ["status", ev.status_code],
      ["agent", ev.agent_id], ["thread", ev.thread_id],
      ["event id", ev.id], ["span id", ev.span_id],
      ["parent span", p ? p.parent_span_id : undefined],
      ["span status", p && p.status ? [p.status, p.status_description].filter(Boolean).join(": ") : undefined],
    ]),
  ];
  if (n.kind === "llms") {
    parts.push(chat("Prompt", ev.prompt, "user"), chat("Completion", ev.completion, "assistant"));
  }
  if (n.kind === "errors") {
    parts.push(block("Details", ev.details), block("Traceback", ev.logs));
  } else {
    parts.push(block(n.kind === "tools" ? "Input" : "Params",
      spanLike ? (p.arguments ?? null) : ev.params));
    parts.push(block(n.kind === "tools" ? "Output" : "Returns", ev.returns));
    parts.push(block("Logs", ev.logs));
  }
  if (spanLike) {
    const attrs = p.attributes && typeof p.attributes === "object" ? Object.entries(p.attributes) : [];
    if (attrs.length) parts.push(el("section", {}, el("h3", { text: "Span attributes" }), pairs(attrs)));
    if (Array.isArray(p.events) && p.events.length) parts.push(block("Span events", p.events));
  }
  detail.replaceChildren(...parts.filter(Boolean));
}

// --- input -----------------------------------------------------------------------------------

scroller.addEventListener("scroll", () => requestAnimationFrame(draw));
spacer.addEventListener("click", (e) => {
  const item = e.target.closest(".wf-row");
  if (item) select(Number(item.dataset.index), true);
});
scroller.addEventListener("keydown", (e) => {
  const current = document.activeElement && document.activeElement.classList.contains("wf-row")
    ? Number(document.activeElement.dataset.index) : selected;
  const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: 20, PageUp: -20 };
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    select(current >= 0 ? current : 0, true);
  } else if (e.key in moves) {
    e.preventDefault();
    const next = Math.min(flat.length - 1, Math.max(0, (current >= 0 ? current : -1) + moves[e.key]));
    select(next, true);
  } else if (e.key === "Home" || e.key === "End") {
    e.preventDefault();
    select(e.key === "Home" ? 0 : flat.length - 1, true);
  }
});

const LIVE_MS = 2000;
let resume = null;

async function fetchEvents(limit) {
  let cursor = resume;
  do {
    const url = `/ui/api/sessions/${encodeURIComponent(sessionId)}/events?limit=${limit}` +
      (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
    const page = await getJSON(url);
    addEvents(page.events);
    for (const [id, cost] of Object.entries(page.costs || {})) costs.set(id, cost);
    if (page.events.length || !resume) rebuild();
    cursor = page.next_cursor;
    resume = page.resume_cursor || resume;
    limit = NEXT_PAGES;
    status.textContent = cursor ? `${nodes.length} of ${expected} events loaded…` : `${nodes.length} events`;
  } while (cursor);
}

// A running session: new events join the waterfall and the header follows the session, until
// it ends.
function running() {
  return ["RUNNING", "INITIALIZING"].includes(root.dataset.state);
}

function updateHeader(s) {
  root.dataset.state = s.state;
  const badge = document.getElementById("session-state");
  badge.className = `state state-${s.state}`;
  badge.textContent = s.state;
  const set = (id, value) => { const node = document.getElementById(id); if (node) node.textContent = value; };
  set("h-end-reason", s.end_reason || "—");
  set("h-duration", s.duration || "—");
  set("h-cost", s.cost);
  set("h-tokens", `${s.tokens} (${s.tokens_detail})`);
  set("h-events", `${s.events} ${s.event_types}`);
}

async function follow() {
  try {
    const data = await getJSON("/ui/api/sessions/status?id=" + encodeURIComponent(sessionId));
    if (data.sessions.length) updateHeader(data.sessions[0]);
    await fetchEvents(NEXT_PAGES);
  } catch (error) {
    status.textContent = "live update failed: " + error.message;
  }
  if (running()) setTimeout(follow, LIVE_MS);
  else status.textContent = `${nodes.length} events`;
}

async function load() {
  await fetchEvents(FIRST_PAGE);
  root.dataset.loaded = "true";
  if (!nodes.length) status.textContent = running() ? "no events yet" : "no events";
  if (running()) setTimeout(follow, LIVE_MS);
}

load().catch((error) => { status.textContent = "could not load the events: " + error.message; });
