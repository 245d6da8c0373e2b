// The sessions list: rows open on click or Enter; running sessions update live by short
// polling /ui/api/sessions/status until none is running.
import { el, getJSON, openOnActivate } from "./common.js";

const table = document.getElementById("sessions");
const status = document.getElementById("live-status");
const POLL_MS = 1500;

openOnActivate(table, "tbody tr");

function runningIds() {
  return [...table.querySelectorAll('tbody tr[data-state="RUNNING"], tbody tr[data-state="INITIALIZING"]')]
    .map((row) => row.dataset.id);
}

function update(row, s) {
  row.dataset.state = s.state;
  const cell = row.querySelector('[data-field="state"]');
  cell.replaceChildren(el("span", { className: `state state-${s.state}`, text: s.state }));
  for (const field of ["duration", "events", "event_types", "tokens", "cost", "end_reason"]) {
    const node = row.querySelector(`[data-field="${field}"]`);
    if (node) node.textContent = String(s[field]);
  }
  row.querySelector('[data-field="tokens"]').title = s.tokens_detail;
}

async function poll() {
  const ids = runningIds();
  if (ids.length === 0) {
    status.textContent = "";
    return;
  }
  status.textContent = `${ids.length} running, updating live`;
  try {
    const query = ids.slice(0, 100).map((id) => "id=" + encodeURIComponent(id)).join("&");
    const data = await getJSON("/ui/api/sessions/status?" + query);
    for (const s of data.sessions) {
      const row = table.querySelector(`tbody tr[data-id="${CSS.escape(s.id)}"]`);
      if (row) update(row, s);
    }
    if (runningIds().length === 0) {
      status.textContent = "";
      return;  // nothing runs any more: stop polling
    }
  } catch (error) {
    status.textContent = "live update failed: " + error.message;
  }
  setTimeout(poll, POLL_MS);
}

poll();
