// A terminal of the conversation, where the gateway has terminals: POST terminal {cols, rows}
// -> {id}; WS terminal/{id}?offset=N carries the PTY's bytes both ways (binary frames) and
// JSON text frames ({"type": "resize", cols, rows} in; "skipped" and "exit" out); after a
// reconnect it resumes at the byte offset reached, so nothing is lost or drawn twice.
// Drawn by xterm.js when the gateway serves it (/console/vendor/xterm/, linked from Debian's
// node-xterm), sized to fill its box (the PTY is told by a resize frame); otherwise as plain
// text (escape sequences dropped) in a <pre> that takes the keyboard.

import { ApiError, get, openSocket, request } from "./api.js";
import { el, showError } from "./dom.js";

const COLS = 100;
const ROWS = 30;
const MAX_TEXT = 200000;
// Normal end, bad key, not yours, no such terminal or conversation, bad offset: retrying cannot help.
const FINAL_CLOSES = new Set([1000, 1008, 4401, 4403, 4404, 4410]);
// CSI, OSC, charset selection and two-byte escapes: what a plain text view cannot draw.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78cDEHM]/g;
const KEYS = {
  Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
  ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~",
};

let xtermLoading = null;

/** Loads xterm.js once; resolves to its Terminal class, or null when it cannot be used. */
function loadXterm() {
  xtermLoading ??= new Promise((resolve) => {
    document.head.append(el("link", { rel: "stylesheet", href: "/console/vendor/xterm/xterm.css" }));
    const script = el("script", { src: "/console/vendor/xterm/xterm.js" });
    // xterm.js 3 sets window.Terminal to the class; its later UMD builds to {Terminal}.
    script.addEventListener("load", () => {
      const found = window.Terminal;
      resolve(typeof found === "function" ? found : typeof found?.Terminal === "function" ? found.Terminal : null);
    });
    script.addEventListener("error", () => resolve(null));
    document.head.append(script);
  });
  return xtermLoading;
}

class TextScreen {
  constructor(parent, send) {
    this.text = "";
    this.decoder = new TextDecoder();
    this.node = el("pre", { class: "terminal", tabindex: 0, dataset: { testid: "terminal" } });
    this.node.addEventListener("keydown", (event) => {
      const data = KEYS[event.key] ?? (event.ctrlKey && /^[a-z]$/i.test(event.key)
        ? String.fromCharCode(event.key.toLowerCase().charCodeAt(0) - 96)
        : event.key.length === 1 && !event.metaKey && !event.ctrlKey ? event.key : null);
      if (data === null) return;
      event.preventDefault();
      send(data);
    });
    this.node.addEventListener("paste", (event) => {
      event.preventDefault();
      send(event.clipboardData.getData("text"));
    });
    parent.append(this.node);
  }

  write(bytes) {
    const chunk = this.decoder.decode(bytes, { stream: true }).replace(ESCAPES, "").replace(/[\r\x07]/g, "");
    for (const char of chunk) {
      if (char === "\b") this.text = this.text.slice(0, -1);
      else this.text += char;
    }
    if (this.text.length > MAX_TEXT) this.text = this.text.slice(-MAX_TEXT);
    this.node.textContent = this.text;
    this.node.scrollTop = this.node.scrollHeight;
  }

  get size() { return { cols: COLS, rows: ROWS }; }

  notice(text) { this.write(new TextEncoder().encode(`\n[${text}]\n`)); }

  focus() { this.node.focus(); }

  close() {}
}

class XtermScreen {
  /** resized(cols, rows) is called whenever the grid changes to fit the box. */
  constructor(parent, Terminal, send, resized) {
    this.node = el("div", { class: "xterm-host", dataset: { testid: "terminal" } });
    parent.append(this.node);
    this.decoder = new TextDecoder();
    this.resized = resized;
    // The DOM renderer keeps the text in the page's rows: selectable, and readable by tests.
    this.term = new Terminal({ cols: COLS, rows: ROWS, rendererType: "dom", scrollback: 5000 });
    this.term.open(this.node);
    if (typeof this.term.onData === "function") this.term.onData(send);
    else this.term.on("data", send);
    this.fit();
    this.observer = new ResizeObserver(() => this.fit());
    this.observer.observe(this.node);
  }

