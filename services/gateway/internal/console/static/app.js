// The Dataport console: one page whose views follow the URL's fragment
// (#/exports, #/exports/<id>, #/new/room, #/new/my-data, #/new/records).
// It calls the native API with the session cookie; the CSRF token the
// session endpoint returns is kept in memory only and sent on every
// request that changes something. Every element is built with the DOM
// API, never from HTML strings, so no value from the API can become markup.
"use strict";

(() => {
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const announcer = document.getElementById("announcer");
  const terminal = new Set(["completed", "failed", "rejected", "canceled"]);

  let session = null;
  // The view's event stream, closed when the view changes.
  let stream = null;

  // h builds an element: attributes (on* are listeners), then children
  // (strings become text nodes; null and false are skipped).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function announce(text) {
    // Emptied first so that the same words are read again.
    announcer.textContent = "";
    window.setTimeout(() => { announcer.textContent = text; }, 50);
  }

  // api calls the gateway; the answer's body is parsed when it is JSON
  // (problem details included).
  async function api(method, path, body, extra) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrfToken;
    Object.assign(headers, extra || {});
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, status: 0, data: { detail: "The gateway cannot be reached: " + e.message } };
    }
    let data = null;
    const type = res.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { data = await res.json(); } catch (e) { data = null; }
    }
    return { ok: res.ok, status: res.status, data };
  }

  function problemText(r) {
    const d = r.data || {};
    return d.detail || d.title || ("The gateway answered " + r.status);
  }

  function closeStream() {
    if (stream) { stream.close(); stream = null; }
  }

  function show(title, ...content) {
    closeStream();
    document.title = title + " · Dataport console";
    main.replaceChildren(...content);
    for (const a of nav.querySelectorAll("a")) {
      if (a.getAttribute("href") === currentRoute()) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    main.focus();
  }

  function currentRoute() {
    return location.hash && location.hash !== "#" ? location.hash : "#/exports";
  }

  function formatBytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function formatTime(s) {
    if (!s) return "";
    const d = new Date(s);
    return isNaN(d) ? s : d.toLocaleString();
  }

  function stateBadge(state) {
    return h("span", { class: "state state-" + state }, state);
  }

  function progressBar(job, label) {
    const pct = (job.progress && job.progress.percent) || 0;
    return h("span", {},
      h("progress", { max: "100", value: String(pct), "aria-label": label }, pct + "%"),
      " " + pct + "%");
  }

  // ----- sign-in -----

  function signInView(message) {
    nav.hidden = true;
    who.textContent = "";
    const err = h("div", { class: "alert", role: "alert", id: "sign-in-error" }, message || "");
    const tokenFields = h("div", { id: "token-fields" },
      field("sign-in-user", "User id", h("input", { type: "text", id: "sign-in-user", name: "userId", autocomplete: "username", spellcheck: "false" })),
      field("sign-in-token", "Personal access token", h("input", { type: "password", id: "sign-in-token", name: "token", autocomplete: "current-password" })));
    const keyFields = h("div", { id: "key-fields", hidden: true },
      field("sign-in-key", "API key", h("input", { type: "password", id: "sign-in-key", name: "apiKey", autocomplete: "current-password" })));
    const choose = (useKey) => {
      tokenFields.hidden = useKey;
      keyFields.hidden = !useKey;
    };
    const form = h("form", { id: "sign-in", novalidate: true, onsubmit: async (ev) => {
      ev.preventDefault();
      const useKey = form.elements.method.value === "api-key";
      const body = useKey
        ? { apiKey: form.elements.apiKey.value.trim() }
        : { userId: form.elements.userId.value.trim(), token: form.elements.token.value };
      if (useKey ? !body.apiKey : (!body.userId || !body.token)) {
        err.textContent = useKey ? "Enter your API key." : "Enter your user id and personal access token.";
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const r = await api("POST", "api/session", body);
      button.disabled = false;
      if (!r.ok) {
        err.textContent = problemText(r);
        (useKey ? form.elements.apiKey : form.elements.token).focus();
        return;
      }
      session = r.data;
      signedIn();
      if (location.hash === "" || location.hash === "#/sign-in") location.hash = "#/exports";
      route();
    } },
      h("fieldset", {},
        h("legend", {}, "Sign in with"),
        h("div", { class: "field check" },
          h("input", { type: "radio", id: "method-token", name: "method", value: "token", checked: true, onchange: () => choose(false) }),
          h("label", { for: "method-token" }, "a personal access token")),
        h("div", { class: "field check" },
          h("input", { type: "radio", id: "method-key", name: "method", value: "api-key", onchange: () => choose(true) }),
          h("label", { for: "method-key" }, "an API key"))),
      tokenFields, keyFields, err,
      h("button", { type: "submit" }, "Sign in"));
    show("Sign in",
      h("h1", {}, "Sign in"),
      h("p", {}, "Your credential is checked once and kept by no page: the browser gets a session cookie that scripts cannot read."),
      form);
    document.getElementById("sign-in-user").focus();
  }

  function signedIn() {
    nav.hidden = false;
    who.textContent = "Signed in as " + (session.username || session.name || session.userId);
  }

  async function signOut() {
    await api("DELETE", "api/session");
    session = null;
    closeStream();
    location.hash = "#/sign-in";
    signInView("You are signed out.");
  }

  // ----- my exports -----

  function exportRow(job) {
    return h("tr", { id: "row-" + job.id, dataset: { state: job.state } },
      h("td", { "data-label": "Export" }, h("a", { href: "#/exports/" + encodeURIComponent(job.id) }, job.id), h("br"), job.kind),
      h("td", { "data-label": "Format" }, job.format),
      h("td", { "data-label": "State", class: "cell-state" }, stateBadge(job.state)),
      h("td", { "data-label": "Progress", class: "cell-progress" }, progressBar(job, "Progress of export " + job.id)),
      h("td", { "data-label": "Created" }, formatTime(job.createdAt)));
  }

  async function listView() {
    const tbody = h("tbody", {});
    const table = h("table", { class: "cards", id: "exports" },
      h("caption", { class: "visually-hidden" }, "My exports, newest first"),
      h("thead", {}, h("tr", {}, ["Export", "Format", "State", "Progress", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      tbody);
    const status = h("p", { class: "empty", id: "exports-empty" }, "Loading…");
    show("My exports",
      h("h1", {}, "My exports"),
      h("p", { class: "actions" },
        h("a", { class: "button", href: "#/new/room" }, "New room export"),
        h("a", { class: "button", href: "#/new/my-data" }, "Export my data"),
        h("a", { class: "button", href: "#/new/records" }, "New record export")),
      status, table);
    // The stream opens before the list is read, so no change falls
    // between the two; of a job seen in both, the newer one is kept.
    const seen = new Map();
    const upsert = (job) => {
      const prev = seen.get(job.id);
      if (prev && Date.parse(prev.updatedAt) > Date.parse(job.updatedAt)) return;
      seen.set(job.id, job);
      const row = exportRow(job);
      const old = document.getElementById("row-" + job.id);
      if (old) {
        if (old.dataset.state !== job.state) announce("Export " + job.id + " is " + job.state);
        old.replaceWith(row);
      } else if (prev === undefined && listed) {
        tbody.prepend(row);
        status.hidden = true;
        announce("Export " + job.id + " is " + job.state);
      }
    };
    let listed = false;
    const early = [];
    const es = new EventSource("/v1/exports/events");
    stream = es;
    // Each event carries the whole job.
    es.addEventListener("job", (ev) => {
      const job = JSON.parse(ev.data);
      if (listed) upsert(job);
      else early.push(job);
    });
    const r = await api("GET", "/v1/exports?limit=100");
    if (r.status === 401) return signInView("Your session has ended; sign in again.");
    if (!r.ok) {
      status.textContent = problemText(r);
      status.className = "alert";
      return;
    }
    const items = r.data.items || [];
    status.textContent = "No exports yet.";
    status.hidden = items.length > 0;
    for (const job of items) {
      seen.set(job.id, job);
      tbody.append(exportRow(job));
    }
    listed = true;
    for (const job of early) upsert(job);
  }

  // ----- one export -----

  // fileTable lists files with their download links (none once they
  // expired), sizes, record counts and SHA-256.
  function fileTable(id, files) {
    return h("table", { class: "cards", id },
      h("thead", {}, h("tr", {}, ["File", "Size", "Records", "SHA-256"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, files.map((f) => h("tr", {},
        h("td", { "data-label": "File" }, f.url
          ? h("a", { href: f.url, download: f.name, class: "download" }, "Download " + f.name)
          : f.name),
        h("td", { "data-label": "Size" }, formatBytes(f.size)),
        h("td", { "data-label": "Records" }, String(f.records)),
        h("td", { "data-label": "SHA-256", class: "mono" }, f.sha256)))));
  }

  function detailBody(job) {
    const facts = h("dl", { class: "facts" },
      h("dt", {}, "Kind"), h("dd", {}, job.kind),
      h("dt", {}, "Format"), h("dd", {}, job.format),
      h("dt", {}, "State"), h("dd", { id: "job-state" }, stateBadge(job.state)),
      h("dt", {}, "Progress"), h("dd", {}, progressBar(job, "Progress"),
        " · " + (job.progress ? job.progress.records : 0) + " records, " + formatBytes(job.progress ? job.progress.bytes : 0)),
      h("dt", {}, "Created"), h("dd", {}, formatTime(job.createdAt)),
      h("dt", {}, "Updated"), h("dd", {}, formatTime(job.updatedAt)),
      job.expiresAt ? [h("dt", {}, "Files kept until"), h("dd", {}, formatTime(job.expiresAt))] : null,
      job.traceId ? [h("dt", {}, "Trace id"), h("dd", { class: "mono" }, job.traceId)] : null);
    const parts = [facts];
    if (job.error) {
      parts.push(h("div", { class: "alert", role: "alert", id: "job-error" },
        h("strong", {}, "The export " + (job.state === "rejected" ? "was rejected" : job.state === "canceled" ? "was canceled" : "failed") + ": "),
        job.error));
    }
    parts.push(h("h2", {}, "Files"));
    const files = job.files || [];
    if (job.filesExpired) parts.push(h("p", { class: "notice" }, "The files have expired and were deleted; start a new export."));
    if (!files.length) {
      parts.push(h("p", { class: "empty" }, terminal.has(job.state) ? "No files." : "Files appear here when the export completes."));
    } else {
      parts.push(fileTable("files", files));
    }
    if (job.archive) {
      parts.push(h("h2", {}, "Archive"),
        h("p", {}, "Everything in one zip, with the files the export links to."),
        fileTable("archive", [job.archive]));
    }
    if (job.manifest) {
      parts.push(h("h2", {}, "Manifest"),
        h("p", {}, "Each file's size, record count and SHA-256, to check a download against."),
        fileTable("manifest", [job.manifest]));
    }
    if (job.partialFiles && job.partialFiles.length) {
      parts.push(h("h2", {}, "Partial results"),
        h("p", {}, "Finished before the export stopped: each file holds whole records, but not all of them." +
          (job.expiresAt ? " Kept until " + formatTime(job.expiresAt) + "." : "")),
        fileTable("partial-files", job.partialFiles));
    }
    if (job.notifications && job.notifications.length) {
      parts.push(h("h2", {}, "Notifications"),
        h("ul", {}, job.notifications.map((n) => h("li", {},
          n.channel + " to " + (n.recipients || []).join(", ") + ": " + (n.error ? "failed, " + n.error : "sent")))));
    }
    return parts;
  }

  async function detailView(id) {
    const body = h("div", { id: "job" }, h("p", { class: "empty" }, "Loading…"));
    const cancelError = h("div", { class: "alert", role: "alert" });
    const cancel = h("button", { type: "button", class: "danger", id: "cancel", hidden: true, onclick: async () => {
      cancel.disabled = true;
      const r = await api("POST", "/v1/exports/" + encodeURIComponent(id) + "/cancel");
      cancel.disabled = false;
      if (!r.ok) { cancelError.textContent = problemText(r); return; }
      cancelError.textContent = "";
      update(r.data);
      announce("Export canceled");
    } }, "Cancel export");
    show("Export " + id,
      h("p", {}, h("a", { href: "#/exports" }, "← My exports")),
      h("h1", {}, "Export ", h("span", { class: "mono" }, id)),
      h("div", { class: "actions" }, cancel), cancelError,
      h("section", { "aria-live": "polite", "aria-busy": "false", id: "job-live" }, body));
    let last = null;
    const update = (job) => {
      if (last && last.state !== job.state) announce("Export " + job.state);
      last = job;
      body.replaceChildren(...detailBody(job));
      const cancellable = !terminal.has(job.state) && job.state !== "finalizing" && !job.recurrence;
      if (!cancellable && document.activeElement === cancel) main.focus();
      cancel.hidden = !cancellable;
    };
    const r = await api("GET", "/v1/exports/" + encodeURIComponent(id));
    if (r.status === 401) return signInView("Your session has ended; sign in again.");
    if (!r.ok) { body.replaceChildren(h("div", { class: "alert", role: "alert" }, problemText(r))); return; }
    update(r.data);
    if (terminal.has(r.data.state) || r.data.recurrence) return;
    const es = new EventSource("/v1/exports/" + encodeURIComponent(id) + "/events");
    stream = es;
    es.addEventListener("job", (ev) => {
      const job = JSON.parse(ev.data);
      update(job);
      if (terminal.has(job.state)) closeStream();
    });
  }

  // ----- new exports -----

  let fieldSeq = 0;

  // field wraps a control with its label, an optional hint and the place
  // the API's message for it goes; apiField is the API's name for it.
  function field(id, label, control, hint, apiField) {
    const errId = id + "-error";
    const hintId = hint ? id + "-hint" : null;
    control.setAttribute("aria-describedby", [hintId, errId].filter(Boolean).join(" "));
    if (apiField) control.dataset.field = apiField;
    const isCheck = control.type === "checkbox";
    return h("div", { class: "field" + (isCheck ? " check" : "") },
      isCheck ? null : h("label", { for: id }, label),
      isCheck ? control : null,
      isCheck ? h("label", { for: id }, label) : null,
      hint ? h("span", { class: "hint", id: hintId }, hint) : null,
      isCheck ? null : control,
      h("p", { class: "field-error", id: errId }));
  }

  function input(apiField, label, opts) {
    opts = opts || {};
    const id = "f" + (++fieldSeq) + "-" + apiField.replace(/[^a-zA-Z0-9]/g, "-");
    let control;
    if (opts.options) {
      control = h("select", { id, name: apiField }, opts.options.map((o) => h("option", { value: o }, o)));
    } else if (opts.multiline) {
      control = h("textarea", { id, name: apiField, rows: "2", spellcheck: "false" });
    } else {
      control = h("input", {
        id, name: apiField, type: opts.type || "text", required: opts.required,
        min: opts.min, inputmode: opts.inputmode, autocomplete: "off", spellcheck: "false",
      });
    }
    if (opts.value !== undefined) control.value = opts.value;
    return field(id, label + (opts.required ? " (required)" : ""), control, opts.hint, apiField);
  }

  function checkbox(apiField, label, hint) {
    const id = "f" + (++fieldSeq) + "-" + apiField.replace(/[^a-zA-Z0-9]/g, "-");
    return field(id, label, h("input", { type: "checkbox", id, name: apiField }), hint, apiField);
  }

  // Values of a form, by API field name.
  function values(form) {
    const v = {};
    for (const el of form.querySelectorAll("[data-field]")) {
      v[el.dataset.field] = el.type === "checkbox" ? el.checked : el.value.trim();
    }
    return v;
  }

  function list(s) {
    return s.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
  }

  function notifyFields() {
    return h("fieldset", {},
      h("legend", {}, "When it ends (optional)"),
      input("notify.emails", "Email addresses to notify", { multiline: true, hint: "Separated by commas or new lines." }),
      input("notify.webhooks", "Webhook URLs to call", { multiline: true, hint: "https URLs, separated by commas or new lines." }));
  }

  function withNotify(body, v) {
    const emails = list(v["notify.emails"] || "");
    const webhooks = list(v["notify.webhooks"] || "");
    if (emails.length || webhooks.length) {
      body.notify = {};
      if (emails.length) body.notify.emails = emails;
      if (webhooks.length) body.notify.webhooks = webhooks;
    }
    return body;
  }

  // showErrors puts each of the API's field messages next to its field
  // (a field like "notify.emails[2]" goes to notify.emails), and those
  // with no field here in the summary, which takes the focus.
  function showErrors(form, summary, r) {
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    const errors = (r.data && r.data.errors) || [];
    const items = [];
    let first = null;
    for (const e of errors) {
      const name = (e.field || "").replace(/\[\d+\]$/, "");
      let el = name && form.querySelector('[data-field="' + CSS.escape(name) + '"]');
      if (!el && name) {
        // "records.dateRange" or "room" names a group: its first field.
        el = form.querySelector('[data-field^="' + CSS.escape(name + ".") + '"]');
      }
      if (el) {
        el.setAttribute("aria-invalid", "true");
        const out = document.getElementById(el.id + "-error");
        out.textContent = (out.textContent ? out.textContent + " " : "") + e.field + " " + e.message;
        first = first || el;
        items.push(h("li", {}, h("a", { href: "#" + el.id, onclick: (ev) => { ev.preventDefault(); el.focus(); } }, e.field + " " + e.message)));
      } else {
        items.push(h("li", {}, (e.field ? e.field + " " : "") + e.message));
      }
    }
    summary.replaceChildren(
      h("strong", {}, errors.length ? "The export was not started:" : problemText(r)),
      items.length ? h("ul", {}, items) : null);
    summary.focus();
  }

  function formView(title, intro, fieldsets, toBody) {
    const summary = h("div", { class: "alert", role: "alert", tabindex: "-1", id: "form-errors" });
    const form = h("form", { novalidate: true, id: "new-export", onsubmit: async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      // One key per submission: a retried or doubled click creates one
      // export.
      const key = form.dataset.key || (form.dataset.key = crypto.randomUUID());
      const r = await api("POST", "/v1/exports", toBody(values(form)), { "Idempotency-Key": key });
      button.disabled = false;
      if (r.ok) {
        announce("Export started");
        location.hash = "#/exports/" + encodeURIComponent(r.data.id);
        return;
      }
      if (r.status === 401) return signInView("Your session has ended; sign in again.");
      // A different body is a different request.
      delete form.dataset.key;
      showErrors(form, summary, r);
    }, oninput: () => { delete form.dataset.key; } },
      summary, fieldsets, h("button", { type: "submit" }, "Start export"));
    show(title, h("h1", {}, title), h("p", {}, intro), form);
  }

  function roomForm() {
    formView("New room export", "Exports a room's messages and files you may read.",
      [h("fieldset", {}, h("legend", {}, "Room"),
        input("room.id", "Room id", { required: true, hint: "The room's id, such as GENERAL." }),
        input("format", "Format", { options: ["json", "html", "jsonl", "csv.gz"] }),
        input("room.from", "From", { type: "date", hint: "First day to include (optional)." }),
        input("room.to", "To", { type: "date", hint: "Last day to include (optional)." }),
        input("name", "Name", { hint: "Optional; names the export." })),
      notifyFields()],
      (v) => {
        const room = { id: v["room.id"] };
        if (v["room.from"]) room.from = v["room.from"];
        if (v["room.to"]) room.to = v["room.to"];
        const body = { kind: "room", format: v.format, room };
        if (v.name) body.name = v.name;
        return withNotify(body, v);
      });
  }

  function myDataForm() {
    formView("Export my data", "Exports your own data: profile, messages and files.",
      [h("fieldset", {}, h("legend", {}, "Your data"),
        checkbox("userData.fullExport", "Full export", "JSON with every channel's messages; without it, an HTML summary."),
        input("name", "Name", { hint: "Optional; names the export." })),
      notifyFields()],
      (v) => {
        const body = { kind: "user-data", userData: { fullExport: v["userData.fullExport"] } };
        if (v.name) body.name = v.name;
        return withNotify(body, v);
      });
  }

  function recordsForm() {
    const num = (s) => (s === "" ? undefined : Number(s));
    formView("New record export", "Exports business records, such as transactions, of an organization.",
      [h("fieldset", {}, h("legend", {}, "Records"),
        input("records.resource", "Resource", { required: true, hint: "For example transactions, customers or events." }),
        input("records.organizationId", "Organization id", { hint: "Optional: defaults to your own." }),
        input("format", "Format", { options: ["csv", "json", "json-api", "xml", "pdf", "jsonl"] }),
        input("records.fields", "Fields", { hint: "Columns to export, separated by commas; empty: all." }),
        input("records.filter", "Filter", { hint: "Rebilly filter syntax, such as status:completed." }),
        input("records.sort", "Sort", { hint: "Such as -createdTime." }),
        input("records.q", "Search", { hint: "Full-text search." }),
        input("name", "Name", { hint: "Optional; names the export." })),
      h("fieldset", {}, h("legend", {}, "Date range (optional)"),
        input("records.dateRange.start", "Start", { hint: "A date, an RFC 3339 time, or a relative one such as -7 days or today." }),
        input("records.dateRange.end", "End", { hint: "Same forms as the start." }),
        input("records.dateRange.field", "Date field", { hint: "Which time the range applies to, such as createdTime." })),
      h("fieldset", {}, h("legend", {}, "Files (optional)"),
        input("records.chunking.maxRows", "Rows per file", { type: "number", min: "0", inputmode: "numeric", hint: "0 or empty: no limit." }),
        input("records.chunking.maxBytes", "Bytes per file", { type: "number", min: "0", inputmode: "numeric", hint: "0 or empty: no limit." }),
        checkbox("records.chunking.gzip", "Compress each file with gzip")),
      h("fieldset", {}, h("legend", {}, "Repeat (optional)"),
        input("recurring.instruction", "Recurrence rule", { hint: "An RRULE, such as FREQ=DAILY;BYHOUR=6." }),
        input("recurring.start", "First run", { hint: "An RFC 3339 time; empty: now." })),
      notifyFields()],
      (v) => {
        const records = { resource: v["records.resource"] };
        for (const k of ["organizationId", "filter", "sort", "q"]) {
          if (v["records." + k]) records[k] = v["records." + k];
        }
        const fields = list(v["records.fields"]);
        if (fields.length) records.fields = fields;
        const dr = {};
        for (const k of ["start", "end", "field"]) {
          if (v["records.dateRange." + k]) dr[k] = v["records.dateRange." + k];
        }
        if (Object.keys(dr).length) records.dateRange = dr;
        const maxRows = num(v["records.chunking.maxRows"]);
        const maxBytes = num(v["records.chunking.maxBytes"]);
        if (maxRows || maxBytes || v["records.chunking.gzip"]) {
          records.chunking = { gzip: v["records.chunking.gzip"] };
          if (maxRows !== undefined) records.chunking.maxRows = maxRows;
          if (maxBytes !== undefined) records.chunking.maxBytes = maxBytes;
        }
        const body = { kind: "records", format: v.format, records };
        if (v.name) body.name = v.name;
        if (v["recurring.instruction"] || v["recurring.start"]) {
          body.recurring = {};
          if (v["recurring.instruction"]) body.recurring.instruction = v["recurring.instruction"];
          if (v["recurring.start"]) body.recurring.start = v["recurring.start"];
        }
        return withNotify(body, v);
      });
  }

  // ----- routing -----

  function route() {
    if (!session) return signInView();
    const hash = currentRoute();
    const m = hash.match(/^#\/exports\/([^/]+)$/);
    if (m) return detailView(decodeURIComponent(m[1]));
    switch (hash) {
      case "#/new/room": return roomForm();
      case "#/new/my-data": return myDataForm();
      case "#/new/records": return recordsForm();
      default: return listView();
    }
  }

  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);

  (async () => {
    const r = await api("GET", "api/session");
    if (r.ok) {
      session = r.data;
      signedIn();
    }
    route();
  })();
})();
