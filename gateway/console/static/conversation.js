// One conversation: its live event stream (WS /conversation/{id}, resumed with after_seq after a
// reconnect), a command box running Shell tasks with their output streamed, its tasks with cancel,
// its files and, where the gateway has them, a terminal.

import { ApiError, del, get, openSocket, post } from "./api.js";
import { el, showError } from "./dom.js";
import { FileBrowser } from "./files.js";
import { TerminalPanel } from "./terminal.js";

const MAX_EVENTS = 500;
const MAX_UNCLAIMED = 20;
const MAX_OUTPUT_NODES = 5000; // commands' output kept on the page (the oldest goes first)
/** Close codes after which following again is pointless: not found, not allowed, ended. */
const FINAL_CLOSES = new Set([4401, 4403, 4404, 4410]);

export class ConversationView {
  constructor(parent, id, options) {
    this.id = id;
    this.base = `/conversation/${id}`;
    this.lastSeq = 0;
    this.closed = false;
    this.retry = 500;
    this.tasks = new Map(); // task id -> row parts
    this.outputs = new Map(); // task id -> the <span> its output goes into
    this.outputNodes = 0; // text nodes in the output spans
    this.unclaimed = new Map(); // task id -> output of a task not (yet) run from this page
    this.title = el("h2", {}, id);
    this.status = el("span", { class: "status", dataset: { testid: "conversation-status" } });
    this.events = el("ol", { class: "events", dataset: { testid: "events" } });
    this.output = el("pre", { class: "output", dataset: { testid: "output" } });
    this.taskList = el("tbody", { dataset: { testid: "task-list" } });
    const command = el("input", { name: "command", placeholder: "shell command, e.g. ls -la",
      autocomplete: "off", dataset: { testid: "command-input" } });
    const form = el("form", { class: "command", onsubmit: (event) => {
      event.preventDefault();
      this.run(command.value).catch((error) => showError(`Run failed: ${error.message}`));
      command.value = "";
    } }, command, el("button", { type: "submit", dataset: { testid: "run-command" } }, "Run"));
    const files = el("section", { class: "panel" });
    const terminal = el("section", { class: "panel", hidden: true });
    parent.append(
      el("p", {}, el("a", { href: "#/" }, "← all conversations")),
      el("section", { class: "panel head" }, this.title, this.status),
      el("div", { class: "columns" },
        el("div", {},
          el("section", { class: "panel" }, el("h3", {}, "Command"), form, this.output),
          el("section", { class: "panel" }, el("h3", {}, "Tasks"),
            el("table", { class: "list" }, el("thead", {}, el("tr", {},
              ...["Title", "Status", "Exit", ""].map((h) => el("th", {}, h)))), this.taskList)),
          terminal),
        el("div", {},
          files,
          el("section", { class: "panel" }, el("h3", {}, "Events"), this.events))),
    );
    this.files = new FileBrowser(files, this.base);
    this.terminal = new TerminalPanel(terminal, this.base, options);
    this.load();
  }

  close() {
    this.closed = true;
    this.socket?.close();
    this.terminal.close();
  }

  async load() {
    try {
      const info = await get(this.base);
      this.title.textContent = info.title || info.id;
      this.setStatus(info.status, info.phase || info.reason);
    } catch (error) {
      showError(error instanceof ApiError && error.status === 404 ? "No such conversation" : error.message);
      return;
    }
    this.follow();
    this.refreshTasks();
    this.files.refresh();
  }

  setStatus(status, note) {
    this.status.textContent = note ? `${status} (${note})` : status;
    this.status.dataset.status = status;
  }

