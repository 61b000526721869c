// The review page: sign-in, worklist, study view (images, editor, findings, diff, history), signing.
// Report text is data: it only ever reaches the page through textContent and form values.

import { api, ApiError, forget, lastActivity, login, logout, session, SessionEnded, setSessionEndedHandler } from "./api.js";
import { diffWords, renderDiff } from "./diff.js";
import { Viewport } from "./viewer.js";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const state = {
  config: null,
  items: [],
  selected: 0,
  visited: new Set(JSON.parse(sessionStorage.getItem("radreport.visited") || "[]")),
  study: null, // the open study: {report, draft, images, viewports, sections, dirty}
  openedAt: null,
};

// ------------------------------------------------------------------ messages and formatting

let toastTimer = null;
function announce(text, kind = "info") {
  const box = $("announcer");
  box.textContent = text;
  box.dataset.kind = kind;
  box.classList.add("visible");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("visible"), 5000);
}

function age(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function when(iso) {
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function priorityLabel(p) {
  if (p >= 20) return "STAT";
  if (p >= 10) return "Urgent";
  if (p > 0) return "High";
  return "Routine";
}

function message(text, kind = "ok") {
  const box = $("save-message");
  box.textContent = text;
  box.dataset.kind = kind;
}

function errorText(error) {
  if (error instanceof ApiError) return `${error.message}${error.code ? ` (${error.code})` : ""}`;
  return `The page could not reach the server (${error.message}). Check the connection and try again.`;
}

function guard(action) {
  return (...args) => Promise.resolve(action(...args)).catch((error) => {
    if (error instanceof SessionEnded) return;
    announce(errorText(error), "error");
  });
}

// ------------------------------------------------------------------ session

function showView(name) {
  for (const view of ["login", "worklist", "study"]) $(`${view}-view`).hidden = view !== name;
  $("session-box").hidden = name === "login";
  document.body.dataset.view = name;
}

function sessionEnded(message) {
  closeDialogs();
  state.study = null;
  showView("login");
  $("login-message").textContent = message;
  $("login-user").focus();
}
setSessionEndedHandler(sessionEnded);

function renderSession() {
  const current = session();
  if (!current) return;
  $("who").textContent = `${current.user} · ${current.role}`;
  const idleLeft = current.idleS - (Date.now() - lastActivity()) / 1000;
  const hardLeft = (new Date(current.expiresAt).getTime() - Date.now()) / 1000;
  const left = Math.min(idleLeft, hardLeft);
  const expiry = $("expiry");
  expiry.textContent = left > 0 ? `session ends in ${age(left)} without activity` : "session ended";
  expiry.classList.toggle("warn", left < 120);
  if (left <= 0) {
    forget();
    sessionEnded("Your session expired. Please sign in again.");
  }
}
setInterval(renderSession, 5000);

async function onLogin(event) {
  event.preventDefault();
  const user = $("login-user").value.trim();
  const password = $("login-password").value;
  if (!user || !password) {
    $("login-message").textContent = "Enter your user name and password.";
    return;
  }
  try {
    const current = await login(user, password);
    if (current.role !== "radiologist" && current.role !== "admin") {
      await logout();
      $("login-message").textContent = `The account ${user} has role ${current.role}; the review page is for radiologists.`;
      return;
    }
  } catch (error) {
    $("login-message").textContent = error instanceof ApiError && error.status === 401
      ? "Unknown user name or wrong password." : errorText(error);
    return;
  }
  $("login-password").value = "";
  $("login-message").textContent = "";
  await start();
}

async function onSignOut() {
  if (state.study && state.study.dirty && !confirm("You have unsaved changes. Sign out anyway?")) return;
  await logout();
  sessionEnded("You are signed out.");
}

// ------------------------------------------------------------------ worklist

function worklistParams() {
  const params = new URLSearchParams();
  const status = $("filter-status").value;
  if (status) params.append("status", status);
  const assignee = $("filter-assignee").value;
  if (assignee) params.set("assignee", assignee);
  const priority = $("filter-priority").value;
  if (priority !== "") params.set("min_priority", priority);
  params.set("sort", $("filter-sort").value || "priority");
  params.set("limit", "200");
  return params;
}

async function loadWorklist() {
  const page = await api.worklist(worklistParams());
  state.items = page.items;
  state.selected = Math.min(state.selected, Math.max(0, page.items.length - 1));
  renderWorklist(page);
}

function renderWorklist(page) {
  const me = session()?.user;
  const unreadCount = state.items.filter((i) => !state.visited.has(i.report_id)).length;
  const mine = state.items.filter((i) => i.claimed_by === me).length;
  $("worklist-caption").textContent = `${page.total} report${page.total === 1 ? "" : "s"} · ${unreadCount} unread · ${mine} claimed by you`;
  const rows = state.items.map((item, index) => {
    const unread = !state.visited.has(item.report_id);
    const open = el("a", { href: `#/study/${encodeURIComponent(item.report_id)}`, class: "study-link",
      onclick: () => { state.openedAt = performance.now(); } }, `Study …${item.study_uid.slice(-12)}`);
    const canClaim = item.status === "preliminary" && !item.claimed_by;
    const claim = canClaim ? el("button", { type: "button", class: "small", "aria-label": `Claim study …${item.study_uid.slice(-12)}`,
      onclick: guard(async () => { await api.claim(item.report_id); announce("Claimed."); await loadWorklist(); }) }, "Claim") : null;
    return el("tr", {
      class: [unread ? "unread" : "", index === state.selected ? "selected" : "", item.claimed_by === me ? "mine" : ""].join(" ").trim(),
      "data-report-id": item.report_id, "aria-selected": String(index === state.selected),
      onclick: (event) => { if (event.target.tagName !== "BUTTON" && event.target.tagName !== "A") { state.selected = index; renderWorklist(page); } },
    },
    el("td", {}, el("span", { class: `priority p-${priorityLabel(item.priority).toLowerCase()}` }, `${priorityLabel(item.priority)} (${item.priority})`),
      item.triage && item.triage.length ? el("span", { class: "triage", title: "Triage: the AI draft reports these findings" }, ` ⚑ ${item.triage.join(", ")}`) : null),
    el("td", {}, el("span", { class: `badge s-${item.status}` }, item.status), " ", el("span", { class: "muted" }, item.study_state.replace("_", " "))),
    el("td", { "data-seconds": String(item.age_s) }, age(item.age_s)),
    el("td", {}, item.claimed_by ? item.claimed_by : el("span", { class: "muted" }, "unassigned")),
    el("td", {}, open, unread ? el("span", { class: "dot", title: "unread" }, el("span", { class: "sr-only" }, " (unread)")) : null),
    el("td", {}, `v${item.version}`),
    el("td", { class: "mono" }, item.bundle_id),
    el("td", {}, claim));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "8", class: "empty" }, "Nothing matches these filters.")));
  $("worklist-body").replaceChildren(...rows);
}