  /** As many cols and rows as fill the box: its size over the size of one cell as drawn
   * (the screen's size over the grid's), less the viewport's scroll bar. */
  fit() {
    const screen = this.node.querySelector(".xterm-screen");
    const viewport = this.node.querySelector(".xterm-viewport");
    const drawn = screen?.getBoundingClientRect();
    if (!drawn?.width || !drawn?.height) return;
    const cellWidth = drawn.width / this.term.cols;
    const cellHeight = drawn.height / this.term.rows;
    const scrollBar = viewport ? viewport.offsetWidth - viewport.clientWidth : 0;
    const cols = Math.max(2, Math.min(1000, Math.floor((this.node.clientWidth - scrollBar) / cellWidth)));
    const rows = Math.max(1, Math.min(1000, Math.floor(this.node.clientHeight / cellHeight)));
    if (cols === this.term.cols && rows === this.term.rows) return;
    this.term.resize(cols, rows);
    this.resized(cols, rows);
  }

  get size() { return { cols: this.term.cols, rows: this.term.rows }; }

  // xterm.js 3 writes strings only; a character split across frames waits for its end.
  write(bytes) { this.term.write(this.decoder.decode(bytes, { stream: true })); }

  notice(text) { this.term.write(`\r\n[${text}]\r\n`); }

  focus() { this.term.focus(); }

  close() {
    this.observer.disconnect();
    this.term.dispose?.();
  }
}

export class TerminalPanel {
  constructor(panel, base, { xterm }) {
    this.panel = panel;
    this.base = base;
    this.useXterm = xterm;
    this.closed = false;
    this.offset = 0;
    this.encoder = new TextEncoder();
    this.button = el("button", { dataset: { testid: "open-terminal" }, onclick: () => this.open() }, "Open a terminal");
    this.screenHost = el("div", {});
    panel.append(el("h3", {}, "Terminal"), this.button, this.screenHost);
    this.probe();
  }

  /** Shown only where the gateway has terminal routes (a 404 here means none at all). */
  async probe() {
    try {
      await get(`${this.base}/terminal`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return;
    }
    this.panel.hidden = false;
  }

  async open() {
    let made;
    try {
      made = await request("POST", `${this.base}/terminal`, { json: { cols: COLS, rows: ROWS } });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) this.panel.hidden = true;
      else showError(`Terminal: ${error.message}`);
      return;
    }
    this.button.hidden = true;
    this.ptySize = { cols: COLS, rows: ROWS }; // what the PTY was last told
    const Terminal = this.useXterm ? await loadXterm() : null;
    const send = (data) => this.send(data);
    this.screen = Terminal
      ? new XtermScreen(this.screenHost, Terminal, send, () => this.tellSize())
      : new TextScreen(this.screenHost, send);
    this.path = `${this.base}/terminal/${made.id}`;
    this.connect();
    this.screen.focus();
  }

  connect() {
    if (this.closed) return;
    const socket = openSocket(`${this.path}?offset=${this.offset}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => this.tellSize();
    socket.onmessage = (message) => {
      if (typeof message.data === "string") this.control(message.data);
      else {
        this.offset += message.data.byteLength;
        this.screen.write(message.data);
      }
    };
    socket.onclose = (closing) => {
      if (this.closed || FINAL_CLOSES.has(closing.code)) return;
      setTimeout(() => this.connect(), 1000);
    };
  }

  /** Text frames: "skipped" (older output is gone; the bytes that follow start at its offset),
   * "exit" (the program ended; the server then closes). */
  control(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    if (frame?.type === "skipped" && Number.isInteger(frame.offset)) {
      this.screen.notice(`${frame.offset - frame.requested} bytes of older output are no longer kept`);
      this.offset = frame.offset;
    } else if (frame?.type === "exit") {
      this.screen.notice(`exited${frame.exit_code === null ? "" : ` with ${frame.exit_code}`}`);
    }
  }

  /** Sends a resize frame when the screen's grid differs from what the PTY was told. */
  tellSize() {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    const { cols, rows } = this.screen.size;
    if (cols === this.ptySize.cols && rows === this.ptySize.rows) return;
    this.socket.send(JSON.stringify({ type: "resize", cols, rows }));
    this.ptySize = { cols, rows };
  }

  send(data) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(this.encoder.encode(data));
  }

  close() {
    this.closed = true;
    this.socket?.close();
    this.screen?.close();
  }
}