  follow() {
    if (this.closed) return;
    const socket = openSocket(`${this.base}?after_seq=${this.lastSeq}`);
    this.socket = socket;
    socket.onopen = () => { this.retry = 500; };
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      this.onEvent(event);
    };
    socket.onclose = (closing) => {
      if (this.closed) return;
      if (FINAL_CLOSES.has(closing.code)) {
        this.setStatus(closing.code === 4410 ? "ENDED" : "UNAVAILABLE", closing.reason);
        return;
      }
      setTimeout(() => this.follow(), this.retry); // resumes after the last seq seen
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  onEvent(event) {
    if (event.seq > 0) {
      if (event.seq <= this.lastSeq) return; // seen before a reconnect
      this.lastSeq = event.seq;
    }
    const detail = event.detail || {};
    this.showEvent(event);
    switch (detail.type) {
      case "ConversationStatusUpdate":
        this.setStatus(detail.status, detail.phase || detail.reason);
        break;
      case "TaskOutput":
        this.onOutput(detail.task_id, detail.data);
        break;
      case "TaskStatusUpdate":
        this.refreshTasks();
        if (detail.task_id && ["COMPLETED", "ERROR", "CANCELLED"].includes(detail.status)) this.files.refresh();
        break;
      default:
    }
  }

  showEvent(event) {
    const detail = event.detail || {};
    const { type, ...rest } = detail;
    const item = el("li", { dataset: { testid: "event", type: String(type) } },
      el("span", { class: "seq" }, String(event.seq)), " ",
      el("strong", {}, String(type)), " ",
      el("code", {}, JSON.stringify(rest)));
    this.events.append(item);
    while (this.events.childElementCount > MAX_EVENTS) this.events.firstElementChild.remove();
    item.scrollIntoView({ block: "nearest" });
  }

  onOutput(taskId, data) {
    const body = this.outputs.get(taskId);
    if (body) {
      body.append(data);
      this.outputNodes += 1;
      if (this.outputNodes > MAX_OUTPUT_NODES) this.trimOutput();
      return;
    }
    const kept = this.unclaimed.get(taskId) || [];
    kept.push(data);
    this.unclaimed.set(taskId, kept);
    if (this.unclaimed.size > MAX_UNCLAIMED) this.unclaimed.delete(this.unclaimed.keys().next().value);
  }

  trimOutput() {
    for (const span of this.output.querySelectorAll("span.out")) {
      while (span.firstChild && this.outputNodes > MAX_OUTPUT_NODES / 2) {
        span.firstChild.remove();
        this.outputNodes -= 1;
      }
    }
  }

  async run(command) {
    if (!command.trim()) return;
    const header = el("span", { class: "prompt" }, `$ ${command}\n`);
    const body = el("span", { class: "out" });
    this.output.append(header, body);
    const task = await post(`${this.base}/task`, { runnable: { type: "Shell", command }, title: command });
    // Output that arrived before the id was known (a fast command) was kept aside for it.
    const early = this.unclaimed.get(task.id) || [];
    body.append(...early);
    this.outputNodes += early.length;
    this.unclaimed.delete(task.id);
    this.outputs.set(task.id, body);
    this.refreshTasks();
  }

  async refreshTasks() {
    let answer;
    try { answer = await get(`${this.base}/task?limit=50`); } catch { return; }
    for (const task of answer.results) {
      let row = this.tasks.get(task.id);
      if (!row) {
        const cancel = el("button", { class: "danger", dataset: { testid: "cancel-task" },
          onclick: () => del(`${this.base}/task/${task.id}`).then(() => this.refreshTasks())
            .catch((error) => showError(`Cancel failed: ${error.message}`)) }, "Cancel");
        row = { status: el("td", {}), exit: el("td", {}), cancel };
        row.tr = el("tr", { dataset: { testid: "task-row" } },
          el("td", {}, task.title || task.runnable.type), row.status, row.exit, el("td", {}, cancel));
        this.tasks.set(task.id, row);
        this.taskList.prepend(row.tr);
      }
      row.status.textContent = task.status;
      row.exit.textContent = task.exit_code ?? "";
      row.cancel.hidden = !["PENDING", "RUNNING"].includes(task.status);
    }
  }
}