function nextUnread() {
  const item = state.items.find((i) => !state.visited.has(i.report_id) && i.status === "preliminary"
    && (!i.claimed_by || i.claimed_by === session()?.user));
  if (!item) {
    announce("No unread study is waiting.");
    return;
  }
  state.openedAt = performance.now();
  location.hash = `#/study/${encodeURIComponent(item.report_id)}`;
}

async function showWorklist() {
  showView("worklist");
  $("crumb-study").textContent = "";
  await loadWorklist();
  document.title = "Worklist · radreport";
}

// ------------------------------------------------------------------ study view

function splitSections(text, sections) {
  // Preamble plus one part per header; joining header + lead + body + tail gives the text back exactly.
  const parts = [];
  const first = sections.length ? sections[0].header_start : text.length;
  const pre = text.slice(0, first);
  if (pre.trim() || !sections.length) parts.push(part("report", "", pre));
  for (const s of sections) parts.push(part(s.name, text.slice(s.header_start, s.body_start), text.slice(s.body_start, s.end)));
  if (!parts.length) parts.push(part("report", "", ""));
  return parts;
}

function part(name, header, raw) {
  const lead = raw.match(/^\s*/)[0];
  const rest = raw.slice(lead.length);
  const tail = rest.match(/\s*$/)[0];
  return { name, header, lead, body: rest.slice(0, rest.length - tail.length), tail };
}

function currentText() {
  const study = state.study;
  return study.parts.map((p, i) => p.header + p.lead + study.inputs[i].value + p.tail).join("");
}

