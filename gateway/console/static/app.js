// The console's entry: configuration, signing in, and which view is shown (#/ or #/c/<id>).

import { ApiError, get, session } from "./api.js";
import { clear, el, hideError, showError } from "./dom.js";
import { ConversationList } from "./conversations.js";
import { ConversationView } from "./conversation.js";
import { AdminPanel } from "./admin.js";

const main = document.getElementById("main");
let config = { sign_in: false, xterm: false };
let who = null; // {admin: bool}
let current = null; // the view shown, with a close() method

/** Who the key belongs to: listing every conversation is for admins (200); users get 403. */
async function whoAmI() {
  try {
    await get("/conversation?limit=1");
    return { admin: true };
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return { admin: false };
    throw error;
  }
}

function signInForm(message) {
  const input = el("input", {
    type: "password", id: "key", autocomplete: "off", placeholder: "API key",
    dataset: { testid: "key-input" },
  });
  const form = el(
    "form", { class: "sign-in", onsubmit: (event) => { event.preventDefault(); signIn(input.value); } },
    el("label", { for: "key" }, "API key"), input,
    el("button", { type: "submit", dataset: { testid: "sign-in" } }, "Sign in"),
  );
  clear(main).append(form);
  if (message) showError(message);
  input.focus();
}

async function signIn(key) {
  session.key = key.trim();
  try {
    who = await whoAmI();
  } catch (error) {
    session.key = null;
    signInForm(error instanceof ApiError && error.status === 401 ? `Sign-in failed: ${error.message}` : String(error.message || error));
    return;
  }
  hideError();
  showHeader();
  route();
}

function signOut() {
  session.key = null;
  who = null;
  current?.close();
  current = null;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  signInForm();
}

function showHeader() {
  const label = !config.sign_in ? "local mode" : who.admin ? "signed in as admin" : "signed in";
  document.getElementById("who").textContent = label;
  document.getElementById("sign-out").hidden = !config.sign_in;
}

function route() {
  if (!who) return;
  current?.close();
  clear(main);
  const match = location.hash.match(/^#\/c\/([0-9a-f-]{36})$/);
  if (match) {
    current = new ConversationView(main, match[1], { xterm: config.xterm });
  } else {
    const list = new ConversationList(main, who);
    const admin = who.admin ? new AdminPanel(main) : null;
    current = { close() { list.close(); admin?.close(); } };
  }
}

async function boot() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (event) => {
    showError(event.reason?.message || String(event.reason));
  });
  config = await get("/console/config.json");
  if (config.sign_in && !session.key) {
    signInForm();
    return;
  }
  try {
    who = await whoAmI();
  } catch (error) {
    session.key = null;
    if (config.sign_in) signInForm(error.message);
    else showError(error.message);
    return;
  }
  showHeader();
  route();
}

boot();
