// The list of conversations: all of them for an admin (GET /conversation, live through the
// firehose), for a user the ones made in this browser session (GET /conversation/{id} each:
// users may not list). Create (title, template, limits, internet) and delete.

import { ApiError, del, get, openSocket, post } from "./api.js";
import { el, showError } from "./dom.js";

const MINE = "convoy.mine";
const POLL_MS = 3000;

function remembered() {
  try { return JSON.parse(sessionStorage.getItem(MINE) || "[]"); } catch { return []; }
}

function remember(ids) {
  sessionStorage.setItem(MINE, JSON.stringify([...new Set(ids)]));
}

function number(input, scale = 1) {
  const value = input.value.trim();
  return value === "" ? undefined : Number(value) * scale;
}

export class ConversationList {
  constructor(parent, who) {
    this.who = who;
    this.rows = new Map(); // id -> {row, status}
    this.closed = false;
    this.table = el("tbody", { dataset: { testid: "conversation-list" } });
    this.templates = el("select", { name: "template", hidden: true }, el("option", { value: "" }, "default"));
    parent.append(
      el("section", { class: "panel" }, el("h2", {}, "New conversation"), this.form()),
      el("section", { class: "panel" },
        el("h2", {}, who.admin ? "All conversations" : "Your conversations"),
        el("table", { class: "list" },
          el("thead", {}, el("tr", {}, ...["Title", "Status", "Owner", "Created", ""].map((h) => el("th", {}, h)))),
          this.table)),
    );
    this.loadTemplates();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), who.admin ? POLL_MS * 3 : POLL_MS);
    if (who.admin) this.followFirehose();
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    this.firehose?.close();
  }

  form() {
    const title = el("input", { name: "title", placeholder: "title", maxlength: 200 });
    const memory = el("input", { name: "memory", type: "number", min: 6, placeholder: "memory MiB" });
    const cpus = el("input", { name: "cpus", type: "number", step: "0.1", min: 0.1, placeholder: "CPUs" });
    const pids = el("input", { name: "pids", type: "number", min: 16, placeholder: "PIDs" });
    const internet = el("input", { name: "internet", type: "checkbox" });
    const submit = async (event) => {
      event.preventDefault();
      const body = { title: title.value, internet: internet.checked, limits: {} };
      const limits = { memory_bytes: number(memory, 1024 * 1024), cpus: number(cpus), pids: number(pids) };
      for (const [name, value] of Object.entries(limits)) if (value !== undefined) body.limits[name] = value;
      if (this.templates.value) body.template = this.templates.value;
      try {
        const made = await post("/conversation", body);
        remember([...remembered(), made.id]);
        title.value = "";
        this.show(made);
      } catch (error) {
        showError(`Create failed: ${error.message}`);
      }
    };
    return el("form", { class: "create", onsubmit: submit },
      title, this.templates, memory, cpus, pids,
      el("label", {}, internet, " internet"),
      el("button", { type: "submit", dataset: { testid: "new-conversation" } }, "Create"));
  }

  /** Templates, where the gateway has them (GET /template); the choice is hidden otherwise. */
  async loadTemplates() {
    let answer;
    try { answer = await get("/template"); } catch { return; }
    const items = Array.isArray(answer) ? answer : answer?.results || [];
    for (const item of items) {
      const name = typeof item === "string" ? item : item.name || item.id;
      if (name) this.templates.append(el("option", { value: name }, name));
    }
    this.templates.hidden = items.length === 0;
  }

  async refresh() {
    try {
      const found = this.who.admin ? await this.listAll() : await this.listMine();
      if (this.closed) return;
      const ids = new Set(found.map((c) => c.id));
      for (const [id, entry] of this.rows) if (!ids.has(id)) { entry.row.remove(); this.rows.delete(id); }
      for (const conversation of found) this.show(conversation);
    } catch (error) {
      showError(`Listing failed: ${error.message}`);
    }
  }

  async listAll() {
    const all = [];
    let page = null;
    do {
      const query = page ? `?limit=100&page_id=${encodeURIComponent(page)}` : "?limit=100";
      const answer = await get(`/conversation${query}`);
      all.push(...answer.results);
      page = answer.next_page_id;
    } while (page && all.length < 1000);
    return all;
  }

  async listMine() {
    const found = [];
    for (const id of remembered()) {
      try {
        found.push(await get(`/conversation/${id}`));
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
    }
    remember(found.map((c) => c.id));
    return found;
  }

  show(conversation) {
    let entry = this.rows.get(conversation.id);
    if (!entry) {
      const status = el("td", { class: "status" });
      const open = el("a", { href: `#/c/${conversation.id}` }, conversation.title || conversation.id.slice(0, 8));
      const remove = el("button", { class: "danger", dataset: { testid: "delete-conversation" },
        onclick: () => this.remove(conversation.id) }, "Delete");
      const row = el("tr", { dataset: { testid: "conversation-row", id: conversation.id } },
        el("td", {}, open), status, el("td", {}, conversation.owner),
        el("td", {}, new Date(conversation.created_at).toLocaleString()), el("td", {}, remove));
      entry = { row, status };
      this.rows.set(conversation.id, entry);
      this.table.prepend(row);
    }
    this.setStatus(conversation.id, conversation.status, conversation.phase || conversation.reason);
  }

  setStatus(id, status, note) {
    const entry = this.rows.get(id);
    if (!entry) return;
    entry.status.textContent = note ? `${status} (${note})` : status;
    entry.status.dataset.status = status;
  }

  async remove(id) {
    try {
      await del(`/conversation/${id}`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        showError(`Delete failed: ${error.message}`);
        return;
      }
    }
    this.rows.get(id)?.row.remove();
    this.rows.delete(id);
    remember(remembered().filter((other) => other !== id));
  }

  /** Live status for admins: every ConversationStatusUpdate of every conversation. */
  followFirehose() {
    if (this.closed) return;
    const socket = openSocket("/firehose/");
    this.firehose = socket;
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      const detail = event.detail || {};
      if (detail.type !== "ConversationStatusUpdate") return;
      if (this.rows.has(detail.conversation_id)) {
        this.setStatus(detail.conversation_id, detail.status, detail.phase || detail.reason);
      } else {
        this.refresh();
      }
    };
    socket.onclose = () => {
      if (!this.closed) setTimeout(() => this.followFirehose(), POLL_MS);
    };
  }
}