function sectionTitle(name) {
  return name === "report" ? "Report text" : name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function renderEditor(text, sections) {
  const study = state.study;
  study.parts = splitSections(text, sections);
  const form = $("editor");
  const editable = canEdit();
  study.inputs = study.parts.map((p, i) => {
    const id = `section-${i}-${p.name}`;
    const area = el("textarea", { id, name: p.name, rows: String(Math.min(12, Math.max(3, Math.ceil(p.body.length / 48)))),
      spellcheck: "true", readonly: editable ? null : true, "aria-describedby": editable ? null : "editor-readonly" });
    area.value = p.body;
    area.addEventListener("input", onEdit);
    return area;
  });
  form.replaceChildren(...study.parts.map((p, i) => el("div", { class: "section" },
    el("label", { for: study.inputs[i].id }, sectionTitle(p.name)), study.inputs[i])));
  if (!editable) {
    form.append(el("p", { id: "editor-readonly", class: "hint" }, readOnlyReason()));
  }
}

function canEdit() {
  const report = state.study.report;
  return report.status === "preliminary" && report.claimed_by === session()?.user;
}

function readOnlyReason() {
  const report = state.study.report;
  if (report.status !== "preliminary") return `Read only: the report is ${report.status}.`;
  if (report.claimed_by) return `Read only: ${report.claimed_by} is reviewing this study.`;
  return "Read only until you claim the study.";
}

let analyseTimer = null;
function onEdit() {
  const study = state.study;
  study.dirty = currentText() !== study.report.current.text;
  message(study.dirty ? "Unsaved changes." : "", "warn");
  $("save-button").classList.toggle("attention", study.dirty);
  clearTimeout(analyseTimer);
  analyseTimer = setTimeout(guard(analyse), 300);
}

async function analyse() {
  const study = state.study;
  if (!study) return;
  const text = currentText();
  const result = await api.findings(text);
  if (state.study !== study || currentText() !== text) return;
  renderFindings(text, result);
  const counts = renderDiff($("diff-text"), study.report.draft.text, text);
  $("diff-summary").textContent = counts.added || counts.removed
    ? `${counts.added} word${counts.added === 1 ? "" : "s"} added, ${counts.removed} removed` : "unchanged";
}

function renderFindings(text, result) {
  const box = $("findings-text");
  const nodes = [];
  let at = 0;
  const entities = [...result.entities].sort((a, b) => a.start - b.start);
  for (const e of entities) {
    if (e.start < at) continue;
    if (e.start > at) nodes.push(document.createTextNode(text.slice(at, e.start)));
    const title = e.certainty === "anatomy" ? "anatomy"
      : `${e.certainty}${e.anatomy.length ? ` · at ${e.anatomy.join(", ")}` : ""}`;
    nodes.push(el("mark", { class: `f-${e.certainty}`, title, "data-certainty": e.certainty }, text.slice(e.start, e.end)));
    at = e.end;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  box.replaceChildren(...nodes);
  // One line per observation: its modifiers ("modify" relations) folded in, with the anatomy it is at.
  const byId = new Map(entities.map((e) => [e.id, e]));
  const modifiers = new Map();
  for (const e of entities) {
    for (const [relation, target] of e.relations) {
      if (relation === "modify" && byId.has(target)) modifiers.set(target, [...(modifiers.get(target) || []), e]);
    }
  }
  const heads = entities.filter((e) => e.certainty !== "anatomy" && e.certainty !== "other"
    && !e.relations.some(([relation, target]) => relation === "modify" && byId.has(target)));
  const list = heads.map((e) => {
    const words = [...(modifiers.get(e.id) || []).filter((m) => m.certainty !== "anatomy").map((m) => m.text), e.text];
    return el("li", { class: `f-${e.certainty}` },
      el("span", { class: "chip" }, e.certainty), " ", el("strong", {}, words.join(" ")),
      e.anatomy.length ? el("span", { class: "muted" }, ` · ${e.anatomy.join(", ")}`) : null);
  });
  if (!list.length) list.push(el("li", { class: "muted" }, "No findings extracted from this text."));
  $("findings-list").replaceChildren(...list);
}

async function openStudy(reportId) {
  if (state.study && state.study.dirty && state.study.report.report_id !== reportId
      && !confirm("You have unsaved changes. Leave this study without saving?")) {
    location.hash = `#/study/${encodeURIComponent(state.study.report.report_id)}`;
    return;
  }
  const started = state.openedAt ?? performance.now();
  state.openedAt = null;
  showView("study");
  document.body.dataset.studyReady = "false";
  document.body.dataset.studyReport = reportId;
  const report = await api.report(reportId);
  if (document.body.dataset.studyReport !== reportId) return; // another study was opened meanwhile
  const study = { report, dirty: false, parts: [], inputs: [], viewports: [] };
  state.study = study;
  state.visited.add(reportId);
  sessionStorage.setItem("radreport.visited", JSON.stringify([...state.visited]));
  $("crumb-study").textContent = ` / Study …${report.study_uid.slice(-12)}`;
  $("study-title").textContent = `Study …${report.study_uid.slice(-12)}`;
  document.title = `Study …${report.study_uid.slice(-12)} · radreport`;
  selectTab("findings");
  renderStudyHeader();
  const [images, analysis] = await Promise.all([api.images(report.study_id), api.findings(report.current.text)]);
  if (state.study !== study) return;
  renderEditor(report.current.text, analysis.sections);
  renderFindings(report.current.text, analysis);
  const counts = renderDiff($("diff-text"), report.draft.text, report.current.text);
  $("diff-summary").textContent = counts.added || counts.removed ? `${counts.added} words added, ${counts.removed} removed` : "unchanged";
  let shown = 0;
  const wanted = Math.min(1, images.images.length);
  const done = () => {
    if (state.study !== study) return;
    shown += 1;
    if (shown === wanted) {
      const ms = performance.now() - started;
      document.body.dataset.studyShownMs = ms.toFixed(0);
      document.body.dataset.studyReady = "true";
    }
  };
  study.viewports = pickViews(images.images).map(({ image, label }) =>
    new Viewport({ studyId: report.study_id, image, label, presets: state.config.presets, onShown: done }));
  $("viewports").replaceChildren(...study.viewports.map((v) => v.root));
  if (!study.viewports.length) {
    $("viewports").append(el("p", { class: "empty" }, "This study has no decoded images."));
    document.body.dataset.studyReady = "true";
  }
  await Promise.all(study.viewports.map((v) => v.load()));
}

function pickViews(images) {
  const frontal = images.find((i) => i.selected) || images.find((i) => i.frontal) || images[0];
  const lateral = images.find((i) => i !== frontal && !i.frontal) || images.find((i) => i !== frontal);
  const out = [];
  if (frontal) out.push({ image: frontal, label: frontal.frontal ? `Frontal (${frontal.view})` : `Image (${frontal.view || "unknown view"})` });
  if (lateral) out.push({ image: lateral, label: lateral.frontal ? `Frontal (${lateral.view})` : `Lateral (${lateral.view || "unknown view"})` });
  return out;
}

function renderStudyHeader() {
  const report = state.study.report;
  const me = session()?.user;
  const badge = $("report-status");
  badge.textContent = report.status;
  badge.className = `badge s-${report.status}`;
  const triage = report.triage || [];
  $("triage-info").hidden = !triage.length;
  $("triage-info").textContent = triage.length ? `⚑ Triage: ${triage.join(", ")}` : "";
  $("triage-info").title = "The AI draft reports these findings (TRIAGE_FINDINGS); read the images.";
  $("version-label").textContent = `version ${report.current.version} · by ${report.current.author}`;
  const signature = report.signatures[report.signatures.length - 1];
  $("claim-info").textContent = signature
    ? `signed by ${signature.signer} · ${when(signature.signed_at)} · ${signature.meaning}`
    : report.claimed_by ? `claimed by ${report.claimed_by}` : "unassigned";
  const open = report.status === "preliminary";
  $("claim-button").hidden = !(open && !report.claimed_by);
  $("release-button").hidden = !(open && report.claimed_by === me);
  $("save-button").disabled = !(open && report.claimed_by === me);
  $("sign-button").disabled = !(open && report.claimed_by === me);
  const index = state.items.findIndex((i) => i.report_id === report.report_id);
  $("prev-button").disabled = index <= 0;
  $("next-button").disabled = index < 0 || index >= state.items.length - 1;
}

async function refreshReport(report) {
  const study = state.study;
  study.report = report;
  study.dirty = false;
  renderStudyHeader();
  const analysis = await api.findings(report.current.text);
  renderEditor(report.current.text, analysis.sections);
  renderFindings(report.current.text, analysis);
  const counts = renderDiff($("diff-text"), report.draft.text, report.current.text);
  $("diff-summary").textContent = counts.added || counts.removed ? `${counts.added} words added, ${counts.removed} removed` : "unchanged";
  $("save-button").classList.remove("attention");
  if (!$("pane-history").hidden) await loadHistory();
}

async function claim() {
  const report = await api.claim(state.study.report.report_id);
  await refreshReport(report);
  announce("Claimed: you can edit this report.");
  state.study.inputs[0]?.focus();
}

async function release() {
  if (state.study.dirty && !confirm("Release without saving your changes?")) return;
  const report = await api.release(state.study.report.report_id);
  await refreshReport(report);
  announce("Released: the study is back on the worklist.");
}

async function save() {
  const study = state.study;
  if (!study || !canEdit()) {
    announce(study ? readOnlyReason() : "Open a study first.");
    return false;
  }
  if (!study.dirty) {
    message(`Nothing to save: version ${study.report.current.version} is current.`);
    return true;
  }
  const text = currentText();
  try {
    const report = await api.save(study.report.report_id, text, study.report.current.version);
    await refreshReport(report);
    message(`Saved as version ${report.current.version}.`);
    announce(`Saved as version ${report.current.version}.`);
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.code === "version_conflict" && error.body.current) {
      message(`Not saved: version ${error.body.current.version} was saved meanwhile by ${error.body.current.author}. Compare and merge in the dialog.`, "warn");
      openMerge(text, error.body.current);
      return false;
    }
    message(`Not saved: ${errorText(error)}`, "warn");
    throw error;
  }
}

// ------------------------------------------------------------------ merge on conflict

function openMerge(mine, current) {
  const dialog = $("merge-dialog");
  dialog.dataset.version = String(current.version);
  $("merge-explain").textContent = `Your edit was based on version ${state.study.report.current.version}, but ${current.author} saved version ${current.version} at ${when(current.created_at)}. Nothing was overwritten. Compare, merge, then save.`;
  $("merge-theirs").textContent = current.text;
  renderDiff($("merge-diff"), current.text, mine);
  $("merge-mine").value = mine;
  state.study.conflict = current;
  dialog.showModal();
  $("merge-mine").focus();
}

async function saveMerged(event) {
  event.preventDefault();
  const study = state.study;
  const current = study.conflict;
  const text = $("merge-mine").value;
  try {
    const report = await api.save(study.report.report_id, text, current.version);
    $("merge-dialog").close();
    await refreshReport(report);
    message(`Merged and saved as version ${report.current.version}.`);
    announce(`Merged and saved as version ${report.current.version}.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.body.current) {
      $("merge-dialog").close();
      openMerge(text, error.body.current);
      return;
    }
    throw error;
  }
}

async function takeTheirs() {
  $("merge-dialog").close();
  const report = await api.report(state.study.report.report_id);
  await refreshReport(report);
  message(`Your changes were discarded; showing version ${report.current.version}.`, "warn");
}

// ------------------------------------------------------------------ signing

async function openSign() {
  const study = state.study;
  if (!study || !canEdit()) {
    announce(study ? readOnlyReason() : "Open a study first.");
    return;
  }
  if (study.dirty && !(await save())) return;
  const report = study.report;
  $("sign-summary").textContent = `You are signing version ${report.current.version} of study …${report.study_uid.slice(-12)} (text SHA-256 ${report.current.content_sha256.slice(0, 16)}…). The text is the one shown in the editor.`;
  $("sign-meanings").replaceChildren(...state.config.meanings.map((m, i) => el("div", { class: "radio" },
    el("input", { type: "radio", name: "meaning", id: `meaning-${m.value}`, value: m.value, checked: m.value === "approval" || (i === 0 && !state.config.meanings.some((x) => x.value === "approval")) }),
    el("label", { for: `meaning-${m.value}` }, el("strong", {}, m.value), ` — ${m.text}`))));
  $("sign-password").value = "";
  $("sign-message").textContent = "";
  $("sign-dialog").showModal();
  $("sign-password").focus();
}

async function confirmSign(event) {
  event.preventDefault();
  const study = state.study;
  const password = $("sign-password").value;
  const meaning = document.querySelector("input[name=meaning]:checked")?.value;
  if (!password) {
    $("sign-message").textContent = "Re-enter your password to sign.";
    return;
  }
  $("sign-confirm").disabled = true;
  try {
    const report = await api.sign(study.report.report_id, password, meaning, study.report.current.version);
    $("sign-dialog").close();
    await refreshReport(report);
    const signature = report.signatures[report.signatures.length - 1];
    message(`Signed by ${signature.signer} at ${when(signature.signed_at)} (${signature.meaning}): the report is final.`);
    announce("Signed. The report is final.");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      $("sign-message").textContent = "The password is not correct. Nothing was signed.";
    } else if (error instanceof ApiError && error.status === 409 && error.body.current) {
      $("sign-message").textContent = `Not signed: version ${error.body.current.version} was saved meanwhile. Close this, review it, and sign again.`;
    } else if (!(error instanceof SessionEnded)) {
      $("sign-message").textContent = errorText(error);
    }
  } finally {
    $("sign-confirm").disabled = false;
  }
}

// ------------------------------------------------------------------ history

const TABS = ["findings", "history", "priors"];

function selectTab(name) {
  for (const tab of TABS) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`tab-${tab}`).tabIndex = selected ? 0 : -1;
    $(`pane-${tab}`).hidden = !selected;
  }
}

async function showHistory() {
  selectTab("history");
  await loadHistory();
}

async function showPriors() {
  selectTab("priors");
  const study = state.study;
  const priors = await api.priors(study.report.report_id);
  if (state.study !== study) return;
  const date = (d) => (d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : "date unknown");
  $("priors-summary").textContent = priors.items.length
    ? `${priors.items.length} earlier ${priors.items.length === 1 ? "study" : "studies"} of this patient, newest first.`
    : "No earlier studies of this patient here.";
  $("priors-list").replaceChildren(...priors.items.map((p) => el("li", { "data-report-id": p.report_id },
    el("div", { class: "version-head" }, el("strong", {}, date(p.study_date)),
      el("span", { class: `badge s-${p.status}` }, p.status),
      p.signed_by ? ` signed by ${p.signed_by} · ${when(p.signed_at)}` : " not signed",
      el("a", { href: `#/study/${encodeURIComponent(p.report_id)}` }, `Open study …${p.study_uid.slice(-12)}`)),
    el("pre", { class: "prior-text" }, p.text))));
}

