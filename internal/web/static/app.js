// codeexec playground: chat and notebook over the server's own API.
// Everything the sandbox or the model produced is untrusted: it reaches the
// DOM only as text (textContent), as a data: image, or through DOMPurify.
"use strict";

(function () {
  const KEY = "codeexec.apiKey";
  const $ = (id) => document.getElementById(id);

  // ---------- small helpers ----------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  const purifyConfig = {
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "link", "meta", "base"],
    FORBID_ATTR: ["style", "srcset", "action", "formaction"],
    SANITIZE_NAMED_PROPS: true,
  };
  if (window.DOMPurify) {
    // Links the sandbox or the model wrote open elsewhere, never as this page.
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
    });
  }

  // safeHTML returns a fragment of untrusted HTML, sanitised.
  function safeHTML(html) {
    return DOMPurify.sanitize(String(html), Object.assign({ RETURN_DOM_FRAGMENT: true }, purifyConfig));
  }

  function markdown(text) {
    const div = el("div", { class: "md" });
    div.append(safeHTML(marked.parse(String(text || ""), { gfm: true, breaks: false })));
    div.querySelectorAll("pre code").forEach((c) => { try { hljs.highlightElement(c); } catch (e) { /* plain */ } });
    return div;
  }

  function codeBlock(code) {
    const c = el("code", { class: "language-python" });
    try { c.innerHTML = hljs.highlight(String(code), { language: "python", ignoreIllegals: true }).value; }
    catch (e) { c.textContent = String(code); }
    return el("pre", { class: "code" }, c);
  }

  function human(n) {
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    return (n / (1 << 20)).toFixed(1) + " MiB";
  }

  // ---------- the API ----------

  function apiKey() { return localStorage.getItem(KEY) || ""; }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const k = apiKey();
    if (k) h["Authorization"] = "Bearer " + k;
    return h;
  }

  class APIError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || ("HTTP " + status));
      this.status = status; this.code = e.code || "";
    }
  }

  async function api(method, path, body, opts) {
    opts = opts || {};
    const init = { method, headers: headers(opts.headers), signal: opts.signal };
    if (body !== undefined) {
      if (body instanceof Blob || body instanceof FormData) init.body = body;
      else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    }
    const resp = await fetch(path, init);
    if (!resp.ok) {
      let b = null;
      try { b = await resp.json(); } catch (e) { /* not JSON */ }
      const err = new APIError(resp.status, b);
      if (resp.status === 401) askKey(apiKey() ? "The server refused the key: " + err.message : "");
      throw err;
    }
    return opts.raw ? resp : resp.json();
  }

  // sse reads a text/event-stream response, calling on(event, data) per event.
  async function sse(resp, on) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(buf[i] === "\r" ? i + 4 : i + 2);
        let event = "message", data = [];
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) on(event, data.join("\n"));
      }
    }
  }

  // download fetches path with the key and saves it as name.
  async function download(path, name) {
    try {
      const resp = await api("GET", path, undefined, { raw: true });
      const url = URL.createObjectURL(await resp.blob());
      const a = el("a", { href: url, download: name.split("/").pop() });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) { alert("Download failed: " + e.message); }
  }

  function downloadButton(path, name, label) {
    const b = el("button", { type: "button", class: "quiet", text: label || "Download", "aria-label": "Download " + name });
    b.addEventListener("click", () => download(path, name));
    return b;
  }

  // ---------- rendering results ----------

  let figures = 0;

  // bundle renders a MIME bundle: the richest type the page can show safely.
  function bundle(b) {
    if (!b) return null;
    for (const t of ["image/png", "image/jpeg", "image/gif", "image/webp"]) {
      if (b[t]) return el("img", { src: "data:" + t + ";base64," + String(b[t]).replace(/\s/g, ""), alt: "Figure " + (++figures) + " from the sandbox" });
    }
    if (b["image/svg+xml"]) {
      // As an <img>, an SVG cannot run script.
      const svg = String(b["image/svg+xml"]);
      return el("img", { src: "data:image/svg+xml;base64," + btoa(unescape(encodeURIComponent(svg))), alt: "SVG figure " + (++figures) + " from the sandbox" });
    }
    if (b["text/html"]) { const d = el("div", { class: "html-result" }); d.append(safeHTML(b["text/html"])); return d; }
    if (b["text/markdown"]) return markdown(b["text/markdown"]);
    if (b["text/latex"]) return el("pre", { class: "latex", text: b["text/latex"] });
    if (b["application/json"]) return el("pre", { text: JSON.stringify(b["application/json"], null, 2) });
    if (b["text/plain"] != null) return el("pre", { class: "result", text: b["text/plain"] });
    return null;
  }

  function traceback(err) {
    if (!err) return null;
    const text = err.traceback || ((err.name || "Error") + ": " + (err.value || ""));
    return el("pre", { class: "traceback", role: "alert", text });
  }

  function filesList(files, pathOf) {
    if (!files || !files.length) return null;
    const ul = el("ul", { class: "file-list files-out", "aria-label": "Files the code created" });
    for (const f of files) {
      ul.append(el("li", {}, el("span", { text: f.path + " (" + human(f.bytes || 0) + ")" }), downloadButton(pathOf(f), f.path)));
    }
    return ul;
  }

  // renderResult fills out with a finished execution's result.
  function renderResult(out, r, pathOf) {
    out.replaceChildren();
    if (r.stdout) out.append(el("pre", { class: "stdout", text: r.stdout }));
    if (r.stderr) out.append(el("pre", { class: "stderr", text: r.stderr }));
    for (const d of r.displays || []) { const n = bundle(d); if (n) out.append(n); }
    const res = bundle(r.result); if (res) out.append(res);
    const tb = traceback(r.error); if (tb) out.append(tb);
    const fl = filesList(r.files, pathOf); if (fl) out.append(fl);
    const bad = r.status && r.status !== "ok";
    const st = el("div", { class: "status" + (bad ? " bad" : ""), text: "status " + (r.status || "?") + (r.duration_ms != null ? " · " + Math.round(r.duration_ms) + " ms" : "") });
    out.append(st);
  }

  // ---------- auth ----------

  function askKey(message) {
    $("key-message").textContent = message || "This server needs an API key. It is kept in this browser's storage only.";
    $("key-form").hidden = false;
    $("key-input").focus();
  }

  $("key-button").addEventListener("click", () => askKey("The API key is kept in this browser's storage only, and sent only to this server."));
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    $("key-form").hidden = true;
    loadModels();
  });
  $("key-forget").addEventListener("click", () => { localStorage.removeItem(KEY); $("key-input").value = ""; });

  // ---------- tabs ----------

  function selectTab(name) {
    for (const t of ["chat", "notebook"]) {
      const on = t === name;
      $("tab-" + t).setAttribute("aria-selected", String(on));
      $("tab-" + t).tabIndex = on ? 0 : -1;
      $(t).hidden = !on;
    }
    location.hash = name;
  }
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-notebook").addEventListener("click", () => selectTab("notebook"));
  document.querySelector(".tabs").addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      const next = $("tab-chat").getAttribute("aria-selected") === "true" ? "notebook" : "chat";
      selectTab(next); $("tab-" + next).focus();
    }
  });

  // ---------- notebook ----------

  let session = null; // the session id
  let cellN = 0;
  const sessionFile = (p) => "/v1/sessions/" + session + "/files/" + p.split("/").map(encodeURIComponent).join("/");

  // ensureSession starts the session once, however many callers wait.
  let starting = null;
  async function ensureSession() {
    if (session) return session;
    if (!starting) {
      starting = api("POST", "/v1/sessions", {}).then((s) => {
        session = s.id;
        $("nb-status").textContent = "Session " + session;
        return session;
      }).finally(() => { starting = null; });
    }
    return starting;
  }

  function addCell(code, after) {
    const n = ++cellN;
    const ta = el("textarea", { id: "cell-" + n, class: "code", rows: "3", spellcheck: "false", autocapitalize: "off" });
    ta.value = code || "";
    const fit = () => { ta.rows = Math.max(3, ta.value.split("\n").length + 1); };
    fit();
    ta.addEventListener("input", fit);
    const run = el("button", { type: "button", class: "run", text: "Run", "aria-label": "Run cell " + n });
    const out = el("div", { class: "out", "aria-live": "polite", "aria-label": "Output of cell " + n });
    const del = el("button", { type: "button", class: "quiet", text: "Delete", "aria-label": "Delete cell " + n });
    const cell = el("div", { class: "cell", "data-cell": String(n) },
      el("div", { class: "cell-head" }, el("label", { for: ta.id, text: "In [" + n + "]" }), run, del), ta, out);
    run.addEventListener("click", () => runCell(cell));
    del.addEventListener("click", () => { cell.remove(); });
    ta.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.shiftKey || ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        runCell(cell);
        if (ev.shiftKey) {
          const next = cell.nextElementSibling || addCell("");
          next.querySelector("textarea").focus();
        }
      }
    });
    if (after && after.nextSibling) $("cells").insertBefore(cell, after.nextSibling); else $("cells").append(cell);
    return cell;
  }

  // Cells run one at a time, in the order they were asked to.
  let queue = Promise.resolve();
  function runCell(cell) {
    const out = cell.querySelector(".out");
    out.replaceChildren(el("div", { class: "status", text: "queued" }));
    cell.dataset.state = "queued";
    const p = queue.then(() => execCell(cell));
    queue = p.catch(() => {});
    return p;
  }

  async function execCell(cell) {
    const out = cell.querySelector(".out");
    const code = cell.querySelector("textarea").value;
    cell.dataset.state = "running";
    const stdout = el("pre", { class: "stdout" }), stderr = el("pre", { class: "stderr" });
    out.replaceChildren(stdout, stderr, el("div", { class: "status", text: "running…" }));
    try {
      await ensureSession();
      const resp = await api("POST", "/v1/sessions/" + session + "/execute", { code, stream: true }, { raw: true });
      let final = null, failure = null;
      await sse(resp, (event, data) => {
        const d = JSON.parse(data);
        if (event === "stdout") stdout.append(d.text);
        else if (event === "stderr") stderr.append(d.text);
        else if (event === "display") { const n = bundle(d); if (n) out.insertBefore(n, out.lastChild); }
        else if (event === "done") final = d;
        else if (event === "error" && d.error) failure = d.error.message;
      });
      if (final) {
        renderResult(out, final, (f) => f.id ? "/v1/files/" + f.id + "/content" : sessionFile(f.path));
        if (final.session_ended) sessionEnded("the code hit a limit that ended the session");
      } else out.append(el("pre", { class: "traceback", role: "alert", text: failure || "the stream ended without a result" }));
      cell.dataset.state = "done";
      refreshFiles();
    } catch (e) {
      cell.dataset.state = "done";
      out.replaceChildren(el("pre", { class: "traceback", role: "alert", text: e.message }));
      if (e.code === "session_expired" || e.status === 404) sessionEnded(e.message);
    }
  }

  function sessionEnded(why) {
    session = null;
    $("nb-status").textContent = "The session ended (" + why + "); the next run starts a new one.";
  }

  async function refreshFiles() {
    const ul = $("nb-files");
    if (!session) { ul.replaceChildren(el("li", { class: "muted", text: "No session yet." })); return; }
    try {
      const list = await api("GET", "/v1/sessions/" + session + "/files");
      ul.replaceChildren();
      for (const f of list.data || []) {
        ul.append(el("li", {}, el("span", { text: f.path + " (" + human(f.bytes || 0) + ")" }), downloadButton(sessionFile(f.path), f.path)));
      }
      if (!ul.children.length) ul.append(el("li", { class: "muted", text: "No files." }));
    } catch (e) { ul.replaceChildren(el("li", { class: "muted", text: e.message })); }
  }

  $("nb-upload").addEventListener("change", async (ev) => {
    const files = Array.from(ev.target.files || []);
    try {
      await ensureSession();
      for (const f of files) {
        $("nb-status").textContent = "Uploading " + f.name + "…";
        await api("PUT", sessionFile(f.name), f);
      }
      $("nb-status").textContent = "Session " + session + ": uploaded " + files.map((f) => f.name).join(", ");
    } catch (e) { $("nb-status").textContent = "Upload failed: " + e.message; }
    ev.target.value = "";
    refreshFiles();
  });
  $("nb-refresh").addEventListener("click", refreshFiles);
  $("nb-add").addEventListener("click", () => addCell("").querySelector("textarea").focus());
  $("nb-run-all").addEventListener("click", () => document.querySelectorAll("#cells .cell").forEach(runCell));
  $("nb-restart").addEventListener("click", async () => {
    const old = session;
    session = null;
    if (old) { try { await api("DELETE", "/v1/sessions/" + old); } catch (e) { /* already gone */ } }
    document.querySelectorAll("#cells .out").forEach((o) => o.replaceChildren());
    $("nb-status").textContent = "Restarted: the next run starts a new session.";
    refreshFiles();
  });

  // ---------- chat ----------

  let history = [];       // messages sent back to the server each turn
  let attached = [];      // uploaded file ids for the next message
  let controller = null;  // the running answer's AbortController
  const chatFile = (f) => "/v1/files/" + encodeURIComponent(f.id) + "/content";

  async function loadModels() {
    const sel = $("model");
    try {
      const list = await api("GET", "/v1/models");
      sel.replaceChildren();
      for (const m of list.data || []) sel.append(el("option", { value: m.id, text: m.id }));
      $("chat-unavailable").hidden = true;
      $("chat-form").hidden = false;
      return true;
    } catch (e) {
      const p = $("chat-unavailable");
      p.hidden = false;
      p.textContent = e.code === "no_upstream"
        ? "Chat needs a model provider: start the server with --upstream-url (CODEEXEC_UPSTREAM_URL). The notebook works without one."
        : "Chat is unavailable: " + e.message;
      $("chat-form").hidden = e.code === "no_upstream";
      return false;
    }
  }

  function setBusy(busy, status) {
    $("chat-send").disabled = busy;
    $("chat-stop").disabled = !busy;
    $("chat-status").textContent = status || "";
  }

  $("chat-files").addEventListener("change", async (ev) => {
    const files = Array.from(ev.target.files || []);
    for (const f of files) {
      const fd = new FormData();
      fd.append("purpose", "user_data");
      fd.append("file", f, f.name);
      try {
        $("chat-attached").textContent = "Uploading " + f.name + "…";
        const r = await api("POST", "/v1/files", fd);
        attached.push({ id: r.id, name: f.name });
      } catch (e) { alert("Upload of " + f.name + " failed: " + e.message); }
    }
    ev.target.value = "";
    $("chat-attached").textContent = attached.length ? "Attached: " + attached.map((a) => a.name).join(", ") : "";
  });

  $("chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-stop").addEventListener("click", () => { if (controller) controller.abort(); });
  $("chat-clear").addEventListener("click", () => { history = []; attached = []; $("chat-log").replaceChildren(); $("chat-attached").textContent = ""; });

  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text || controller) return;
    $("chat-input").value = "";
    send(text);
  });

  function message(role) {
    const body = el("div", { class: "body" });
    const m = el("div", { class: "msg " + role }, el("div", { class: "who", text: role === "user" ? "You" : "Assistant" }), body);
    $("chat-log").append(m);
    m.scrollIntoView({ block: "nearest" });
    return body;
  }

  async function send(text) {
    let content = text;
    const ub = message("user");
    ub.append(el("div", { text }));
    if (attached.length) {
      content = [{ type: "text", text }].concat(attached.map((a) => ({ type: "file", file: { file_id: a.id } })));
      ub.append(el("div", { class: "muted", text: "Attached: " + attached.map((a) => a.name).join(", ") }));
      attached = [];
      $("chat-attached").textContent = "";
    }
    history.push({ role: "user", content });

    const ab = message("assistant");
    const turn = { text: "", calls: [] }; // what goes back into the history
    let seg = null, segText = "", pending = false; // the text segment being written
    const cells = {};                                 // tool call index -> {entry, out}
    const flush = () => { pending = false; if (seg) seg.replaceChildren(markdown(segText)); };
    const addText = (s) => {
      if (!seg) { seg = el("div", { class: "text" }); segText = ""; ab.append(seg); }
      segText += s; turn.text += s;
      if (!pending) { pending = true; requestAnimationFrame(flush); }
    };

    controller = new AbortController();
    setBusy(true, "Thinking…");
    let finish = "";
    try {
      const body = { model: $("model").value, messages: history, stream: true, tools: [{ type: "code_execution" }] };
      const resp = await api("POST", "/v1/chat/completions", body, { raw: true, signal: controller.signal });
      await sse(resp, (event, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "the answer failed");
        const c = (chunk.choices || [])[0];
        if (!c) return;
        if (c.finish_reason) finish = c.finish_reason;
        const d = c.delta || {};
        if (d.content) addText(d.content);
        for (const tc of d.tool_calls || []) {
          let cell = cells[tc.index];
          if (!cell) {
            if (seg) { flush(); seg = null; }
            cell = cells[tc.index] = newExecCell(ab, tc);
            turn.calls.push(cell.entry);
          }
          updateExecCell(cell, tc);
        }
      });
      flush();
      setBusy(false, finish === "length" ? "The answer was cut at the token limit." : "");
    } catch (e) {
      flush();
      if (e.name === "AbortError") { ab.append(el("div", { class: "muted", text: "Stopped." })); setBusy(false, "Stopped."); }
      else { ab.append(el("pre", { class: "traceback", role: "alert", text: e.message })); setBusy(false, ""); }
    }
    controller = null;
    const msg = { role: "assistant", content: turn.text || null };
    const calls = turn.calls.filter((e) => e.type !== "function" && e.done);
    if (calls.length) msg.tool_calls = calls.map((e) => ({ id: e.id, type: e.type, [e.type]: e.payload }));
    if (msg.content || msg.tool_calls) history.push(msg);
    else history.pop(); // nothing came back: let the person ask again
  }

  function newExecCell(parent, tc) {
    const type = tc.type || "code_execution";
    const summary = el("summary", { text: type === "web_search" ? "Searched the web" : "Ran code" });
    const det = el("details", { class: "exec", open: "" }, summary);
    const code = el("div", { class: "code-wrap" });
    const out = el("div", { class: "out", "aria-live": "polite" }, el("div", { class: "status", text: "running…" }));
    det.append(code, out);
    parent.append(det);
    return { entry: { id: tc.id, type, payload: {}, done: false }, det, summary, code, out };
  }

  function updateExecCell(cell, tc) {
    const e = cell.entry;
    if (tc.id) e.id = tc.id;
    if (tc.function) { e.type = "function"; cell.summary.textContent = "Called " + (tc.function.name || "a function"); return; }
    if (tc.web_search) {
      const w = tc.web_search;
      e.payload = { query: w.query, output: w.output }; e.done = true;
      cell.summary.textContent = "Searched the web: " + (w.query || "");
      cell.out.replaceChildren(el("pre", { text: w.output || "" }));
      return;
    }
    const x = tc.code_execution || {};
    if (x.code != null) { e.payload.code = x.code; cell.code.replaceChildren(codeBlock(x.code)); }
    if (x.status != null) {
      e.payload.output = x.output || ""; e.payload.status = x.status; e.done = true;
      cell.summary.textContent = x.status === "ok" ? "Ran code" : "Ran code: " + x.status;
      renderResult(cell.out, { stdout: x.output, displays: x.displays, files: x.files, status: x.status }, chatFile);
    }
  }

  // ---------- start ----------

  addCell("print('hello from the sandbox')");
  refreshFiles();
  loadModels().then((ok) => {
    const want = location.hash.slice(1);
    selectTab(want === "chat" || want === "notebook" ? want : ok ? "chat" : "notebook");
  });
})();
