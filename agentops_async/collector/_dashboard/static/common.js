// Shared helpers of the dashboard's modules. Data from sessions is user data: it only ever
// reaches the page through textContent and DOM properties, never as HTML.

/** An element with attributes/properties and children (strings become text nodes). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** GET a dashboard JSON endpoint; a lost sign-in goes back to the sign-in page. */
export async function getJSON(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, ...options });
  if (response.status === 401) {
    window.location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
    throw new Error("signed out");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

/** Seconds as "1.23 s", "2 min 5 s", "1 h 2 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 1) return String(Number((seconds * 1000).toPrecision(3))) + " ms";
  if (seconds < 60) return seconds.toFixed(seconds < 10 ? 2 : 1) + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Rows (or any element with data-href) open on click and on Enter. */
export function openOnActivate(container, selector) {
  container.addEventListener("click", (e) => {
    if (e.target.closest("a, button")) return;
    const row = e.target.closest(selector);
    if (row && row.dataset.href) window.location.assign(row.dataset.href);
  });
  container.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    const row = e.target.closest(selector);
    if (row && row.dataset.href) window.location.assign(row.dataset.href);
  });
}