async function loadHistory() {
  const history = await api.history(state.study.report.report_id);
  $("history-versions").replaceChildren(...history.versions.map((v) => {
    const diff = el("pre", { class: "unified" });
    for (const line of (v.diff || "").split("\n")) {
      if (!line) continue;
      const kind = line.startsWith("+++") || line.startsWith("---") ? "meta" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : "ctx";
      diff.append(el("span", { class: `l-${kind}` }, `${line}\n`));
    }
    return el("li", { "data-version": String(v.version) },
      el("div", { class: "version-head" }, el("strong", {}, `Version ${v.version}`), ` · ${v.author} · ${when(v.created_at)}`,
        v.signed ? el("span", { class: "badge s-final" }, "signed") : null),
      v.diff ? diff : el("p", { class: "muted" }, "The AI draft (never changed)."));
  }));
  $("history-events").replaceChildren(...history.events.map((e) => el("tr", {},
    el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action),
    el("td", {}, e.version === null || e.version === undefined ? "" : String(e.version)),
    el("td", {}, e.to_state ? `${e.from_state || "–"} → ${e.to_state}` : ""))));
}

// ------------------------------------------------------------------ navigation and keys

function shownReportId() {
  // The address, not state.study: a study still loading after Alt+N is the one to step from.
  const match = location.hash.match(/^#\/study\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : state.study?.report.report_id;
}

function step(offset) {
  const current = shownReportId();
  if (!current) return;
  const index = state.items.findIndex((i) => i.report_id === current);
  const next = state.items[index + offset];
  if (index < 0 || !next) {
    announce(offset > 0 ? "This is the last study of the worklist." : "This is the first study of the worklist.");
    return;
  }
  state.openedAt = performance.now();
  location.hash = `#/study/${encodeURIComponent(next.report_id)}`;
}

function closeDialogs() {
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
}

function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
}

function onKey(event) {
  const view = document.body.dataset.view;
  if (view === "login" || document.querySelector("dialog[open]")) return;
  const key = event.key.toLowerCase();
  const run = (action) => { event.preventDefault(); guard(action)(); };
  if ((event.ctrlKey || event.metaKey) && key === "s" && view === "study") return run(event.shiftKey ? openSign : save);
  if (event.altKey && key === "n" && view === "study") return run(() => step(1));
  if (event.altKey && key === "p" && view === "study") return run(() => step(-1));
  if (event.altKey && key === "h" && view === "study") return run(showHistory);
  if (event.altKey && key === "r" && view === "study") return run(showPriors);
  if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
  if (event.key === "?") return run(() => $("help-dialog").showModal());
  if (view === "study" && event.key === "Escape") return run(() => { location.hash = "#/worklist"; });
  if (view !== "worklist") return;
  if (key === "n") return run(nextUnread);
  if (key === "r") return run(loadWorklist);
  if (key === "j" || key === "arrowdown" || key === "k" || key === "arrowup") {
    const delta = key === "j" || key === "arrowdown" ? 1 : -1;
    state.selected = Math.min(state.items.length - 1, Math.max(0, state.selected + delta));
    return run(() => {
      renderWorklist({ total: state.items.length });
      document.querySelector("#worklist-body tr.selected a")?.focus();
    });
  }
  const item = state.items[state.selected];
  if (!item) return;
  if (key === "enter" && event.target.tagName !== "A" && event.target.tagName !== "BUTTON") {
    return run(() => { state.openedAt = performance.now(); location.hash = `#/study/${encodeURIComponent(item.report_id)}`; });
  }
  if (key === "c" && item.status === "preliminary" && !item.claimed_by) {
    return run(async () => { await api.claim(item.report_id); announce("Claimed."); await loadWorklist(); });
  }
}

async function route() {
  if (!session()) {
    sessionEnded("");
    return;
  }
  closeDialogs();
  const match = location.hash.match(/^#\/study\/(.+)$/);
  if (match) {
    if (!state.items.length) await loadWorklist().catch(() => {});
    await openStudy(decodeURIComponent(match[1]));
  } else {
    await showWorklist();
  }
}

async function start() {
  state.config = await api.config();
  if (!$("filter-status").options.length) {
    $("filter-status").replaceChildren(el("option", { value: "" }, "Open (preliminary)"),
      ...state.config.statuses.map((s) => el("option", { value: s }, s)));
    const sortNames = { priority: "Priority, then oldest", age: "Oldest first", updated: "Recently updated",
      status: "Status", assignee: "Unclaimed first" };
    $("filter-sort").replaceChildren(...state.config.sorts.map((s) => el("option", { value: s }, sortNames[s] || s)));
  }
  renderSession();
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/worklist";
  else await route();
  $("main").focus({ preventScroll: true });
}

function wire() {
  $("login-form").addEventListener("submit", guard(onLogin));
  $("signout-button").addEventListener("click", guard(onSignOut));
  $("help-button").addEventListener("click", () => $("help-dialog").showModal());
  for (const id of ["filter-status", "filter-assignee", "filter-sort", "filter-priority"]) {
    $(id).addEventListener("change", guard(loadWorklist));
  }
  $("refresh-button").addEventListener("click", guard(loadWorklist));
  $("next-unread-button").addEventListener("click", guard(nextUnread));
  $("back-button").addEventListener("click", () => { location.hash = "#/worklist"; });
  $("prev-button").addEventListener("click", guard(() => step(-1)));
  $("next-button").addEventListener("click", guard(() => step(1)));
  $("claim-button").addEventListener("click", guard(claim));
  $("release-button").addEventListener("click", guard(release));
  $("save-button").addEventListener("click", guard(save));
  $("sign-button").addEventListener("click", guard(openSign));
  $("sign-form").addEventListener("submit", guard(confirmSign));
  $("sign-cancel").addEventListener("click", () => $("sign-dialog").close());
  $("merge-form").addEventListener("submit", guard(saveMerged));
  $("merge-cancel").addEventListener("click", () => $("merge-dialog").close());
  $("merge-theirs-button").addEventListener("click", guard(takeTheirs));
  $("tab-findings").addEventListener("click", () => selectTab("findings"));
  $("tab-history").addEventListener("click", guard(showHistory));
  $("tab-priors").addEventListener("click", guard(showPriors));
  const show = { findings: () => selectTab("findings"), history: showHistory, priors: showPriors };
  for (const [index, tab] of TABS.entries()) {
    $(`tab-${tab}`).addEventListener("keydown", (event) => {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const other = TABS[(index + (event.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
        guard(show[other])();
        $(`tab-${other}`).focus();
      }
    });
  }
  $("merge-mine").addEventListener("input", () => renderDiff($("merge-diff"), $("merge-theirs").textContent, $("merge-mine").value));
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", guard(route));
  window.addEventListener("beforeunload", (event) => {
    if (state.study && state.study.dirty) event.preventDefault();
  });
}

wire();
if (session()) guard(start)();
else sessionEnded("");

export { diffWords };
